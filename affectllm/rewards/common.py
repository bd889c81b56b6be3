"""Shared helpers of the rewards: registration with declared columns, the column contract, parse once per batch.

The dataset columns a reward reads are part of its contract: ``@reward(name, columns=...)`` records them,
:func:`reward_columns` is the one place that builds them from a clip, and :func:`check_columns` fails at trainer
build time when the dataset lacks one, so a mis-wired reward never trains on ``None``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from affectllm.parsing import gold_labels, parse_completion
from affectllm.registry import REWARDS
from affectllm.taxonomy import Taxonomy, get_taxonomy
from affectllm.types import Clip, Prediction

TRL_COLUMNS: frozenset[str] = frozenset(
    {"prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric", "environments"}
)
"""Reward keyword arguments TRL's ``GRPOTrainer`` passes itself (not dataset columns)."""


def reward(name: str, columns: tuple[str, ...] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a reward as ``name``; ``columns`` are the dataset columns it reads (not recipe options)."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.columns = columns  # type: ignore[attr-defined]
        return REWARDS.register(name, fn)

    return wrap


def reward_columns(clip: Clip) -> dict[str, Any]:
    """Dataset columns the rewards read: ``labels`` (gold labels, see :func:`~affectllm.parsing.gold_labels`),
    ``emotion`` (primary label or None) and ``aus`` (gold AU codes, ``[]`` when the clip has none)."""
    return {"labels": gold_labels(clip), "emotion": clip.emotion, "aus": list(clip.aus or [])}


def declared_columns(fn: Callable[..., Any]) -> tuple[str, ...]:
    """Columns a reward declared with ``@reward(columns=...)`` (through a :func:`functools.partial`)."""
    return tuple(getattr(getattr(fn, "func", fn), "columns", ()))


def check_columns(reward_funcs: Iterable[Callable[..., Any]], columns: Iterable[str]) -> None:
    """Fail before training when a reward reads a dataset column the dataset does not have.

    Args:
        reward_funcs: rewards as :func:`~affectllm.rewards.make_reward` returns them (named by ``__name__``).
        columns: the dataset's column names (TRL's own keyword arguments need not be listed).

    Raises:
        ValueError: naming the reward, the missing columns and the columns there are.
    """
    have = set(columns) | TRL_COLUMNS
    for fn in reward_funcs:
        missing = [c for c in declared_columns(fn) if c not in have]
        if missing:
            name = getattr(fn, "__name__", repr(fn))
            raise ValueError(f"reward {name!r} reads column(s) {', '.join(missing)}, which the dataset lacks "
                             f"(columns: {', '.join(sorted(set(columns))) or 'none'}); build rows with "
                             "affectllm.rewards.common.reward_columns or drop the reward")


def parse_all(completions: Sequence[Any]) -> list[Prediction]:
    """``parse_completion`` over a batch (strings or conversational message lists)."""
    return [parse_completion(c) for c in completions]


def column(values: Sequence[Any] | None, n: int, reward_name: str, name: str) -> list[Any]:
    """A dataset column of a batch of ``n`` completions, as a list.

    Raises:
        ValueError: the column is missing or its length is not ``n`` (naming the reward and the column): a
            mis-wired column must not silently turn a reward into None.
    """
    if values is None:
        raise ValueError(f"reward {reward_name!r} needs the dataset column {name!r}, which was not passed")
    values = list(values)
    if len(values) != n:
        raise ValueError(f"reward {reward_name!r}: column {name!r} has {len(values)} values for {n} completions")
    return values


def gold_column(labels: Sequence[Any] | None, emotion: Sequence[Any] | None, n: int, reward_name: str
                ) -> list[list[str]]:
    """Gold labels per row from the ``labels`` and ``emotion`` columns (``labels``, else ``[emotion]``)."""
    rows = zip(column(labels, n, reward_name, "labels"), column(emotion, n, reward_name, "emotion"), strict=True)
    return [gold_labels({"labels": lab, "emotion": emo}) for lab, emo in rows]


def resolve_taxonomy(taxonomy: Taxonomy | None, wheel_dir: str | None, table: str) -> Taxonomy:
    """The taxonomy a reward scores on: ``taxonomy`` when given, else the MER tables in ``wheel_dir``, else the
    built-in one (the ``taxonomy``/``wheel_dir``/``table`` options of ``ew``, ``label`` and ``calibration``)."""
    return taxonomy if taxonomy is not None else get_taxonomy(wheel_dir, table)
