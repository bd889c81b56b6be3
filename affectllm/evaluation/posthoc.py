"""Post-hoc confidence calibration: a monotone map from stated confidence to observed correctness.

Fitted with scikit-learn (isotonic regression or Platt scaling) on a held-out split and saved next to the model as
plain numbers (``calibration.json``), so inference applies it without pickles: isotonic maps by linear
interpolation between the fitted thresholds, Platt by ``sigmoid(a * c + b)``.

``source`` says what the map reads: ``stated`` (the confidence the LLM wrote) or ``evidence`` (the answer's
evidence, :mod:`affectllm.evaluation.evidence`, saved beside it as ``evidence.json``); a map of the evidence is
never applied to a stated number.
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
SOURCES = ("stated", "evidence")


@dataclass
class ConfidenceMap:
    """A fitted monotone map; ``apply(c)`` returns the calibrated confidence in [0, 1]."""

    method: str
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)
    a: float = 1.0
    b: float = 0.0
    n: int = 0
    source: str = "stated"

    @classmethod
    def fit(cls, confidences: Sequence[float], correct: Sequence[bool], method: str = "isotonic",
            source: str = "stated") -> ConfidenceMap:
        """Fit on paired (confidence, correct) samples; ``source`` names what the confidences are.

        Raises:
            ValueError: unknown method or source, fewer than 2 samples, or only one class of outcome for Platt
                scaling.
        """
        if method not in METHODS:
            raise ValueError(f"posthoc method {method!r}: expected one of {', '.join(METHODS)}")
        if source not in SOURCES:
            raise ValueError(f"posthoc input {source!r}: expected one of {', '.join(SOURCES)}")
        c = np.asarray(confidences, dtype=float)
        y = np.asarray(correct, dtype=float)
        if c.size < 2:
            raise ValueError(f"need at least 2 held-out samples to fit a calibration map, got {c.size}")
        if method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(c, y)
            return cls(method, x=iso.X_thresholds_.tolist(), y=iso.y_thresholds_.tolist(), n=int(c.size),
                       source=source)
        if len(set(y.tolist())) < 2:
            raise ValueError("Platt scaling needs both correct and wrong held-out answers")
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=1e4).fit(c.reshape(-1, 1), y)
        return cls(method, a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]), n=int(c.size), source=source)

    @property
    def reads_evidence(self) -> bool:
        """True when the map's input is the answer's evidence, not the stated confidence."""
        return self.source == "evidence"

    def apply(self, confidence: float | None) -> float | None:
        """Calibrated confidence of ``confidence`` (of the map's ``source``; None stays None)."""
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
