"""The one stage body every training stage runs: output directory, starting model, trainer, train, save, plot,
then the stage's finish (the evaluation, or calibration's post-hoc fit and report) on the main process. The stages
(sft, grpo, calibrate) import this module; only :mod:`affectllm.train.run` knows them all."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from accelerate import PartialState
from transformers.integrations import is_deepspeed_zero3_enabled

from ..config import Recipe, recipe_to_yaml
from ..data.manifest import select_clips
from ..evaluation.report import plot_curves
from ..evaluation.runner import Correctness, evaluate
from ..inputs.store import ClipStore
from ..jsonl import write_text

log = logging.getLogger("affectllm.train")

MakeTrainer = Callable[[Recipe, Any, Any, Path], Any]
Finish = Callable[[Recipe, Path], dict[str, Any]]


def run_stage(recipe: Recipe, make_trainer: MakeTrainer, finish: Finish | None = None) -> dict[str, Any]:
    """Output dir, model, ``make_trainer(recipe, model, processor, out)``, train, save, plot; then, on the main
    process, ``finish(recipe, out)`` (default :func:`evaluate_stage`), whose result is returned ({} elsewhere).

    ``trainer.max_steps: 0`` trains nothing (TRL would read 0 as "train by epochs"): the starting model is saved as
    the stage's model, so a stage can run only its finish (calibration: the post-hoc map alone).
    """
    out = setup_output(recipe)
    model, processor = load_stage_model(recipe)
    if int(recipe.trainer.get("max_steps", -1)) == 0:
        log.info("trainer.max_steps=0: no training; the starting model is the stage's model")
        if PartialState().is_main_process:
            save_final(model, processor, out)
    else:
        train_and_save(make_trainer(recipe, model, processor, out), processor, recipe, out)
    if not PartialState().is_main_process:
        return {}
    return (finish or evaluate_stage)(recipe, out)


def setup_output(recipe: Recipe) -> Path:
    """Create the output directory and save the resolved recipe there (``recipe.yaml``)."""
    out = Path(recipe.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "recipe.yaml", recipe_to_yaml(recipe))
    return out


def load_stage_model(recipe: Recipe) -> tuple[Any, Any]:
    """The stage's starting model and processor: ``init_from`` (a previous stage's output) or a fresh build."""
    if recipe.init_from:
        from ..model.build import load_pretrained

        model, processor = load_pretrained(
            recipe.init_from, recipe.model.dtype, recipe.model.attn_implementation, device="cpu"
        )  # the Trainer places it
        return model.train(), processor
    from ..model.build import build_model

    return build_model(recipe.model, seed=recipe.seed)


def trainable(model: Any, recipe: Recipe) -> Any:
    """Apply the recipe's trainable policy (may wrap the model in PEFT)."""
    from ..model.trainable import apply_trainable_policy, count_parameters

    out = apply_trainable_policy(
        model, llm_mode=recipe.model.llm_mode, train_encoders=recipe.model.train_encoders, lora=recipe.model.lora
    )
    counts = count_parameters(out)
    log.info(
        "trainable parameters: %d of %d (%.2f%%)",
        counts["trainable"],
        counts["total"],
        100 * counts["trainable"] / max(counts["total"], 1),
    )
    return out


def save_final(model: Any, processor: Any, out: Path) -> None:
    """Save a plain model directory (LoRA merged) + processor, loadable by the Auto classes and the next stage."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        model = model.merge_and_unload()
    for p in model.parameters():
        p.requires_grad = True  # the next stage decides its own policy
    model.save_pretrained(out)
    processor.save_pretrained(out)


def last_complete_checkpoint(out: Path) -> str | None:
    """The newest ``checkpoint-N`` of ``out`` that a kill did not cut short, or None.

    The Trainer writes a checkpoint's ``trainer_state.json`` last (after weights, optimizer, scheduler and RNG
    states), in place: a folder whose state file is missing or unreadable was being written when the run died, and
    is skipped (with a warning) for the one before it.
    """
    import json
    import re

    found = [(int(m.group(1)), p) for p in out.iterdir() if (m := re.fullmatch(r"checkpoint-(\d+)", p.name))]
    for _, path in sorted(found, reverse=True):
        try:
            json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
            return str(path)
        except (OSError, ValueError):
            log.warning("%s is incomplete (no readable trainer_state.json: the run died while saving it); resuming "
                        "from the checkpoint before it", path)
    return None


def train_and_save(trainer: Any, processor: Any, recipe: Recipe, out: Path) -> None:
    """Train (resuming from the newest checkpoint when ``resume=true``), save the final model to ``out`` (every
    rank takes part under ZeRO-3; the main process writes) and, on the main process, plot the curves."""
    resume = last_complete_checkpoint(out) if recipe.resume and out.is_dir() else None
    if recipe.resume and resume is None:
        log.warning("resume=true but %s has no checkpoint; starting from scratch", out)
    trainer.train(resume_from_checkpoint=resume)
    accelerator = trainer.accelerator
    accelerator.wait_for_everyone()
    model = accelerator.unwrap_model(trainer.model)
    if is_deepspeed_zero3_enabled():
        _save_zero3(trainer, model, processor, out)
    elif accelerator.is_main_process:
        save_final(model, processor, out)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        plot_curves(out)


def _save_zero3(trainer: Any, model: Any, processor: Any, out: Path) -> None:
    """The final save under ZeRO-3, where every parameter is partitioned across ranks (a collective: all ranks)."""
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        # the Trainer's own path: DeepSpeed gathers the weights module by module into rank 0's state dict
        # (stage3_gather_16bit_weights_on_model_save), and rank 0 writes the model and the processor
        trainer.save_model(str(out))
        return
    # merging LoRA needs whole base weights in one process: the only case that gathers them all at once
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=0):
        if trainer.accelerator.is_main_process:
            save_final(model, processor, out)


def load_for_inference(path: str | Path, recipe: Recipe) -> tuple[Any, Any]:
    """A saved stage model and processor in the recipe's dtype and attention kernel, on the GPU when there is one."""
    from ..model.build import load_pretrained

    return load_pretrained(path, recipe.model.dtype, recipe.model.attn_implementation)


def evaluate_stage(recipe: Recipe, out: Path) -> dict[str, Any]:
    """Load the stage's saved model from ``out`` and score it on ``eval.split`` (skipped when null or disabled)."""
    split = recipe.eval.split
    if not split or not recipe.eval.enabled:
        return {}
    try:
        clips = select_clips(
            recipe.data.eval_manifest or recipe.data.manifest, split, recipe.eval.samples, recipe.seed
        )
    except ValueError as err:
        log.info("no evaluation: %s", err)
        return {}
    model, processor = load_for_inference(out, recipe)
    store = ClipStore(recipe.data.feature_cache, num_frames=recipe.data.num_frames)
    from ..data.prompts import QUESTIONS

    result = evaluate(
        model,
        processor,
        clips,
        store,
        out / "eval",
        correctness=Correctness.from_recipe(recipe),  # the calibration reward's judgement, when the recipe has one
        question=QUESTIONS[recipe.task],
        max_new_tokens=recipe.eval.max_new_tokens,
    )
    shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.items()}
    print(f"[{recipe.stage}] {split} split ({result['n']} clips): " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    return result
