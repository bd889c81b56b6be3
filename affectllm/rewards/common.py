"""Shared helpers of the rewards: parse once per completion, read gold columns in their usual shapes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from affectllm.parsing import parse_completion, parse_label_field
from affectllm.registry import REWARDS
from affectllm.types import Prediction


def reward(name: str, columns: tuple[str, ...] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a reward as ``name``; ``columns`` are the dataset columns it reads (not recipe options)."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.columns = columns  # type: ignore[attr-defined]
        return REWARDS.register(name, fn)

    return wrap


def parse_all(completions: Sequence[Any]) -> list[Prediction]:
    """``parse_completion`` over a batch (strings or conversational message lists)."""
    return [parse_completion(c) for c in completions]


def column(values: Sequence[Any] | None, n: int) -> list[Any]:
    """A dataset column as a list of ``n`` values (None where the column is absent or short)."""
    if values is None:
        return [None] * n
    values = list(values)
    return values + [None] * (n - len(values)) if len(values) < n else values[:n]


def gold_labels(labels: Any, emotion: Any) -> list[str]:
    """Gold labels of one row: ``labels`` (a list or MER list-as-string) or else the single ``emotion``."""
    found = parse_label_field(labels)
    if not found and isinstance(emotion, str) and emotion.strip():
        found = [emotion]
    return [x for x in found if isinstance(x, str) and x.strip()]
