"""``[au]``: Action Units named in ``<think>`` vs the gold AU set, as ``2·F1 − 1`` (Facial-R1).

AUs are read from ``<think>`` only, as Facial-R1 does: a completion without ``<think>`` names no AU and scores −1.

>>> au_reward(["<think>AU06 and AU12, no AU4</think>", "<think>AU6 only</think>", "<think>no AUs</think>"],
...           aus=[["AU6", "AU12"]] * 3)
[1.0, 0.3333, -1.0]
>>> au_reward(["AU6 and AU12 are active <answer>happy</answer>"], aus=[["AU6", "AU12"]])  # no <think>: none named
[-1.0]
>>> au_reward(["<think>AU6</think>"], aus=[[]])  # no gold AUs: None; else range [-1, 1]
[None]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from affectllm.metrics import au_f1_sample
from affectllm.rewards.common import column, parse_all, reward


@reward("au", columns=("aus",))
def au_reward(completions: Sequence[Any], *, aus: Sequence[list[str]] | None = None, **kwargs: Any
              ) -> list[float | None]:
    """``2·F1 − 1`` of the AU set asserted in ``<think>`` (negated mentions excluded); −1 when none is named; None
    without gold.

    Args:
        completions: strings or conversational message lists.
        aus: gold column: AU code lists per row (``["AU6", "AU12"]``, ``[]`` without gold AUs).

    Returns:
        Values in [-1, 1] (4 decimals), None for rows without gold AUs.

    Raises:
        ValueError: the ``aus`` column is missing or of the wrong length.
    """
    out: list[float | None] = []
    for pred, gold in zip(parse_all(completions), column(aus, len(completions), "au", "aus"), strict=True):
        f1 = au_f1_sample(pred.aus, gold)
        out.append(None if f1 is None else (-1.0 if not pred.aus else round(2 * f1 - 1, 4)))
    return out
