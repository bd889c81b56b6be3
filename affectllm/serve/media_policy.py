"""How a model's clips are decoded at inference: the frame policy of its training and ``data prep``'s pipeline.

A :class:`MediaPolicy` is small and picklable, so label workers (a torch DataLoader's processes, Ray actors) decode
with it without ever holding the model. It runs :func:`affectllm.media.pipeline.analyze_clip` (decode, sample, and
face crops + AU features when the model has face/AU encoders), the same path ``affectllm data prep`` runs, with
``data prep``'s defaults for everything the saved recipe does not record.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from ..media.decode import DecodeConfig, MediaError
from ..media.sampling import SamplingConfig
from ..types import Clip, DecodedClip

log = logging.getLogger(__name__)
# mediapipe graphs do not pickle and are slow to start: one analyzer per process and crop size, kept out of the
# (picklable) policy so DataLoader workers and Ray actors each start their own.
_ANALYZERS: dict[int, Any] = {}

PREP_MAX_SIDE = 448
"""``data prep --max-side``'s default: frames are stored at most this many pixels on their longer side."""
PREP_FACE_SIZE = 112
"""``data prep --face-size``'s default: side of the aligned face crops."""


@dataclass
class MediaPolicy:
    """The media policy of one model (part of the label fingerprint).

    Attributes:
        num_frames: frames sampled uniformly per clip (the saved recipe's ``data.num_frames``, else 8).
        faces: track the face and estimate AUs (the model has a face or AU encoder and mediapipe is installed).
        max_side: longer side of decoded frames in pixels.
        face_size: side of the aligned face crops.
        backend: video backend tried first (the other is the fallback).
    """

    num_frames: int = 8
    faces: bool = False
    max_side: int | None = PREP_MAX_SIDE
    face_size: int = PREP_FACE_SIZE
    backend: str = "decord"

    def describe(self) -> dict[str, Any]:
        """The settings as plain data (what the fingerprint hashes)."""
        return asdict(self)

    def decode_config(self) -> DecodeConfig:
        """The :class:`~affectllm.media.decode.DecodeConfig` ``data prep`` would use with these settings."""
        return DecodeConfig(backend=self.backend, max_side=self.max_side,
                            sampling=SamplingConfig(strategy="uniform", num_frames=self.num_frames))

    def analyzer(self) -> Any:
        """This process's face analyzer for the crop size (started on first use), or None when faces are off."""
        if not self.faces:
            return None
        if self.face_size not in _ANALYZERS:
            from ..media.faces import FaceAnalyzer, FaceConfig

            _ANALYZERS[self.face_size] = FaceAnalyzer(FaceConfig(crop_size=self.face_size))
        return _ANALYZERS[self.face_size]

    def decode(self, clip: Clip) -> DecodedClip:
        """Decode ``clip`` (frames, audio, face crops and AU features as the model takes them).

        Raises:
            MediaError: a media file is missing, over the limits or undecodable (the message names the file).
        """
        if not (clip.video or clip.audio):
            return DecodedClip(id=clip.id, transcript=clip.transcript)
        from ..media.pipeline import analyze_clip

        return analyze_clip(clip, self.decode_config(), self.analyzer()).decoded


def faces_available() -> bool:
    """True when mediapipe (the face tracker ``data prep`` uses) can be imported."""
    from ..media.faces import FaceBackendError, _import_mediapipe

    try:
        _import_mediapipe()
    except FaceBackendError as err:
        log.warning("face crops and AU features are off: %s", err)
        return False
    return True


Decoded = tuple[Clip, DecodedClip | None, str | None]


class ChunkDecoder:
    """A map-style dataset: item ``k`` = chunk ``k`` decoded, ``[(clip, decoded or None, error or None), ...]``.

    Runs in DataLoader workers; it lives here, beside the policy and away from torch and transformers, so a worker
    unpickles it without importing the model stack."""

    def __init__(self, chunks: list[list[Clip]], media: MediaPolicy) -> None:
        self.chunks = chunks
        self.media = media

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, k: int) -> list[Decoded]:
        out: list[Decoded] = []
        for clip in self.chunks[k]:
            try:
                out.append((clip, self.media.decode(clip), None))
            except Exception as err:  # noqa: BLE001 - a bad clip is its row's error, the job goes on
                why = str(err) if isinstance(err, MediaError) else \
                    f"{type(err).__name__}: {err} (while decoding {clip.video or clip.audio})"
                out.append((clip, None, why))
        return out
