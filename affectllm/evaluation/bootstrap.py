"""Seeded percentile bootstrap: a 95% interval for any metric of per-sample records, and a paired version for the
difference of two runs on the same ids.

A statistic is a function of a list of sample indices (a resample, with repeats) that returns a number, or None
where the metric is undefined on that resample (AUROC with one class only); such resamples are left out of the
interval. The same seed gives the same interval, bit for bit.

>>> import numpy as np
>>> hits = [1.0] * 30 + [0.0] * 10
>>> ci = bootstrap(lambda idx: float(np.mean([hits[i] for i in idx])), len(hits), resamples=200, seed=0)
>>> ci.low <= ci.value <= ci.high, ci.value
(True, 0.75)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

Statistic = Callable[[Sequence[int]], "float | None"]
RESAMPLES = 1000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap interval.

    Attributes:
        value: the statistic on all samples (None when undefined there).
        low: lower bound of the interval (None without a defined resample).
        high: upper bound of the interval.
        n: number of samples.
        resamples: resamples on which the statistic was defined.
    """

    value: float | None
    low: float | None
    high: float | None
    n: int
    resamples: int

    def as_dict(self, digits: int = 6) -> dict[str, float | int | None]:
        """JSON-ready numbers, rounded so that the file reads well (rounding is deterministic)."""
        return {k: round(v, digits) if isinstance(v, float) else v for k, v in asdict(self).items()}


def _indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """``[resamples, n]`` resample indices drawn with replacement from one seeded generator."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _interval(values: list[float], confidence: float) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(np.asarray(values, dtype=float), [tail, 100 - tail])
    return float(low), float(high)


def _check(n: int, resamples: int, confidence: float) -> None:
    if resamples < 1:
        raise ValueError(f"bootstrap resamples must be >= 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"bootstrap confidence must lie in (0, 1), got {confidence}")
    if n < 0:
        raise ValueError(f"sample count must be >= 0, got {n}")


def bootstrap(stat: Statistic, n: int, resamples: int = RESAMPLES, confidence: float = CONFIDENCE,
              seed: int = 0) -> Interval:
    """Percentile bootstrap interval of ``stat`` over ``n`` samples.

    Args:
        stat: the metric of a list of sample indices (``range(n)`` gives the point estimate).
        n: number of samples.
        resamples: number of resamples (each of size ``n``, with replacement).
        confidence: interval mass (0.95: the 2.5th and 97.5th percentiles).
        seed: seeds the resampling; the same seed gives the same interval.

    Raises:
        ValueError: ``resamples < 1`` or ``confidence`` outside (0, 1).
    """
    _check(n, resamples, confidence)
    value = stat(list(range(n))) if n else None
    if not n:
        return Interval(None, None, None, 0, 0)
    values = [v for row in _indices(n, resamples, seed) if (v := stat(row.tolist())) is not None]
    low, high = _interval(values, confidence)
    return Interval(value, low, high, n, len(values))


def paired_bootstrap(stat_a: Statistic, stat_b: Statistic, n: int, resamples: int = RESAMPLES,
                     confidence: float = CONFIDENCE, seed: int = 0) -> Interval:
    """Interval of ``stat_b - stat_a`` where both statistics see the same resampled ids (a paired test).

    Both statistics index the same ``n`` shared samples; the difference is significant at ``confidence`` when the
    interval excludes 0.
    """
    _check(n, resamples, confidence)
    if not n:
        return Interval(None, None, None, 0, 0)

    def diff(idx: Sequence[int]) -> float | None:
        a, b = stat_a(idx), stat_b(idx)
        return None if a is None or b is None else b - a

    values = [v for row in _indices(n, resamples, seed) if (v := diff(row.tolist())) is not None]
    low, high = _interval(values, confidence)
    return Interval(diff(list(range(n))), low, high, n, len(values))
