"""Metrics: per-sample functions and their aggregates (rewards call the same per-sample functions).

Every aggregate is registered in :data:`affectllm.registry.METRICS` and carries ``higher_is_better``. Label inputs
are lists of free-text labels (already parsed); the emotion-wheel metrics map them through a taxonomy (the built-in
one, or the MER tables via ``taxonomy=get_taxonomy(wheel_dir, table)``). Definitions: ``docs/taxonomy.md``.

>>> round(ew_scores([["joyful"], ["sad", "angry"]], [["happy"], ["sad"]])["f"], 4)
0.8571
>>> au_f1([["AU6", "AU12"]], [["AU6"]])["micro"]
0.6667
>>> expected_calibration_error([0.9, 0.6], [True, False], n_bins=2)
0.25
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from affectllm.registry import METRICS
from affectllm.taxonomy import Taxonomy, default_taxonomy
from affectllm.taxonomy.facs import normalize_au

Labels = Sequence[str]


def _metric(name: str, higher_is_better: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.higher_is_better = higher_is_better  # type: ignore[attr-defined]
        METRICS.register(name, fn)
        return fn

    return wrap


def _clusters(labels: Labels, tax: Taxonomy, level: str) -> list[tuple[str | None, ...]]:
    """Per-label cluster tuples (one entry per wheel; :meth:`Taxonomy.normalize_all` caches them)."""
    return [tax.normalize_all(x, level) for x in labels]


def ew_sample(
    pred: Labels, gold: Labels, taxonomy: Taxonomy | None = None, level: str = "level1"
) -> list[tuple[float, float] | None]:
    """Per-wheel ``(precision_i, recall_i)`` of one sample; None for a wheel where the gold set maps to nothing.

    An empty normalised prediction scores (0, 0). Sets collapse duplicates and synonyms (EW_METRIC.md).
    """
    tax = taxonomy or default_taxonomy()
    g_rows, p_rows = _clusters(gold, tax, level), _clusters(pred, tax, level)
    out: list[tuple[float, float] | None] = []
    for k in range(len(tax.wheels)):
        g = {row[k] for row in g_rows}
        g.discard(None)
        if not g:
            out.append(None)
            continue
        p = {row[k] for row in p_rows}
        p.discard(None)
        hit = len(g & p)
        out.append((hit / len(p), hit / len(g)) if p else (0.0, 0.0))
    return out


def _f(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def ew_sample_f(pred: Labels, gold: Labels, taxonomy: Taxonomy | None = None, level: str = "level1") -> float | None:
    """Per-sample EW F: mean over the wheels where the gold set maps to something of ``2PR/(P+R)``; None if none.

    >>> round(ew_sample_f(["joyful", "scared"], ["happy"]), 4), ew_sample_f(["happy"], ["neutral"])
    (0.6667, 0.0)
    >>> ew_sample_f(["happy"], ["xyz"]) is None
    True
    """
    per_wheel = [_f(p, r) for pr in ew_sample(pred, gold, taxonomy, level) if pr is not None for p, r in [pr]]
    return sum(per_wheel) / len(per_wheel) if per_wheel else None


def is_correct(
    pred: Labels, gold: Labels, taxonomy: Taxonomy | None = None, level: str = "level1", threshold: float = 0.5
) -> bool | None:
    """The one definition of a correct answer (calibration reward, post-hoc fit, ECE/Brier/AUROC): per-sample EW F
    (:func:`ew_sample_f`) of the answered labels vs the gold labels ≥ ``threshold``; None when the gold set maps to
    nothing (the sample cannot be judged).

    >>> is_correct(["joyful"], ["happy"]), is_correct(["sad"], ["happy"]), is_correct(["happy"], ["xyz"])
    (True, False, None)
    """
    f = ew_sample_f(pred, gold, taxonomy, level)
    return None if f is None else f >= threshold


def ew_scores(
    preds: Sequence[Labels],
    golds: Sequence[Labels],
    taxonomy: Taxonomy | None = None,
    level: str = "level1",
) -> dict[str, Any]:
    """Emotion-wheel Fs / Precision_s / Recall_s exactly as MER-UniBench computes them (0..1, not ×100).

    Per wheel, precision and recall are averaged over the samples whose gold set maps to something; F_k comes
    from those averages (0 when both are 0 or no sample counts); the reported values are means over wheels.

    Returns:
        ``{"f", "precision", "recall", "n", "per_wheel": {wheel: {"f", "precision", "recall", "n"}}}``.
    """
    if len(preds) != len(golds):
        raise ValueError(f"{len(preds)} predictions vs {len(golds)} gold rows")
    tax = taxonomy or default_taxonomy()
    n_wheels = len(tax.wheels)
    sums = [[0.0, 0.0, 0] for _ in range(n_wheels)]
    for pred, gold in zip(preds, golds, strict=True):
        for k, pr in enumerate(ew_sample(pred, gold, tax, level)):
            if pr is not None:
                sums[k][0] += pr[0]
                sums[k][1] += pr[1]
                sums[k][2] += 1
    per_wheel = {}
    for wheel, (p_sum, r_sum, n) in zip(tax.wheel_names, sums, strict=True):
        p, r = (p_sum / n, r_sum / n) if n else (0.0, 0.0)
        per_wheel[wheel] = {"f": _f(p, r), "precision": p, "recall": r, "n": n}
    mean = {key: sum(v[key] for v in per_wheel.values()) / n_wheels for key in ("f", "precision", "recall")}
    return {**mean, "n": len(golds), "per_wheel": per_wheel, "level": level, "taxonomy": tax.name}


@_metric("ew_level1", higher_is_better=True)
def ew_level1(preds: Sequence[Labels], golds: Sequence[Labels], taxonomy: Taxonomy | None = None) -> float:
    """Fs at level 1 (the headline MER-UniBench number)."""
    return ew_scores(preds, golds, taxonomy, "level1")["f"]


@_metric("ew_level2", higher_is_better=True)
def ew_level2(preds: Sequence[Labels], golds: Sequence[Labels], taxonomy: Taxonomy | None = None) -> float:
    """Fs at level 2."""
    return ew_scores(preds, golds, taxonomy, "level2")["f"]


def hit_sample(pred: Labels, gold: str, taxonomy: Taxonomy | None = None) -> list[float | None]:
    """Per wheel at level 1: 1.0 if the gold label's cluster is among the predicted clusters; None if it maps to
    nothing on that wheel (``neutral`` on the MER tables)."""
    tax = taxonomy or default_taxonomy()
    g_row = tax.normalize_all(gold, "level1")
    p_rows = _clusters(pred, tax, "level1")
    return [None if g is None else float(any(row[k] == g for row in p_rows)) for k, g in enumerate(g_row)]


@_metric("hit_rate", higher_is_better=True)
def hit_rate(preds: Sequence[Labels], golds: Sequence[str], taxonomy: Taxonomy | None = None) -> float:
    """HIT rate for basic-emotion sets: mean over wheels of the per-wheel mean hit (skipped samples excluded)."""
    tax = taxonomy or default_taxonomy()
    per_wheel: list[list[float]] = [[] for _ in tax.wheels]
    for pred, gold in zip(preds, golds, strict=True):
        for k, hit in enumerate(hit_sample(pred, gold, tax)):
            if hit is not None:
                per_wheel[k].append(hit)
    means = [sum(v) / len(v) if v else 0.0 for v in per_wheel]
    return sum(means) / len(means)


@_metric("accuracy", higher_is_better=True)
def accuracy(preds: Sequence[Any], golds: Sequence[Any]) -> float:
    """Share of exact matches (single-label classification); 0.0 for no samples. Also WAR."""
    pairs = list(zip(preds, golds, strict=True))
    return sum(p == g for p, g in pairs) / len(pairs) if pairs else 0.0


def _per_class(preds: Sequence[Any], golds: Sequence[Any]) -> dict[Any, tuple[int, int, int]]:
    """class -> (true positives, predicted count, gold count)."""
    tp, n_pred, n_gold = Counter(), Counter(preds), Counter(golds)
    for p, g in zip(preds, golds, strict=True):
        tp[g] += p == g
    return {c: (tp[c], n_pred[c], n_gold[c]) for c in set(n_gold) | set(n_pred)}


@_metric("weighted_f1", higher_is_better=True)
def weighted_f1(preds: Sequence[Any], golds: Sequence[Any]) -> float:
    """F1 per gold class, weighted by gold support (scikit-learn's ``average="weighted"``)."""
    stats = _per_class(preds, golds)
    total = sum(s[2] for s in stats.values())
    score = 0.0
    for tp, n_pred, n_gold in stats.values():
        if n_gold:
            score += n_gold * _f(tp / n_pred if n_pred else 0.0, tp / n_gold)
    return score / total if total else 0.0


@_metric("uar", higher_is_better=True)
def uar(preds: Sequence[Any], golds: Sequence[Any]) -> float:
    """Unweighted average recall: mean per-class recall over the gold classes."""
    recalls = [tp / n_gold for tp, _, n_gold in _per_class(preds, golds).values() if n_gold]
    return sum(recalls) / len(recalls) if recalls else 0.0


@_metric("war", higher_is_better=True)
def war(preds: Sequence[Any], golds: Sequence[Any]) -> float:
    """Weighted average recall (= accuracy)."""
    return accuracy(preds, golds)


def _au_set(aus: Labels) -> set[str]:
    return {a for a in (normalize_au(x) for x in aus) if a}


def au_counts(pred: Labels, gold: Labels) -> tuple[int, int, int]:
    """``(true positives, false positives, false negatives)`` of one sample's AU sets (codes normalised): the
    micro AU-F1 of a set of samples is ``2 tp / (2 tp + fp + fn)`` over their sums.

    >>> au_counts(["AU04", "AU12"], ["AU4", "AU6"])
    (1, 1, 1)
    """
    p, g = _au_set(pred), _au_set(gold)
    return len(p & g), len(p - g), len(g - p)


def au_f1_sample(pred: Labels, gold: Labels) -> float | None:
    """F1 of one sample's AU sets (codes normalised: ``AU04`` == ``AU4``); None without gold AUs."""
    g, p = _au_set(gold), _au_set(pred)
    if not g:
        return None
    hit = len(g & p)
    return _f(hit / len(p), hit / len(g)) if p else 0.0


@_metric("au_f1", higher_is_better=True)
def au_f1(preds: Sequence[Labels], golds: Sequence[Labels]) -> dict[str, Any]:
    """Per-AU F1 over samples (each AU a binary task), their macro mean, and the micro F1 (pooled counts).

    Returns:
        ``{"macro", "micro", "per_au": {"AU6": f1, ...}}`` over the AUs seen in gold or predictions, 4 decimals.
    """
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    for pred, gold in zip(preds, golds, strict=True):
        p, g = _au_set(pred), _au_set(gold)
        tp.update(p & g)
        fp.update(p - g)
        fn.update(g - p)
    aus = sorted(set(tp) | set(fp) | set(fn), key=lambda a: int(a[2:]))
    per_au = {a: round(2 * tp[a] / (2 * tp[a] + fp[a] + fn[a]), 4) for a in aus}
    denom = 2 * sum(tp.values()) + sum(fp.values()) + sum(fn.values())
    micro = 2 * sum(tp.values()) / denom if denom else 0.0
    macro = sum(per_au.values()) / len(per_au) if per_au else 0.0
    return {"macro": round(macro, 4), "micro": round(micro, 4), "per_au": per_au}


def _check_conf(confidences: Sequence[float], correct: Sequence[bool]) -> list[tuple[float, float]]:
    pairs = [(float(c), float(bool(y))) for c, y in zip(confidences, correct, strict=True)]
    if any(not 0.0 <= c <= 1.0 for c, _ in pairs):
        raise ValueError("confidences must lie in [0, 1]")
    return pairs


def reliability_diagram(confidences: Sequence[float], correct: Sequence[bool], n_bins: int = 10) -> list[dict]:
    """Equal-width bins over [0, 1], right edge included (``(lo, hi]``; the first bin also takes 0).

    Returns:
        One dict per bin: ``lo``, ``hi``, ``count``, ``confidence`` (mean), ``accuracy`` (None when empty).
    """
    bins: list[list[tuple[float, float]]] = [[] for _ in range(n_bins)]
    for c, y in _check_conf(confidences, correct):
        # round() first: 0.3 * 10 is 3.0000000000000004, which must stay in the bin (0.2, 0.3].
        bins[max(0, math.ceil(round(c * n_bins, 9)) - 1)].append((c, y))
    return [
        {
            "lo": i / n_bins,
            "hi": (i + 1) / n_bins,
            "count": len(b),
            "confidence": sum(c for c, _ in b) / len(b) if b else None,
            "accuracy": sum(y for _, y in b) / len(b) if b else None,
        }
        for i, b in enumerate(bins)
    ]


@_metric("ece", higher_is_better=False)
def expected_calibration_error(confidences: Sequence[float], correct: Sequence[bool], n_bins: int = 10) -> float:
    """ECE: support-weighted mean |accuracy − confidence| over equal-width bins (right edge included)."""
    bins = reliability_diagram(confidences, correct, n_bins)
    total = sum(b["count"] for b in bins)
    gap = sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"])
    return round(gap / total, 6) if total else 0.0


@_metric("brier", higher_is_better=False)
def brier(confidences: Sequence[float], correct: Sequence[bool]) -> float:
    """Mean squared error between confidence and correctness (0 best, 1 worst)."""
    pairs = _check_conf(confidences, correct)
    return sum((c - y) ** 2 for c, y in pairs) / len(pairs) if pairs else 0.0


@_metric("auroc", higher_is_better=True)
def auroc(confidences: Sequence[float], correct: Sequence[bool]) -> float | None:
    """Probability that a correct answer has higher confidence than a wrong one (ties count ½); None if one class
    is missing."""
    pairs = _check_conf(confidences, correct)
    pos = sorted(c for c, y in pairs if y)
    neg = sorted(c for c, y in pairs if not y)
    if not pos or not neg:
        return None
    ranks: dict[float, float] = {}
    ordered = sorted(c for c, _ in pairs)
    i = 0
    while i < len(ordered):
        j = i
        while j < len(ordered) and ordered[j] == ordered[i]:
            j += 1
        ranks[ordered[i]] = (i + j + 1) / 2  # mean 1-based rank of a tie group
        i = j
    rank_sum = sum(ranks[c] for c in pos)
    return (rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def selective_curve(confidences: Sequence[float], correct: Sequence[bool]) -> list[dict[str, float]]:
    """Accuracy when answering only the most confident ones: ``{"coverage", "accuracy", "threshold"}`` per cut
    (cuts between distinct confidences, most confident first)."""
    pairs = sorted(_check_conf(confidences, correct), key=lambda p: -p[0])
    out, hits = [], 0.0
    for i, (c, y) in enumerate(pairs, 1):
        hits += y
        if i == len(pairs) or pairs[i][0] != c:
            out.append({"coverage": i / len(pairs), "accuracy": hits / i, "threshold": c})
    return out


@_metric("selective_auc", higher_is_better=True)
def selective_auc(confidences: Sequence[float], correct: Sequence[bool]) -> float:
    """Area under the selective accuracy/coverage curve (step-wise; 1.0 when every answer is right)."""
    curve = selective_curve(confidences, correct)
    area, last = 0.0, 0.0
    for point in curve:
        area += (point["coverage"] - last) * point["accuracy"]
        last = point["coverage"]
    return area
