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
