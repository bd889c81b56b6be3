"""GRPO rewards with TRL's signature ``(completions, **dataset_columns) -> list[float | None]``.

Each reward is a module-level pure function registered in :data:`affectllm.registry.REWARDS`; it parses through
:func:`affectllm.parsing.parse_completion`, never raises on model text and returns None where it does not apply.
Options are keyword arguments. A recipe lists ``rewards: [{name: ew, weight: 1.0, kwargs: {level: level1}}]`` and
the trainer calls :func:`make_reward` once per entry, which binds the options (checked at load time) and keeps a
``__name__`` TRL can log:

>>> fn = make_reward("ew", level="level1")
>>> fn.__name__, fn(["<answer>joyful</answer>"], labels=[["elated"]], emotion=[None])
('ew', [1.0])
>>> make_reward("ew", levle="level2")
Traceback (most recent call last):
...
TypeError: reward 'ew' has no option 'levle'; options: level, taxonomy, wheel_dir, table
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from affectllm.registry import REWARDS
from affectllm.rewards import au, calibration, count, emotion, format, length  # noqa: F401  (registers the rewards)
from affectllm.types import RewardFn

_NOT_OPTIONS = {"completions", "kwargs", "prompts", "completion_ids"}


def reward_options(name: str) -> list[str]:
    """Keyword options a registered reward accepts (dataset columns included)."""
    params = inspect.signature(REWARDS.get(name)).parameters.values()
    return [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in _NOT_OPTIONS]


def make_reward(name: str, **options: Any) -> RewardFn:
    """The reward registered as ``name`` (or ``"pkg.mod:attr"``) with ``options`` bound, named ``name``.

    Raises:
        KeyError: unknown reward name.
        TypeError: an option the reward does not take (a typo in a recipe fails before training starts).
    """
    fn = REWARDS.get(name)
    known = [p for p in reward_options(name) if p not in getattr(fn, "columns", ())]
    unknown = [k for k in options if k not in known]
    if unknown:
        raise TypeError(f"reward {name!r} has no option {unknown[0]!r}; options: {', '.join(known) or '(none)'}")
    bound = functools.partial(fn, **options)
    bound.__name__ = name  # type: ignore[attr-defined]  # TRL logs rewards by __name__
    return bound
