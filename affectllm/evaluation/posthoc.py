"""Post-hoc confidence calibration: a monotone map from stated confidence to observed correctness.

Fitted with scikit-learn (isotonic regression or Platt scaling) on a held-out split and saved next to the model as
plain numbers (``calibration.json``), so inference applies it without pickles: isotonic maps by linear
interpolation between the fitted thresholds, Platt by ``sigmoid(a * c + b)``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..jsonl import write_text

FILE = "calibration.json"
METHODS = ("isotonic", "platt")


@dataclass
class ConfidenceMap:
    """A fitted monotone map; ``apply(c)`` returns the calibrated confidence in [0, 1]."""

    method: str
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)
    a: float = 1.0
    b: float = 0.0
    n: int = 0

    @classmethod
    def fit(cls, confidences: Sequence[float], correct: Sequence[bool], method: str = "isotonic") -> ConfidenceMap:
        """Fit on paired (stated confidence, correct) samples.

        Raises:
            ValueError: unknown method, fewer than 2 samples, or only one class of outcome for Platt scaling.
        """
        if method not in METHODS:
            raise ValueError(f"posthoc method {method!r}: expected one of {', '.join(METHODS)}")
        c = np.asarray(confidences, dtype=float)
        y = np.asarray(correct, dtype=float)
        if c.size < 2:
            raise ValueError(f"need at least 2 held-out samples to fit a calibration map, got {c.size}")
        if method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(c, y)
            return cls(method, x=iso.X_thresholds_.tolist(), y=iso.y_thresholds_.tolist(), n=int(c.size))
        if len(set(y.tolist())) < 2:
            raise ValueError("Platt scaling needs both correct and wrong held-out answers")
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=1e4).fit(c.reshape(-1, 1), y)
        return cls(method, a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]), n=int(c.size))

    def apply(self, confidence: float | None) -> float | None:
        """Calibrated confidence (None stays None)."""
        if confidence is None:
            return None
        if self.method == "isotonic":
            if not self.x:
                return confidence
            return float(np.interp(confidence, self.x, self.y))
        return 1.0 / (1.0 + math.exp(-(self.a * confidence + self.b)))

    def save(self, model_dir: str | Path) -> Path:
        """Write ``calibration.json`` atomically into ``model_dir``."""
        path = Path(model_dir) / FILE
        write_text(path, json.dumps(asdict(self), indent=2))
        return path

    @classmethod
    def load(cls, model_dir: str | Path) -> ConfidenceMap | None:
        """The map saved with a model, or None when it has none."""
        path = Path(model_dir) / FILE
        if not path.is_file():
            return None
        return cls(**json.loads(path.read_text()))
