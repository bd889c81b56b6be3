"""``[ew]`` emotion-wheel F per sample and ``[label]`` single-label match.

A completion cut at the length limit inside ``<answer>`` has no labels (the parser drops them), so it scores 0.0,
the value of a completion without an answer (not None: the row stays in its group and its low reward counts).

>>> cols = {"labels": [["happy"]] * 4, "emotion": [None] * 4}
>>> ew_reward(["<answer>joyful, scared</answer>", "<answer>happy</answer>", "garbage", "<answer>happy, jo"], **cols)
[0.6667, 1.0, 0.0, 0.0]
>>> ew_reward(["<answer>happy</answer>"], labels=[["xyzzy"]], emotion=[None])  # maps to nothing: None; else [0, 1]
[None]
>>> label_reward(["<answer>Joyful</answer>", "<answer>joyful</answer>"], emotion=["happy", "happy"], labels=[[], []])
[1.0, 1.0]
>>> label_reward(["<answer>joyful</answer>"], emotion=["happy"], labels=[[]], mode="exact")  # range {0, 1}
[0.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from affectllm.metrics import ew_sample_f
from affectllm.parsing import clean_label
from affectllm.rewards.common import column, gold_column, parse_all, resolve_taxonomy, reward
from affectllm.taxonomy import Taxonomy

LABEL_MODES = ("normalised", "exact")


@reward("ew", columns=("labels", "emotion"))
def ew_reward(
    completions: Sequence[Any],
    *,
    labels: Sequence[list[str]] | None = None,
    emotion: Sequence[str | None] | None = None,
    level: str = "level1",
    taxonomy: Taxonomy | None = None,
    wheel_dir: str | None = None,
    table: str = "mer2026",
    **kwargs: Any,
) -> list[float | None]:
    """Per-sample EW F of the ``<answer>`` labels vs the gold labels, averaged over wheels (rounded to 4 places).

    Args:
        completions: strings or conversational message lists.
        labels: gold column: label lists (``emotion`` is used where a row has none).
        emotion: gold column for single-label rows.
        level: ``"level1"`` or ``"level2"``.
        taxonomy: a loaded taxonomy; else the built-in one, or the MER tables when ``wheel_dir`` is set.
        wheel_dir: folder of the MER tables; ``table`` picks ``"mer2026"`` or ``"mer2025"`` word forms.

    Returns:
        Values in [0, 1]; None where the gold set maps to nothing on every wheel.

    Raises:
        ValueError: the ``labels``/``emotion`` columns missing or of the wrong length.
    """
    tax = resolve_taxonomy(taxonomy, wheel_dir, table)
    golds = gold_column(labels, emotion, len(completions), "ew")
    out: list[float | None] = []
    for pred, gold in zip(parse_all(completions), golds, strict=True):
        score = ew_sample_f(pred.labels, gold, tax, level)
        out.append(None if score is None else round(score, 4))
    return out


@reward("label", columns=("emotion", "labels"))
def label_reward(
    completions: Sequence[Any],
    *,
    emotion: Sequence[str | None] | None = None,
    labels: Sequence[list[str]] | None = None,
    mode: str = "normalised",
    wheel: str | None = None,
    level: str = "level1",
    taxonomy: Taxonomy | None = None,
    wheel_dir: str | None = None,
    table: str = "mer2026",
    **kwargs: Any,
) -> list[float | None]:
    """1.0 when the first answered label matches the single gold label, else 0.0; None without a gold label.

    ``exact`` compares cleaned strings (lower-case, trimmed); ``normalised`` compares wheel clusters (``wheel``,
    default the first wheel, at ``level``), falling back to the cleaned strings where either side maps to nothing.
    Only the first label counts, so listing many labels does not help.
    """
    if mode not in LABEL_MODES:
        raise ValueError(f"mode must be one of {LABEL_MODES}, got {mode!r}")
    tax = resolve_taxonomy(taxonomy, wheel_dir, table) if mode == "normalised" else None
    n = len(completions)
    out: list[float | None] = []
    rows = zip(parse_all(completions), column(emotion, n, "label", "emotion"), column(labels, n, "label", "labels"),
               strict=True)
    for pred, single, multi in rows:
        gold = single or (multi[0] if multi else None)  # the primary label, else the first of the labels
        if not gold:
            out.append(None)
            continue
        if not pred.labels:
            out.append(0.0)
            continue
        p, g = clean_label(pred.labels[0]), clean_label(gold)
        if tax is not None:
            p_c, g_c = tax.normalize(p, wheel, level), tax.normalize(g, wheel, level)
            if p_c is not None and g_c is not None:
                p, g = p_c, g_c
        out.append(float(p == g))
    return out
