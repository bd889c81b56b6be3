"""End-of-stage evaluation on the held-out split: EW-F, HIT, AU-F1, ECE, printed and saved in the output dir."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..config import Recipe
from ..data.collate import ClipStore
from ..evaluation.stage_eval import evaluate
from .common import load_clips

log = logging.getLogger("affectllm.train")


def load_for_inference(path: str | Path, recipe: Recipe) -> Any:
    """A saved stage model in the recipe's dtype and attention kernel, on the GPU when there is one."""
    import torch
    from transformers import AutoModelForCausalLM

    import affectllm.model  # noqa: F401  (registers the Auto classes)

    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, recipe.model.dtype),
                                                 attn_implementation=recipe.model.attn_implementation)
    return model.to("cuda") if torch.cuda.is_available() else model


def evaluate_stage(recipe: Recipe, out: Path) -> dict[str, Any]:
    """Load the stage's saved model from ``out`` and score it on ``data.eval_split`` (skipped when empty/none)."""
    split = recipe.stage_options.get("test_split", "test")
    if not split or recipe.stage_options.get("evaluate", True) is False:
        return {}
    try:
        clips = load_clips(recipe.data.eval_manifest or recipe.data.manifest, split,
                           recipe.stage_options.get("eval_samples", 64), recipe.seed)
    except ValueError as err:
        log.info("no evaluation: %s", err)
        return {}
    from transformers import AutoProcessor

    model = load_for_inference(out, recipe)
    processor = AutoProcessor.from_pretrained(out)
    store = ClipStore(recipe.data.feature_cache, num_frames=recipe.data.num_frames)
    from ..data.prompts import QUESTIONS

    task = recipe.stage_options.get("task", "describe")
    result = evaluate(model, processor, clips, store, out / "eval", question=QUESTIONS[task],
                      max_new_tokens=int(recipe.stage_options.get("eval_max_new_tokens", 96)))
    shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.items()}
    print(f"[{recipe.stage}] {split} split ({result['n']} clips): " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    return result
