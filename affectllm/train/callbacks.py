"""Trainer callbacks shared by every stage: the metrics log and the non-finite gradient guard."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

log = logging.getLogger("affectllm.train")


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
    """Skips an optimizer step whose gradients are not finite, names its clips, and stops training after
    ``max_bad_steps`` such steps.

    The ids are those of the micro-batches the step's losses were computed on: ``ids_source.last_loss_ids``, set by
    the trainer's loss computation and collected after each micro-batch of a gradient-accumulation window (never
    the collator's last batch: accelerate collates one batch ahead).

    Without DeepSpeed the guard reads the gradients and drops them all (the optimizer then skips every parameter).
    Under DeepSpeed ``p.grad`` is None (the engine holds the gradients) and the engine has already stepped inside
    ``backward`` when the Trainer's hooks run; it skips a step whose gradient norm is not finite itself (ZeRO 1-3,
    bf16 and fp32), and the guard reads that verdict from the optimizer (``step_was_skipped``).

    Args:
        max_bad_steps: bad steps tolerated before training stops.
        ids_source: the trainer (anything with ``last_loss_ids: list[str]``).
    """

    def __init__(self, max_bad_steps: int = 10, ids_source: Any = None) -> None:
        self.max_bad_steps = max_bad_steps
        self.ids_source = ids_source
        self.bad_steps: list[dict[str, Any]] = []
        self._step_ids: list[str] = []

    def _collect(self) -> None:
        self._step_ids += list(getattr(self.ids_source, "last_loss_ids", None) or [])

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._step_ids = []

    def on_substep_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._collect()

    def on_pre_optimizer_step(
        self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None, **kwargs: Any
    ) -> None:
        self._collect()
        if args.deepspeed_plugin is not None:
            if not getattr(optimizer, "step_was_skipped", False):
                return
        elif not _drop_nonfinite_grads(model):
            return
        step = state.global_step + 1  # the step being taken (global_step counts finished ones)
        self.bad_steps.append({"step": step, "ids": list(self._step_ids)})
        log.warning("step %d: non-finite gradients, step skipped; clips: %s", step, self._step_ids)
        if len(self.bad_steps) >= self.max_bad_steps:
            log.error("stopping: %d steps with non-finite gradients", len(self.bad_steps))
            control.should_training_stop = True


def _drop_nonfinite_grads(model: Any) -> bool:
    """True (and every ``p.grad`` set to None) when some gradient holds a NaN or inf; one device sync."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return False
    norms = torch.stack([torch.linalg.vector_norm(g.float()).to(grads[0].device) for g in grads])
    if bool(torch.isfinite(norms).all()):
        return False
    for p in model.parameters():
        p.grad = None
    return True
