"""``[calibration]``: reward a stated confidence that matches correctness, gated by the format.

>>> good = "<think>smile</think><answer>{}</answer><confidence>{}</confidence>"
>>> calibration_reward([good.format("happy", 0.9), good.format("sad", 0.9), good.format("sad", 0.1), "junk"],
...                    labels=[["joyful"]] * 4)  # range [-1.5, 1]: brier in [-1, 1], format failure -1.5
[0.99, -0.81, -0.01, -1.5]
>>> calibration_reward([good.format("happy", 0.9)], labels=[["joyful"]], score="log")  # range [-5.6052, 0]
[-0.1054]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from affectllm.metrics import ew_sample_f
from affectllm.rewards.common import column, gold_labels, parse_all, reward
from affectllm.taxonomy import Taxonomy, get_taxonomy
from affectllm.types import Prediction

SCORES = ("brier", "log")
LOG_FLOOR = 0.01  # clip: log(0.01) ≈ -4.6, so one confident mistake cannot dominate a batch
FORMAT_FAILURE = {"brier": -1.5, "log": math.log(LOG_FLOOR) - 1.0}


def confidence_score(confidence: float, correct: bool, score: str = "brier") -> float:
    """Bounded Brier ``1[c] − (p − 1[c])²`` in [-1, 1], or the clipped log score ``log max(p or 1−p, 0.01)``."""
    y = 1.0 if correct else 0.0
    if score == "brier":
        return y - (confidence - y) ** 2
    if score == "log":
        return math.log(max(confidence if correct else 1.0 - confidence, LOG_FLOOR))
    raise ValueError(f"score must be one of {SCORES}, got {score!r}")


def _usable(pred: Prediction) -> bool:
    """The answer and the confidence can be read (the strict format is the format reward's business)."""
    return pred.confidence is not None and bool(pred.labels) and "confidence_percent" not in pred.errors


@reward("calibration", columns=("labels", "emotion"))
def calibration_reward(
    completions: Sequence[Any],
    *,
    labels: Sequence[Any] | None = None,
    emotion: Sequence[Any] | None = None,
    score: str = "brier",
    threshold: float = 0.5,
    level: str = "level1",
    taxonomy: Taxonomy | None = None,
    wheel_dir: str | None = None,
    table: str = "mer2026",
    **kwargs: Any,
) -> list[float | None]:
    """Score the stated confidence against correctness; an unreadable answer/confidence scores below all valid ones.

    Correct means per-sample EW F (see ``[ew]``) ≥ ``threshold``. A completion without a readable answer and a
    plain 0..1 confidence gets ``FORMAT_FAILURE[score]`` (−1.5 for Brier, log(0.01) − 1 for log), lower than any
    valid answer, so hiding the confidence never pays.

    Returns:
        Values rounded to 4 places; None where the gold set maps to nothing.
    """
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    tax = taxonomy if taxonomy is not None else get_taxonomy(wheel_dir, table)
    n = len(completions)
    out: list[float | None] = []
    for pred, gold, single in zip(parse_all(completions), column(labels, n), column(emotion, n), strict=True):
        f = ew_sample_f(pred.labels, gold_labels(gold, single), tax, level)
        if f is None:
            out.append(None)
        elif not _usable(pred):
            out.append(round(FORMAT_FAILURE[score], 4))
        else:
            out.append(round(confidence_score(pred.confidence, f >= threshold, score), 4))  # type: ignore[arg-type]
    return out
