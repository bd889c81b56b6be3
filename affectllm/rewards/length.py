"""``[label_count_penalty]`` against listing many labels and ``[length]`` soft over-length penalty.

>>> label_count_penalty(["<answer>a, b, c, d</answer>", "<answer>a</answer>"], labels=[["x", "y"], ["x", "y"]])
[-0.5, 0.0]
>>> label_count_penalty(["<answer>a, b, c, d</answer>"], labels=[["x"]], variant="log")  # range [-1, 0]
[-1.0]
>>> length_reward(["word " * 50, "word " * 90, "word " * 200], max_tokens=100, soft=20)  # range [-1, 0]
[0.0, -0.5, -1.0]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from affectllm.parsing import completion_text
from affectllm.rewards.common import column, gold_labels, parse_all, reward

VARIANTS = ("inverse", "ratio", "log")


def count_penalty(n_pred: int, n_gold: int, variant: str = "inverse") -> float:
    """Penalty in [-1, 0] for ``n_pred`` labels against ``n_gold``; 0 unless ``n_pred > n_gold``.

    ``inverse``: ``n_gold/n_pred − 1``; ``ratio``: ``−(n_pred − n_gold)/n_gold``; ``log``: ``−ln(n_pred/n_gold)``;
    the last two clipped at −1.
    """
    if n_pred <= n_gold or n_gold <= 0:
        return 0.0
    if variant == "inverse":
        value = n_gold / n_pred - 1.0
    elif variant == "ratio":
        value = -(n_pred - n_gold) / n_gold
    elif variant == "log":
        value = -math.log(n_pred / n_gold)
    else:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    return max(-1.0, round(value, 4))


@reward("label_count_penalty", columns=("labels", "emotion"))
def label_count_penalty(
    completions: Sequence[Any],
    *,
    labels: Sequence[Any] | None = None,
    emotion: Sequence[Any] | None = None,
    variant: str = "inverse",
    **kwargs: Any,
) -> list[float | None]:
    """Penalise answering more labels than the gold set has (AffectGPT-R1); None without gold labels.

    Args:
        completions: strings or conversational message lists.
        labels: gold label lists (or ``emotion`` for single-label rows).
        variant: ``"inverse"``, ``"ratio"`` or ``"log"`` (see :func:`count_penalty`).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    n = len(completions)
    out: list[float | None] = []
    for pred, gold, single in zip(parse_all(completions), column(labels, n), column(emotion, n), strict=True):
        g = set(gold_labels(gold, single))
        out.append(count_penalty(len(pred.labels), len(g), variant) if g else None)
    return out


def _length(completion: Any, ids: Any) -> int:
    """Token count from ``completion_ids`` when TRL passes them; else white-space words of the text."""
    if ids is not None:
        return len(ids)
    return len((completion_text(completion) or "").split())


@reward("length", columns=("completion_ids",))
def length_reward(
    completions: Sequence[Any],
    *,
    max_tokens: int = 1024,
    soft: int = 256,
    completion_ids: Sequence[Any] | None = None,
    **kwargs: Any,
) -> list[float]:
    """Soft over-length penalty (DAPO-style): 0 up to ``max_tokens − soft``, then linear to −1 at ``max_tokens``.

    Args:
        completions: strings or conversational message lists.
        max_tokens: length at (and past) which the penalty is −1.
        soft: width of the linear ramp before ``max_tokens``.
        completion_ids: token ids per completion (TRL passes them); white-space words are counted without.
    """
    if soft <= 0 or max_tokens <= soft:
        raise ValueError(f"need 0 < soft < max_tokens, got soft={soft}, max_tokens={max_tokens}")
    start = max_tokens - soft
    ids = column(completion_ids, len(completions))
    lengths = [_length(c, i) for c, i in zip(completions, ids, strict=True)]
    return [0.0 if n <= start else max(-1.0, round(-(n - start) / soft, 4)) for n in lengths]
