"""Stage 1: supervised fine-tuning on descriptive captions, label sentences, single labels and AU descriptions.

TRL's ``SFTTrainer`` with our processor and collator: every target is a full completion in the output format, and
the loss covers the assistant's tokens only. ``affectllm train recipes/tiny/sft.yaml data.manifest=M output_dir=O``.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

from ..config import Recipe
from ..data.manifest import clip_to_row, select_clips
from ..data.prompts import QUESTIONS, choose_task
from ..inputs.collate import SftCollator
from ..inputs.store import ClipStore
from ..types import Clip
from .callbacks import MetricsLogger, NonFiniteGuard
from .stage import run_stage, trainable

log = logging.getLogger("affectllm.train")


def sft_rows(clips: list[Clip], mix: dict[str, float], seed: int, confidence: float) -> list[dict[str, Any]]:
    """One SFT example per clip, the task drawn from ``mix`` with a seeded RNG (the same rows on every run)."""
    rng = random.Random(seed)
    rows = []
    for clip in clips:
        try:
            task, target = choose_task(clip, mix, rng, confidence)
        except ValueError as err:
            log.warning("%s; skipped", err)
            continue
        rows.append({"id": clip.id, "clip": json.dumps(clip_to_row(clip)), "task": task,
                     "question": QUESTIONS[task], "target": target})
    if not rows:
        raise ValueError("no clip has labels to train on")
    return rows


class _IdsCollator(SftCollator):
    """The SFT collator that remembers the ids of its last batch (for the non-finite guard's report)."""

    last_ids: list[str] = []

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        self.last_ids = [r["id"] for r in rows]
        return super().__call__([{**r, "clip": json.loads(r["clip"])} for r in rows])


def build_trainer(recipe: Recipe, model: Any, processor: Any, out: Path) -> Any:
    """The configured ``SFTTrainer`` (used by :func:`main` and by tests that drive it step by step)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    opts = recipe.sft
    train_clips = select_clips(recipe.data.manifest, recipe.data.split, recipe.data.max_samples, recipe.seed)
    train = Dataset.from_list(sft_rows(train_clips, dict(opts.mix), recipe.seed, opts.confidence))
    store = ClipStore(recipe.data.feature_cache, num_frames=recipe.data.num_frames)
    # with a prep feature cache (data.feature_cache) frozen towers are not run: their cached outputs are used
    collator = _IdsCollator(processor, store, model.config.enabled_modalities(), max_length=opts.max_length,
                            model=model)
    defaults = {"logging_steps": 1, "save_strategy": "steps", "report_to": ["tensorboard"], "seed": recipe.seed,
                "data_seed": recipe.seed}
    args = SFTConfig(output_dir=str(out), **{**defaults, **recipe.trainer}, remove_unused_columns=False,
                     dataset_kwargs={"skip_prepare_dataset": True})
    guard = NonFiniteGuard(recipe.max_bad_steps, collator)
    trainer = SFTTrainer(model=trainable(model, recipe), args=args, train_dataset=train, data_collator=collator,
                         processing_class=processor, callbacks=[MetricsLogger(out), guard])
    trainer.affect_guard = guard
    return trainer


def main(recipe: Recipe) -> dict[str, Any]:
    """Run stage 1 top to bottom; return the evaluation on the test split (if the manifest has one)."""
    return run_stage(recipe, build_trainer)
