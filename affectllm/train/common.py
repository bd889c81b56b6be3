"""What every stage shares: model loading, the clip list, output directory, logging, plots, guards, evaluation."""

from __future__ import annotations

import json
import logging
import math
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from ..config import Recipe, recipe_to_yaml
from ..data.manifest import read_manifest
from ..types import Clip

log = logging.getLogger("affectllm.train")


def setup_output(recipe: Recipe) -> Path:
    """Create the output directory and save the resolved recipe there (``recipe.yaml``)."""
    out = Path(recipe.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".recipe.yaml.tmp"
    tmp.write_text(recipe_to_yaml(recipe))
    os.replace(tmp, out / "recipe.yaml")
    return out


def load_clips(manifest: str | None, split: str | None, max_samples: int | None = None,
               seed: int = 0) -> list[Clip]:
    """Clips of ``split`` (all when None) from a manifest; bad rows are reported (with line and field) and skipped.

    Raises:
        ValueError: no manifest given, or no usable clip in the split.
    """
    if not manifest:
        raise ValueError("data.manifest is not set; pass data.manifest=PATH (e.g. one written by `affectllm data "
                         "synth`)")
    clips, problems = read_manifest(manifest, strict=False)
    for p in problems:
        log.warning("%s", p)
    if split:
        clips = [c for c in clips if c.split == split]
    if not clips:
        raise ValueError(f"{manifest}: no usable clip in split {split!r}")
    if max_samples is not None and len(clips) > max_samples:
        clips = random.Random(seed).sample(clips, max_samples)
    return clips


def load_stage_model(recipe: Recipe) -> tuple[Any, Any]:
    """The stage's starting model and processor: ``init_from`` (a previous stage's output) or a fresh build."""
    if recipe.init_from:
        from transformers import AutoModelForCausalLM, AutoProcessor

        import affectllm.model  # noqa: F401  (registers the Auto classes)

        path = Path(recipe.init_from)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"init_from={path}: not a model directory (no config.json); point it at the "
                                    "previous stage's output_dir")
        dtype = getattr(torch, recipe.model.dtype)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype,
                                                     attn_implementation=recipe.model.attn_implementation)
        return model, AutoProcessor.from_pretrained(path)
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
    resume = last_checkpoint(out) if recipe.resume else None
    if recipe.resume and resume is None:
        log.warning("resume=true but %s has no checkpoint; starting from scratch", out)
    trainer.train(resume_from_checkpoint=resume)
    accelerator = trainer.accelerator
    accelerator.wait_for_everyone()
    model = accelerator.unwrap_model(trainer.model)
    if _zero3(trainer):
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


def _zero3(trainer: Any) -> bool:
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    return bool(getattr(trainer, "is_deepspeed_enabled", False) and plugin is not None and plugin.zero_stage == 3)


class MetricsLogger(TrainerCallback):
    """Appends every log record to ``metrics.jsonl`` (one JSON object a line, flushed)."""

    def __init__(self, out: Path) -> None:
        self.path = out / "metrics.jsonl"

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not logs or not state.is_world_process_zero:
            return
        row = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float, str))}}
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
            fh.flush()


class NonFiniteGuard(TrainerCallback):
    """Drops the gradients of a step whose gradients are not finite (the optimizer then skips every parameter),
    logs the ids of the batch that caused it, and stops training after ``max_bad_steps`` such steps."""

    def __init__(self, max_bad_steps: int = 10, ids_source: Any = None) -> None:
        self.max_bad_steps = max_bad_steps
        self.ids_source = ids_source
        self.bad_steps: list[dict[str, Any]] = []

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        params = [p for p in model.parameters() if p.grad is not None]
        if all(torch.isfinite(p.grad).all() for p in params):
            return
        ids = list(getattr(self.ids_source, "last_ids", []) or [])
        self.bad_steps.append({"step": state.global_step, "ids": ids})
        log.warning("step %d: non-finite gradients, step skipped; batch ids: %s", state.global_step, ids)
        for p in params:
            p.grad = None
        if len(self.bad_steps) >= self.max_bad_steps:
            log.error("stopping: %d steps with non-finite gradients", len(self.bad_steps))
            control.should_training_stop = True


def is_finite(value: float | torch.Tensor) -> bool:
    """True for a finite float or tensor."""
    return bool(torch.isfinite(value).all()) if isinstance(value, torch.Tensor) else math.isfinite(value)


def plot_curves(out: Path, keys: Sequence[str] | None = None) -> list[Path]:
    """PNG line plots of the numeric series in ``metrics.jsonl`` (loss, rewards, KL ...), one file per group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = out / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    series: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        for k, v in row.items():
            if k != "step" and isinstance(v, (int, float)) and (keys is None or any(s in k for s in keys)):
                series.setdefault(k, []).append((row["step"], float(v)))
    groups = {"loss": [k for k in series if "loss" in k], "reward": [k for k in series if "reward" in k],
              "other": [k for k in series if k in ("kl", "entropy", "grad_norm") or k.startswith("completions/")]}
    written = []
    for name, names in groups.items():
        names = [k for k in names if len(series[k]) > 0]
        if not names:
            continue
        fig, ax = plt.subplots(figsize=(7, 4))
        for k in names[:12]:
            xs, ys = zip(*series[k])
            ax.plot(xs, ys, label=k, marker="." if len(xs) < 30 else None)
        ax.set_xlabel("step")
        ax.set_title(f"{out.name}: {name}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        target = out / f"{name}_curves.png"
        fig.savefig(target, dpi=100)
        plt.close(fig)
        written.append(target)
    return written


def last_checkpoint(out: Path) -> str | None:
    """The newest ``checkpoint-N`` folder in ``out`` (None if there is none)."""
    ckpts = sorted((p for p in out.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                   key=lambda p: int(p.name.split("-")[-1]))
    return str(ckpts[-1]) if ckpts else None
