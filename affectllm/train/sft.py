"""Stage 1: supervised fine-tuning on descriptive captions, label sentences, single labels and AU descriptions.

TRL's ``SFTTrainer`` with our processor and collator: every target is a full completion in the output format, and
the loss covers the assistant's tokens only (``SFTTrainer`` rather than the plain ``Trainer`` for its per-step
entropy and token-accuracy logs; dataset preparation is skipped: the collator builds the model inputs).
``affectllm train recipes/tiny/sft.yaml data.manifest=M output_dir=O``.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

from trl import SFTTrainer

from ..config import Recipe, trainer_args
from ..data.manifest import select_clips
from ..data.prompts import QUESTIONS, choose_task, read_confidences, target_confidence
from ..errors import UserError
from ..inputs.collate import SftCollator
from ..inputs.store import ClipStore
from ..types import Clip
from .callbacks import MetricsLogger, NonFiniteGuard
from .stage import run_stage, trainable

log = logging.getLogger("affectllm.train")


def sft_rows(clips: list[Clip], mix: dict[str, float], seed: int, confidence: float,
             confidences: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """One SFT example per clip, the task drawn from ``mix`` with a seeded RNG (the same rows on every run); its
    target says the clip's entry of ``confidences`` (rounded to 0.1), else ``confidence``.

    Rows carry the clip's ``id``, not the clip: the collator looks clips up (:class:`ClipIdCollator`).
    """
    rng = random.Random(seed)
    rows = []
    for clip in clips:
        try:
            task, target = choose_task(clip, mix, rng, target_confidence(clip.id, confidences or {}, confidence))
        except ValueError as err:
            log.warning("%s; skipped", err)
            continue
        rows.append({"id": clip.id, "task": task, "question": QUESTIONS[task], "target": target})
    if not rows:
        raise UserError("no clip has labels to train on")
    return rows


class ClipIdCollator(SftCollator):
    """The SFT collator over rows that name their clip by ``id``; the batch also carries those ``ids``.

    Args:
        clips: the training clips by id.
        *args, **kwargs: those of :class:`SftCollator`.
    """

    def __init__(self, *args: Any, clips: dict[str, Clip], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clips = clips

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().__call__([{**r, "clip": self.clips[r["id"]]} for r in rows])
        batch["ids"] = [r["id"] for r in rows]
        return batch


class AffectSFTTrainer(SFTTrainer):
    """TRL's ``SFTTrainer`` whose batches carry their clip ids: ``compute_loss`` pops ``ids`` and keeps them as
    ``last_loss_ids``, the clips of the batch this loss is computed on (what :class:`NonFiniteGuard` reports)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.last_loss_ids: list[str] = []

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        self.last_loss_ids = inputs.pop("ids")
        return super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )


def build_trainer(recipe: Recipe, model: Any, processor: Any, out: Path) -> AffectSFTTrainer:
    """The configured trainer (used by :func:`main` and by tests that drive it step by step)."""
    from datasets import Dataset

    opts = recipe.sft
    args = trainer_args(recipe, out)
    clips = select_clips(recipe.data.manifest, recipe.data.split, recipe.data.max_samples, recipe.seed)
    table = read_confidences(opts.confidence_file)
    train = Dataset.from_list(sft_rows(clips, dict(opts.mix), recipe.seed, opts.confidence, table))
    # the cache holds the whole split: an LRU smaller than it evicts every clip before its next epoch
    store = ClipStore(recipe.data.feature_cache, num_frames=recipe.data.num_frames,
                      cache_size=max(512, len(clips)))
    # with a prep feature cache (data.feature_cache) frozen towers are not run: their cached outputs are used
    collator = ClipIdCollator(
        processor,
        store,
        model.config.enabled_modalities(),
        max_length=opts.max_length,
        model=model,
        clips={c.id: c for c in clips},
    )
    trainer = AffectSFTTrainer(
        model=trainable(model, recipe),
        args=args,
        train_dataset=train,
        data_collator=collator,
        processing_class=processor,
        callbacks=[MetricsLogger(out)],
    )
    trainer.add_callback(NonFiniteGuard(recipe.max_bad_steps, trainer))
    return trainer


def main(recipe: Recipe) -> dict[str, Any]:
    """Run stage 1 top to bottom; return the evaluation on the test split (if the manifest has one)."""
    return run_stage(recipe, build_trainer)
