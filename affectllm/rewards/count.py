"""``[label_count_penalty]``: a penalty for answering more labels than the gold set has.

Additive, in the spirit of AffectGPT-R1's penalty against label padding (the published form is not available; the
one third-party implementation multiplies the accuracy reward instead). Counts are raw labels, not wheel clusters,
so listing synonyms is penalised too.

>>> cols = {"labels": [["x", "y"], ["x", "y"]], "emotion": [None, None]}
>>> label_count_penalty(["<answer>a, b, c, d</answer>", "<answer>a</answer>"], **cols)
[-0.5, 0.0]
>>> label_count_penalty(["<answer>a, b, c, d</answer>"], labels=[["x"]], emotion=[None], variant="log")  # [-1, 0]
[-1.0]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from affectllm.rewards.common import gold_column, parse_all, reward

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
    labels: Sequence[list[str]] | None = None,
    emotion: Sequence[str | None] | None = None,
    variant: str = "inverse",
    **kwargs: Any,
) -> list[float | None]:
    """Penalise answering more labels than the gold set has; None without gold labels.

    Args:
        completions: strings or conversational message lists.
        labels: gold label lists (or ``emotion`` for single-label rows).
        variant: ``"inverse"``, ``"ratio"`` or ``"log"`` (see :func:`count_penalty`).

    Raises:
        ValueError: an unknown ``variant``; the ``labels``/``emotion`` columns missing or of the wrong length.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    golds = gold_column(labels, emotion, len(completions), "label_count_penalty")
    out: list[float | None] = []
    for pred, gold in zip(parse_all(completions), golds, strict=True):
        n_gold = len(set(gold))
        out.append(count_penalty(len(pred.labels), n_gold, variant) if n_gold else None)
    return out
