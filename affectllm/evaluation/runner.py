"""Score a model on clips: generate, parse each completion once, and compute EW-F, HIT, AU-F1 and calibration.

"Correct" is :func:`affectllm.metrics.is_correct` with the taxonomy, level and threshold of the recipe's
``calibration`` reward (:meth:`Correctness.from_recipe`), so the post-hoc fit and ECE/Brier/AUROC measure what the
reward optimises. The confidence of a sample is :func:`affectllm.parsing.stated_confidence` (a plain number next to a
readable answer), the rule the reward uses; a completion without one (missing, a word, a percentage, no answer)
counts as confidence 0 here, the model having stated none, while the reward scores it below every valid answer so
that hiding the confidence never pays in training. The share of such completions is reported as ``no_confidence``.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import Recipe
from ..data.prompts import QUESTIONS
from ..inputs.collate import build_prompt_inputs
from ..inputs.store import ClipStore
from ..jsonl import write_jsonl, write_text
from ..metrics import au_f1, auroc, brier, ew_scores, expected_calibration_error, hit_rate, is_correct
from ..parsing import gold_labels, parse_completion, stated_confidence
from ..rewards import make_reward
from ..rewards.common import resolve_taxonomy
from ..taxonomy import Taxonomy, default_taxonomy
from ..types import Clip, Prediction


@dataclass(frozen=True)
class Correctness:
    """How an answer is judged correct: per-sample EW F on ``taxonomy`` at ``level`` ≥ ``threshold``."""

    taxonomy: Taxonomy | None = None
    level: str = "level1"
    threshold: float = 0.5

    @classmethod
    def from_recipe(cls, recipe: Recipe) -> Correctness:
        """The judgement of the recipe's ``calibration`` reward (its options as bound; the defaults without one)."""
        spec = next((r for r in recipe.rewards if r.name == "calibration"), None)
        if spec is None:
            return cls()
        bound = inspect.signature(make_reward(spec.name, **spec.kwargs)).parameters
        option = {name: bound[name].default for name in ("taxonomy", "wheel_dir", "table", "level", "threshold")}
        taxonomy = resolve_taxonomy(option["taxonomy"], option["wheel_dir"], option["table"])
        return cls(taxonomy, option["level"], float(option["threshold"]))

    def __call__(self, labels: Sequence[str], gold: Sequence[str]) -> bool | None:
        """:func:`~affectllm.metrics.is_correct` of answered ``labels`` vs ``gold`` (None: cannot be judged)."""
        return is_correct(labels, gold, self.taxonomy, self.level, self.threshold)


@torch.no_grad()
def generate_completions(model: Any, processor: Any, clips: Sequence[Clip], store: ClipStore,
                         question: str = QUESTIONS["describe"], batch_size: int = 8, max_new_tokens: int = 96,
                         do_sample: bool = False) -> list[str]:
    """Greedy (default) completions for ``clips``, batched; the model is put in eval mode. Frozen towers read the
    store's cached features when :meth:`ClipStore.features_for` accepted this model (the same outputs, without
    running the towers)."""
    model.eval()
    allowed = model.config.enabled_modalities()
    out: list[str] = []
    for start in range(0, len(clips), batch_size):
        chunk = list(clips[start:start + batch_size])
        inputs = build_prompt_inputs(processor, store, chunk, [question] * len(chunk), allowed,
                                     model=model).inputs.to(model.device)
        ids = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=do_sample)
        out += processor.batch_decode(ids[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    return out


def predict(model: Any, processor: Any, clips: Sequence[Clip], store: ClipStore, **generate_kwargs: Any
            ) -> list[Prediction]:
    """:func:`generate_completions`, each parsed once (``Prediction.raw`` keeps the text)."""
    return [parse_completion(t) for t in generate_completions(model, processor, clips, store, **generate_kwargs)]


def _reads_evidence(conf_map: Any) -> bool:
    """Whether a confidence map reads the evidence (any object with ``apply`` counts as a map of the stated)."""
    return bool(getattr(conf_map, "reads_evidence", False))


def confidence_pairs(preds: Sequence[Prediction], clips: Sequence[Clip], correctness: Correctness = Correctness(),
                     conf_map: Any = None, evidence: Sequence[float] | None = None) -> tuple[list[float], list[bool]]:
    """(stated confidence, correct) per clip that can be judged; a completion without a usable confidence counts 0.

    ``evidence`` (per clip, from :class:`~affectllm.evaluation.evidence.Evidence`) takes the stated number's
    place. With ``conf_map`` (a :class:`~affectllm.evaluation.posthoc.ConfidenceMap`) the confidences are mapped
    first; a map that reads the evidence (``conf_map.reads_evidence``) needs it, one of the stated number refuses it.

    Raises:
        ValueError: the map and ``evidence`` disagree on what the confidence is.
    """
    reads_evidence = evidence is not None
    if conf_map is not None and _reads_evidence(conf_map) != reads_evidence:
        raise ValueError("this confidence map reads the stated number, not evidence" if reads_evidence else
                         "this confidence map reads the answers' evidence (evidence.json): pass evidence=")
    conf, correct = [], []
    for i, (pred, clip) in enumerate(zip(preds, clips, strict=True)):
        right, c = correctness(pred.labels, gold_labels(clip)), stated_confidence(pred)
        if right is None:
            continue
        c = 0.0 if c is None else c
        if reads_evidence:
            c = evidence[i]  # type: ignore[index]
        conf.append(conf_map.apply(c) if conf_map is not None else c)
        correct.append(right)
    return conf, correct


def calibration_metrics(conf: Sequence[float], correct: Sequence[bool]) -> dict[str, Any]:
    """ECE (10 equal-width bins), Brier and AUROC of confidence vs correctness (None without samples)."""
    if not conf:
        return {"ece": None, "brier": None, "auroc": None}
    return {"ece": expected_calibration_error(conf, correct), "brier": brier(conf, correct),
            "auroc": auroc(conf, correct)}


def score(preds: Sequence[Prediction], clips: Sequence[Clip], correctness: Correctness = Correctness(),
          conf_map: Any = None, evidence: Sequence[float] | None = None) -> dict[str, Any]:
    """Metrics of parsed completions against the clips' gold (labels, primary emotion, AUs), on the taxonomy of
    ``correctness``; ``no_confidence`` is the share of judgeable clips whose completion states no usable one.
    With ``conf_map`` the ``*_posthoc`` metrics are those of the mapped confidence (of ``evidence`` when the map
    reads it, see :func:`confidence_pairs`)."""
    tax = correctness.taxonomy or default_taxonomy()
    golds = [gold_labels(c) for c in clips]
    with_emotion = [(p.labels, c.emotion) for p, c in zip(preds, clips, strict=True) if c.emotion]
    au_pairs = [(p.aus, c.aus) for p, c in zip(preds, clips, strict=True) if c.aus]
    judged = [p for p, g in zip(preds, golds, strict=True) if correctness(p.labels, g) is not None]
    result: dict[str, Any] = {
        "n": len(clips),
        "ew_f": ew_scores([p.labels for p in preds], golds, tax)["f"],
        "hit": hit_rate([a for a, _ in with_emotion], [b for _, b in with_emotion], tax) if with_emotion else None,
        "au_f1": au_f1([a for a, _ in au_pairs], [b for _, b in au_pairs])["micro"] if au_pairs else None,
        "format_ok": sum(p.format_ok for p in preds) / max(len(preds), 1),
        "mean_labels": sum(len(p.labels) for p in preds) / max(len(preds), 1),
        "no_confidence": sum(stated_confidence(p) is None for p in judged) / len(judged) if judged else None,
        **calibration_metrics(*confidence_pairs(preds, clips, correctness)),
    }
    if conf_map is not None:
        mapped = calibration_metrics(*confidence_pairs(preds, clips, correctness, conf_map,
                                                       evidence if _reads_evidence(conf_map) else None))
        result.update({f"{k}_posthoc": v for k, v in mapped.items()})
    return result


def evaluate(model: Any, processor: Any, clips: Sequence[Clip], store: ClipStore, out: Path | None = None,
             conf_map: Any = None, correctness: Correctness = Correctness(), **generate_kwargs: Any
             ) -> dict[str, Any]:
    """Generate + score; with ``out``, write ``predictions.jsonl`` (label-output rows) and ``eval.json``."""
    preds = predict(model, processor, clips, store, **generate_kwargs)
    result = score(preds, clips, correctness, conf_map)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_jsonl(({"id": clip.id, "labels": p.labels, "confidence": p.confidence, "explanation": p.think,
                      "aus": p.aus, "raw": p.raw, "error": None if p.format_ok else "; ".join(p.errors)}
                     for clip, p in zip(clips, preds, strict=True)), out / "predictions.jsonl")
        write_text(out / "eval.json", json.dumps(result, indent=2))
    return result
