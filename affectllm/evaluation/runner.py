"""Score a model on clips: generate, parse with the one parser, and compute EW-F, HIT, AU-F1 and calibration."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..data.prompts import QUESTIONS
from ..inputs.collate import build_prompt_inputs
from ..inputs.store import ClipStore
from ..metrics import au_f1, auroc, brier, ew_sample_f, ew_scores, expected_calibration_error, hit_rate
from ..parsing import parse_completion
from ..types import Clip


@torch.no_grad()
def generate_completions(model: Any, processor: Any, clips: Sequence[Clip], store: ClipStore,
                         question: str = QUESTIONS["describe"], batch_size: int = 8, max_new_tokens: int = 96,
                         do_sample: bool = False) -> list[str]:
    """Greedy (default) completions for ``clips``, batched; the model is put in eval mode."""
    model.eval()
    allowed = model.config.enabled_modalities()
    out: list[str] = []
    for start in range(0, len(clips), batch_size):
        chunk = list(clips[start:start + batch_size])
        inputs = build_prompt_inputs(processor, store, chunk, [question] * len(chunk), allowed).inputs.to(model.device)
        ids = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=do_sample)
        out += processor.batch_decode(ids[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    return out


def confidence_pairs(completions: Sequence[str], clips: Sequence[Clip], threshold: float = 0.5,
                     conf_map: Any = None) -> tuple[list[float], list[bool]]:
    """(stated confidence, correct) per scorable clip; correct = EW F >= threshold; a missing confidence counts 0.

    With ``conf_map`` (a :class:`~affectllm.evaluation.posthoc.ConfidenceMap`) the confidences are mapped first.
    """
    conf, correct = [], []
    for text, clip in zip(completions, clips):
        pred = parse_completion(text)
        gold = list(clip.labels or ([clip.emotion] if clip.emotion else []))
        f = ew_sample_f(pred.labels, gold)
        if f is None:
            continue
        c = pred.confidence if pred.confidence is not None else 0.0
        conf.append(conf_map.apply(c) if conf_map is not None else c)
        correct.append(f >= threshold)
    return conf, correct


def calibration_metrics(conf: Sequence[float], correct: Sequence[bool]) -> dict[str, Any]:
    """ECE (10 equal-width bins), Brier and AUROC of confidence vs correctness (None without samples)."""
    if not conf:
        return {"ece": None, "brier": None, "auroc": None}
    return {"ece": expected_calibration_error(conf, correct), "brier": brier(conf, correct),
            "auroc": auroc(conf, correct)}


def score(completions: Sequence[str], clips: Sequence[Clip], threshold: float = 0.5,
          conf_map: Any = None) -> dict[str, Any]:
    """Metrics of completions against the clips' gold (labels, primary emotion, AUs)."""
    preds = [parse_completion(c) for c in completions]
    golds = [list(c.labels or ([c.emotion] if c.emotion else [])) for c in clips]
    ew = ew_scores([p.labels for p in preds], golds)
    with_emotion = [(p.labels, c.emotion) for p, c in zip(preds, clips) if c.emotion]
    au_pairs = [(p.aus, c.aus) for p, c in zip(preds, clips) if c.aus]
    result: dict[str, Any] = {
        "n": len(clips),
        "ew_f": ew["f"],
        "hit": hit_rate([a for a, _ in with_emotion], [b for _, b in with_emotion]) if with_emotion else None,
        "au_f1": au_f1([a for a, _ in au_pairs], [b for _, b in au_pairs])["micro"] if au_pairs else None,
        "format_ok": sum(p.format_ok for p in preds) / max(len(preds), 1),
        "mean_labels": sum(len(p.labels) for p in preds) / max(len(preds), 1),
        **calibration_metrics(*confidence_pairs(completions, clips, threshold)),
    }
    if conf_map is not None:
        mapped = calibration_metrics(*confidence_pairs(completions, clips, threshold, conf_map))
        result.update({f"{k}_posthoc": v for k, v in mapped.items()})
    return result


def evaluate(model: Any, processor: Any, clips: Sequence[Clip], store: ClipStore, out: Path | None = None,
             conf_map: Any = None, **generate_kwargs: Any) -> dict[str, Any]:
    """Generate + score; with ``out``, write ``predictions.jsonl`` (label-output rows) and ``eval.json``."""
    completions = generate_completions(model, processor, clips, store, **generate_kwargs)
    result = score(completions, clips, conf_map=conf_map)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        with (out / "predictions.jsonl").open("w") as fh:
            for clip, text in zip(clips, completions):
                p = parse_completion(text)
                fh.write(json.dumps({"id": clip.id, "labels": p.labels, "confidence": p.confidence,
                                     "explanation": p.think, "aus": p.aus, "raw": text,
                                     "error": None if p.format_ok else "; ".join(p.errors)}) + "\n")
        (out / "eval.json").write_text(json.dumps(result, indent=2))
    return result
