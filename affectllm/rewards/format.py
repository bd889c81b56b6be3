"""``[format]``: does the completion follow ``<think>…</think><answer>…</answer><confidence>…</confidence>``?

>>> good = "<think>smiling</think><answer>happy</answer><confidence>0.9</confidence>"
>>> format_reward([good, "<answer>happy</answer>", "no tags at all, just prose about the clip." * 10])
[1.0, 0.0, 0.0]
>>> format_reward([good, "<answer>happy</answer>"], mode="lenient")  # range [0, 1]
[1.0, 0.5]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from affectllm.parsing import CONFIDENCE_ERRORS
from affectllm.rewards.common import parse_all, reward
from affectllm.types import Prediction

MODES = ("strict", "lenient")


def _errors(pred: Prediction, require_confidence: bool) -> list[str]:
    return [e for e in pred.errors if require_confidence or e not in CONFIDENCE_ERRORS]


def _lenient(pred: Prediction, require_confidence: bool) -> float:
    """Share of checks passed: think, answer (non-empty), confidence (if required), order, nothing outside tags."""
    errors = set(_errors(pred, require_confidence))
    checks = [
        not errors & {"missing_think", "repeated_think", "unclosed_think"},
        not errors & {"missing_answer", "repeated_answer", "unclosed_answer", "empty_answer"},
        "bad_order" not in errors and "text_outside_tags" not in errors,
    ]
    if require_confidence:
        checks.append(not errors & CONFIDENCE_ERRORS)
    return sum(checks) / len(checks) if "not_text" not in errors else 0.0


@reward("format")
def format_reward(
    completions: Sequence[Any], *, mode: str = "strict", require_confidence: bool = True, **kwargs: Any
) -> list[float]:
    """1.0 for a completion in format and 0.0 otherwise (``strict``), or the share of checks passed (``lenient``).

    Args:
        completions: strings or conversational message lists.
        mode: ``"strict"`` or ``"lenient"``.
        require_confidence: False for stages whose format has no ``<confidence>`` (stage-2 GRPO before calibration).

    Returns:
        One value in [0, 1] per completion (never None: every completion has a format).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    preds = parse_all(completions)
    if mode == "strict":
        return [0.0 if _errors(p, require_confidence) else 1.0 for p in preds]
    return [_lenient(p, require_confidence) for p in preds]
