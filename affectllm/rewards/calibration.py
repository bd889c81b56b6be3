"""``[calibration]``: reward a stated confidence that matches correctness, gated by the format.

Correct is :func:`affectllm.metrics.is_correct` (per-sample EW F ≥ ``threshold``), the definition evaluation uses.
Two scores, both proper (the expected reward over the outcome is highest when the confidence equals the chance of
being right) and both with a correctness term, so a confident right answer earns the most:

* ``brier`` (RLCR, the default): ``1[c] − (p − 1[c])²`` in [-1, 1];
* ``log`` (EmoCaliber): ``1 + 1[c] + 2·ln max(p if correct else 1 − p, 0.01)`` in [1 + 2 ln 0.01, 2] ≈ [-8.21, 2].

>>> good = "<think>smile</think><answer>{}</answer><confidence>{}</confidence>"
>>> calibration_reward([good.format("happy", 0.9), good.format("sad", 0.9), good.format("sad", 0.1), "junk"],
...                    labels=[["joyful"]] * 4, emotion=[None] * 4)  # range [-1.5, 1]: format failure -1.5
[0.99, -0.81, -0.01, -1.5]
>>> calibration_reward([good.format("happy", 0.9), good.format("xyzzy", 0.0), "junk"], labels=[["joyful"]] * 3,
...                    emotion=[None] * 3, score="log")  # range [-9.2103, 2]: format failure -9.2103
[1.7893, 1.0, -9.2103]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from affectllm.metrics import is_correct
from affectllm.parsing import stated_confidence
from affectllm.rewards.common import gold_column, parse_all, resolve_taxonomy, reward
from affectllm.taxonomy import Taxonomy

SCORES = ("brier", "log")
LOG_FLOOR = 0.01  # clip: ln(0.01) ≈ -4.6, so one confident mistake cannot dominate a batch
LOG_WEIGHT = 2.0  # EmoCaliber's weight of the log score against the correctness term
FORMAT_FAILURE = {"brier": -1.5, "log": 1.0 + LOG_WEIGHT * math.log(LOG_FLOOR) - 1.0}


def confidence_score(confidence: float, correct: bool, score: str = "brier") -> float:
    """Bounded Brier ``1[c] − (p − 1[c])²`` in [-1, 1], or EmoCaliber's ``1 + 1[c] + 2·ln max(p or 1 − p, 0.01)``.

    With ``log``, a right answer stated with full confidence (2) beats a wrong one at any confidence (at most 1, at
    confidence 0), and at a confidence above 1 / (1 + e^0.5) ≈ 0.378 a right answer beats a wrong one stated
    equally sure. Below that, the log score's penalty for doubting a right answer outweighs the correctness term;
    with EmoCaliber's weights, ranking right over wrong at *every* shared confidence would need the floor at
    e^−0.5 ≈ 0.61, which would flatten the score for all confidences below it.
    """
    y = 1.0 if correct else 0.0
    if score == "brier":
        return y - (confidence - y) ** 2
    if score == "log":
        return 1.0 + y + LOG_WEIGHT * math.log(max(confidence if correct else 1.0 - confidence, LOG_FLOOR))
    raise ValueError(f"score must be one of {SCORES}, got {score!r}")


@reward("calibration", columns=("labels", "emotion"))
def calibration_reward(
    completions: Sequence[Any],
    *,
    labels: Sequence[list[str]] | None = None,
    emotion: Sequence[str | None] | None = None,
    score: str = "brier",
    threshold: float = 0.5,
    level: str = "level1",
    taxonomy: Taxonomy | None = None,
    wheel_dir: str | None = None,
    table: str = "mer2026",
    **kwargs: Any,
) -> list[float | None]:
    """Score the stated confidence against correctness; an unusable answer/confidence scores below all valid ones.

    A completion without a usable answer and confidence (:func:`~affectllm.parsing.stated_confidence`: missing,
    a word, a percentage, no labels or an answer cut at the length limit) gets ``FORMAT_FAILURE[score]`` (−1.5 for
    Brier, ln(0.01)·2 for log), lower than any valid answer, so hiding the confidence never pays.

    Returns:
        Values rounded to 4 places; None where the gold set maps to nothing.

    Raises:
        ValueError: an unknown ``score``; the ``labels``/``emotion`` columns missing or of the wrong length.
    """
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    tax = resolve_taxonomy(taxonomy, wheel_dir, table)
    golds = gold_column(labels, emotion, len(completions), "calibration")
    out: list[float | None] = []
    for pred, gold in zip(parse_all(completions), golds, strict=True):
        correct = is_correct(pred.labels, gold, tax, level, threshold)
        conf = stated_confidence(pred)
        if correct is None:
            out.append(None)
        elif conf is None:
            out.append(round(FORMAT_FAILURE[score], 4))
        else:
            out.append(round(confidence_score(conf, correct, score), 4))
    return out
