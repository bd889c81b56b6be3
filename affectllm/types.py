"""Data contracts shared across the package (pure Python: no torch at import time).

The shapes of the things that flow through affectllm (DESIGN.md §1, §3):

* :data:`MODALITY_TABLE`: one row per modality with every name it goes by.
* :class:`Clip`: one manifest row, paths resolved.
* :class:`DecodedClip`: what ``media/`` makes of a clip (frames, audio, face crops, AU features).
* :class:`Prediction`: what :func:`affectllm.parsing.parse_completion` makes of model text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Modality:
    """Every name one modality goes by, in one row (read by the prompts, the processor, the model, the store).

    Attributes:
        name: the modality (``"video"``).
        placeholder: its prompt token (``"<video>"``), expanded by the processor to ``media_tokens`` copies.
        clip_attr: the :class:`DecodedClip` attribute holding its decoded media (``"frames"``).
        processor_kwarg: the processor's keyword for a batch of it (``"videos"``).
        model_input: the model's keyword for its processed media (``"pixel_values_videos"``).
        feature_input: the model's keyword for cached tower outputs (``"video_features"``); None when the
            modality has no cacheable pretrained tower (the AU encoder always trains).
        mask_input: the model's keyword for a padding mask over ``model_input`` (``"audio_attention_mask"``:
            waveforms of different lengths are padded per batch); None when the processor never pads it.
    """

    name: str
    placeholder: str
    clip_attr: str
    processor_kwarg: str
    model_input: str
    feature_input: str | None
    mask_input: str | None = None


# The media a clip can carry, in the order their placeholders appear in a prompt (``<video><audio><face><au>``):
# face crops and per-frame AU/landmark vectors are separate modalities with separate encoders.
MODALITY_TABLE: tuple[Modality, ...] = (
    Modality("video", "<video>", "frames", "videos", "pixel_values_videos", "video_features"),  # [u, t, 3, h, w]
    # audio_values: whisper [u, mel, n]; ssl [u, n] with audio_attention_mask [u, n] (1 = a real sample)
    Modality("audio", "<audio>", "audio", "audios", "audio_values", "audio_features", "audio_attention_mask"),
    Modality("face", "<face>", "faces", "faces", "face_pixel_values", "face_features"),  # [u, t, 3, s, s]
    Modality("au", "<au>", "au_features", "au_features", "au_features", None),  # [u, t, f]
    # the transcript as the words tower's input: its token ids [u, n] right-padded, words_mask [u, n]; the LLM
    # still reads the transcript as prompt text too
    Modality("words", "<words>", "transcript", "words", "words_ids", None, "words_mask"),
)
MODALITY: dict[str, Modality] = {m.name: m for m in MODALITY_TABLE}
MODALITIES: tuple[str, ...] = tuple(MODALITY)
FUSION_PLACEHOLDER = "<fusion>"
"""The pre-fusion token(s) the processor adds when a row has both video and audio."""
DEFAULT_MEDIA_TOKENS: dict[str, int] = {**{m.name: 8 for m in MODALITY_TABLE}, "fusion": 1}
"""LLM tokens per clip and modality (the pooler's output length) when a model config names none."""
AU_FEATURE_DIM = 353
"""Width of the per-frame AU/landmark vector that :mod:`affectllm.media.aus` writes and the AU encoder reads."""


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
        """Names of the modalities this clip carries, in :data:`MODALITIES` order (a blank transcript is none)."""
        return [m.name for m in MODALITY_TABLE if _carries(getattr(self, m.clip_attr))]


def _carries(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


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
class RewardFn(Protocol):
    """TRL's reward signature: ``(completions, **dataset_columns) -> list[float | None]``."""

    def __call__(self, completions: list[Any], **kwargs: Any) -> list[float | None]: ...
