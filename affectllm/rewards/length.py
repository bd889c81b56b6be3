"""``[length]``: DAPO's soft over-length penalty, as TRL implements it (``trl.rewards.get_soft_overlong_punishment``).

An adapter only: affectllm's name and options (``max_tokens``, ``soft``) over TRL's function. Importing
``trl.rewards`` does not import torch (a test checks it), so this stays in the pure layer.

>>> length_reward(["a", "b", "c"], completion_ids=[[0] * 50, [0] * 90, [0] * 200], max_tokens=100, soft=20)
[0.0, -0.5, -1.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trl.rewards import get_soft_overlong_punishment

from affectllm.rewards.common import column, reward


@reward("length", columns=("completion_ids",))
def length_reward(
    completions: Sequence[Any],
    *,
    max_tokens: int = 1024,
    soft: int = 256,
    completion_ids: Sequence[Sequence[int]] | None = None,
    **kwargs: Any,
) -> list[float]:
    """0 up to ``max_tokens − soft`` tokens, then linear to −1 at ``max_tokens``, −1 beyond (DAPO Eq. 13).

    Args:
        completions: strings or conversational message lists (only their count is used).
        max_tokens: length at (and past) which the penalty is −1 (DAPO's ``L_max``).
        soft: width of the linear ramp before ``max_tokens`` (DAPO's ``L_cache``).
        completion_ids: token ids per completion (TRL passes them).

    Raises:
        ValueError: ``soft``/``max_tokens`` out of range; ``completion_ids`` missing or of the wrong length.
    """
    if soft <= 0 or max_tokens <= soft:
        raise ValueError(f"need 0 < soft < max_tokens, got soft={soft}, max_tokens={max_tokens}")
    ids = column(completion_ids, len(completions), "length", "completion_ids")
    return get_soft_overlong_punishment(max_tokens, soft)(ids)
