"""``[calibration]``: reward a stated confidence that matches correctness, gated by the format.

Correct is :func:`affectllm.metrics.is_correct` (per-sample EW F ≥ ``threshold``), the definition evaluation uses.
Two scores, both proper (the expected reward over the outcome is highest when the confidence equals the chance of
being right) and both with a correctness term, so a confident right answer earns the most:

* ``brier`` (RLCR, the default): ``1[c] − (p − 1[c])²`` in [-1, 1];
* ``log``: a correctness term plus the clipped log score, ``5·1[c] + ln max(p if correct else 1 − p, 0.01)`` in
  [ln 0.01, 5] ≈ [-4.61, 5]. EmoCaliber's ``1 + 1[c] + 2·ln(...)`` has the same structure, but with its weights a
  right answer stated at low confidence scores below a wrong one (below c ≈ 0.38) and "wrong at confidence 0"
  out-earns an honest policy that is right less than ~85% of the time; the correctness weight 5 > ln(1/0.01) makes
  every right answer (at least 5 + ln 0.01 ≈ 0.39) beat every wrong one (at most 0), at any confidence.

>>> good = "<think>smile</think><answer>{}</answer><confidence>{}</confidence>"
>>> calibration_reward([good.format("happy", 0.9), good.format("sad", 0.9), good.format("sad", 0.1), "junk"],
...                    labels=[["joyful"]] * 4, emotion=[None] * 4)  # range [-1.5, 1]: format failure -1.5
[0.99, -0.81, -0.01, -1.5]
>>> calibration_reward([good.format("happy", 0.9), good.format("xyzzy", 0.0), good.format("happy", 0.0), "junk"],
...                    labels=[["joyful"]] * 4, emotion=[None] * 4, score="log")  # range [-4.6052, 5]: failure -5.6052
[4.8946, 0.0, 0.3948, -5.6052]
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
LOG_CORRECT = 5.0  # > ln(1 / LOG_FLOOR) ≈ 4.61: any right answer outscores any wrong one
FORMAT_FAILURE = {"brier": -1.5, "log": math.log(LOG_FLOOR) - 1.0}


def confidence_score(confidence: float, correct: bool, score: str = "brier") -> float:
    """Bounded Brier ``1[c] − (p − 1[c])²`` in [-1, 1], or ``5·1[c] + ln max(p or 1 − p, 0.01)`` in [-4.61, 5].

    Both are proper: for a fixed chance q of being right, the expected score is highest at p = q (the correctness
    term does not depend on p). With ``log``, any right answer beats any wrong one, whatever the two confidences.
    """
    y = 1.0 if correct else 0.0
    if score == "brier":
        return y - (confidence - y) ** 2
    if score == "log":
        return LOG_CORRECT * y + math.log(max(confidence if correct else 1.0 - confidence, LOG_FLOOR))
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
    Brier, ln(0.01) − 1 for log), lower than any valid answer, so hiding the confidence never pays.

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
