"""One clip end to end: decode, sample, track the face, estimate AUs, fill a :class:`~affectllm.types.DecodedClip`.

Shared by ``affectllm data prep`` and by anything that turns a user's clip into model inputs (chat, label), so
both see the same frames, crops and AU features.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..types import Clip, DecodedClip
from .aus import AUResult, au_features, estimate_aus
from .decode import DecodeConfig, DecodeInfo, decode_clip_info
from .faces import FaceAnalyzer, FaceTrack


@dataclass
class ClipAnalysis:
    """Everything learned about one clip.

    Attributes:
        decoded: frames ``[t, h, w, 3]``, audio ``[n]``, face crops ``[t, s, s, 3]`` (None when no frame has a
            face; black crops in frames without one), AU features ``[t, FEATURE_DIM]`` (None without any mesh).
        info: probe, backend, recovered problems.
        track: the tracked face (None without video or face analysis).
        aus: AU estimates (None without video or face analysis).
    """

    decoded: DecodedClip
    info: DecodeInfo
    track: FaceTrack | None = None
    aus: AUResult | None = None


def analyze_clip(
    clip: Clip | str | os.PathLike[str],
    decode_cfg: DecodeConfig | None = None,
    faces: FaceAnalyzer | None = None,
    neutral: np.ndarray | str | None = "auto",
) -> ClipAnalysis:
    """Decode a clip and, when a :class:`FaceAnalyzer` is given, track its face and estimate AUs.

    Args:
        clip: a :class:`~affectllm.types.Clip` or a bare video path.
        decode_cfg: decoding configuration.
        faces: a started analyzer (reuse one per process); None skips faces and AUs.
        neutral: AU baseline, see :func:`affectllm.media.aus.estimate_aus`.

    Returns:
        A :class:`ClipAnalysis`.
    """
    decoded, info = decode_clip_info(clip, decode_cfg)
    result = ClipAnalysis(decoded=decoded, info=info)
    if faces is None or decoded.frames is None:
        return result
    result.track = track = faces.track(decoded.frames)
    result.aus = aus = estimate_aus(track.landmarks, neutral=neutral)
    if track.status == "ok":
        decoded.faces = track.crops
    if aus.valid.any():
        decoded.au_features = au_features(track.landmarks, aus)
    return result
