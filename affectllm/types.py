"""Data contracts shared across the package (pure Python: no torch at import time).

The shapes of the things that flow through affectllm (DESIGN.md §1, §3):

* :class:`Clip`: one manifest row, paths resolved.
* :class:`DecodedClip`: what ``media/`` makes of a clip (frames, audio, face crops, AU features).
* :class:`Sample`: a clip plus the text the model sees and should write.
* :class:`Prediction`: what :func:`affectllm.parsing.parse_completion` makes of model text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

# The media a clip can carry, in the order their placeholders appear in a prompt (``<video><audio><face><au>``):
# face crops and per-frame AU/landmark vectors are separate modalities with separate encoders.
MODALITIES: tuple[str, ...] = ("video", "audio", "face", "au")


@dataclass
class Clip:
    """One manifest row (DESIGN.md §3), media paths already resolved against the manifest's folder."""

    id: str
    video: str | None = None
    audio: str | None = None
    transcript: str | None = None
    caption: str | None = None
    labels: list[str] | None = None
    emotion: str | None = None
    aus: list[str] | None = None
    valence: float | None = None
    arousal: float | None = None
    split: str | None = None
    source: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class DecodedClip:
    """Decoded media of one clip; a missing modality is ``None`` (never zeros pretending to be data).

    Attributes:
        frames: uint8 RGB frames, numpy ``[t, h, w, 3]``.
        audio: float32 mono waveform at ``sample_rate``, numpy ``[n]``.
        faces: uint8 RGB aligned face crops, numpy ``[t, s, s, 3]``.
        au_features: float32 per-frame AU/landmark feature vectors, numpy ``[t, f]``.
        frame_times: seconds of each sampled frame, ``[t]``.
    """

    id: str
    frames: Any = None
    audio: Any = None
    sample_rate: int = 16000
    faces: Any = None
    au_features: Any = None
    frame_times: Any = None
    transcript: str | None = None

    def present(self) -> list[str]:
        """Names of the modalities this clip carries, in :data:`MODALITIES` order."""
        has = {"video": self.frames is not None, "audio": self.audio is not None,
               "face": self.faces is not None, "au": self.au_features is not None}
        return [m for m in MODALITIES if has[m]]


@dataclass
class Sample:
    """A training/inference example: decoded media plus prompt and (optional) target text."""

    clip: DecodedClip
    prompt: str
    target: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Prediction:
    """Parsed model completion (``<think>…</think><answer>…</answer><confidence>…</confidence>``).

    Attributes:
        think: text inside ``<think>`` ("" if absent).
        answer: raw text inside ``<answer>`` ("" if absent).
        labels: normalised, de-duplicated labels from the answer, in order.
        confidence: stated confidence in [0, 1], or None when absent or unreadable.
        aus: AU codes asserted in the reasoning (``"AU12"``), negated mentions excluded, sorted by number.
        format_ok: True when the completion follows the format exactly.
        errors: reasons the format is not ok (empty when ``format_ok``).
        raw: the text as given.
    """

    think: str = ""
    answer: str = ""
    labels: list[str] = field(default_factory=list)
    confidence: float | None = None
    aus: list[str] = field(default_factory=list)
    format_ok: bool = False
    errors: list[str] = field(default_factory=list)
    raw: str = ""


@runtime_checkable
class Encoder(Protocol):
    """A media encoder (a ``torch.nn.Module`` in practice).

    ``forward(inputs) -> features``: inputs are one modality's processed tensors for ``n`` clips; features are
    ``[n, l, d]`` with ``d == hidden_size``.
    """

    hidden_size: int

    def __call__(self, inputs: Any) -> Any: ...


@runtime_checkable
class RewardFn(Protocol):
    """TRL's reward signature: ``(completions, **dataset_columns) -> list[float | None]``."""

    def __call__(self, completions: list[Any], **kwargs: Any) -> list[float | None]: ...
