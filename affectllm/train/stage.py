"""The one stage body every training stage runs: output directory, starting model, trainer, train, save, plot,
evaluate. The stages (sft, grpo, calibrate) import this module; only :mod:`affectllm.train.run` knows them all."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers.integrations import is_deepspeed_zero3_enabled
from transformers.trainer_utils import get_last_checkpoint

from ..config import Recipe, recipe_to_yaml
from ..data.manifest import select_clips
from ..evaluation.report import plot_curves
from ..evaluation.runner import evaluate
from ..inputs.store import ClipStore
from ..jsonl import write_text

log = logging.getLogger("affectllm.train")

MakeTrainer = Callable[[Recipe, Any, Any, Path], Any]


def run_stage(recipe: Recipe, make_trainer: MakeTrainer) -> dict[str, Any]:
    """Output dir, model, ``make_trainer(recipe, model, processor, out)``, train, save, plot, then (main process)
    the evaluation on the test split, which is returned ({} on other ranks)."""
    out = setup_output(recipe)
    model, processor = load_stage_model(recipe)
    trainer = make_trainer(recipe, model, processor, out)
    if not train_and_save(trainer, processor, recipe, out):
        return {}
    return evaluate_stage(recipe, out)


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

        model, processor = load_pretrained(recipe.init_from, recipe.model.dtype, recipe.model.attn_implementation,
                                           device="cpu")  # the Trainer places it
        return model.train(), processor
    from ..model.build import build_model

    return build_model(recipe.model, seed=recipe.seed)


def trainable(model: Any, recipe: Recipe) -> Any:
    """Apply the recipe's trainable policy (may wrap the model in PEFT)."""
    from ..model.trainable import apply_trainable_policy, count_parameters

    out = apply_trainable_policy(model, llm_mode=recipe.model.llm_mode, train_encoders=recipe.model.train_encoders,
                                 lora=recipe.model.lora)
    counts = count_parameters(out)
    log.info("trainable parameters: %d of %d (%.2f%%)", counts["trainable"], counts["total"],
             100 * counts["trainable"] / max(counts["total"], 1))
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


def train_and_save(trainer: Any, processor: Any, recipe: Recipe, out: Path) -> bool:
    """Train (resuming from the newest checkpoint when ``resume=true``), then on the main process save the final
    model and plot the curves. Returns True on the main process (which goes on to evaluate), False elsewhere."""
    resume = get_last_checkpoint(str(out)) if recipe.resume and out.is_dir() else None
    if recipe.resume and resume is None:
        log.warning("resume=true but %s has no checkpoint; starting from scratch", out)
    trainer.train(resume_from_checkpoint=resume)
    accelerator = trainer.accelerator
    accelerator.wait_for_everyone()
    model = accelerator.unwrap_model(trainer.model)
    if is_deepspeed_zero3_enabled():
        # ZeRO-3 partitions every parameter across ranks: gather them (a collective, on all ranks) to save whole
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=0):
            if accelerator.is_main_process:
                save_final(model, processor, out)
        accelerator.wait_for_everyone()
    elif accelerator.is_main_process:
        save_final(model, processor, out)
    if not accelerator.is_main_process:
        return False
    plot_curves(out)
    return True


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
        clips = select_clips(recipe.data.eval_manifest or recipe.data.manifest, split,
                           recipe.eval.samples, recipe.seed)
    except ValueError as err:
        log.info("no evaluation: %s", err)
        return {}
    model, processor = load_for_inference(out, recipe)
    store = ClipStore(recipe.data.feature_cache, num_frames=recipe.data.num_frames)
    from ..data.prompts import QUESTIONS

    result = evaluate(model, processor, clips, store, out / "eval", question=QUESTIONS[recipe.task],
                      max_new_tokens=recipe.eval.max_new_tokens)
    shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.items()}
    print(f"[{recipe.stage}] {split} split ({result['n']} clips): " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    return result
