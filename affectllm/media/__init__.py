"""Media: decode clips, sample frames, read audio, track faces, estimate AUs (no torch here).

* :mod:`.sampling`: which frames to take (pure index math).
* :mod:`.decode`: probe, limits, decord/PyAV video with automatic fallback, 16 kHz mono audio.
* :mod:`.faces`: mediapipe detection, largest-face tracking, 478-point mesh, aligned crops.
* :mod:`.aus`: AU intensities from mesh geometry and the per-frame face/AU feature vector.
* :mod:`.pipeline`: all of it for one clip, filling a :class:`~affectllm.types.DecodedClip`.

Submodules import their libraries (PyAV, OpenCV, mediapipe) on use: ``import affectllm.media`` is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SamplingConfig": "sampling",
    "sample_indices": "sampling",
    "uniform_indices": "sampling",
    "fps_indices": "sampling",
    "segment_indices": "sampling",
    "DecodeConfig": "decode",
    "MediaInfo": "decode",
    "MediaError": "decode",
    "MediaLimitError": "decode",
    "MediaDecodeError": "decode",
    "probe": "decode",
    "decode_video": "decode",
    "decode_audio": "decode",
    "decode_clip": "decode",
    "decode_clip_info": "decode",
    "FaceConfig": "faces",
    "FaceAnalyzer": "faces",
    "FaceTrack": "faces",
    "FaceBackendError": "faces",
    "AU_CODES": "aus",
    "FEATURE_DIM": "aus",
    "estimate_aus": "aus",
    "au_features": "aus",
    "AUResult": "aus",
    "analyze_clip": "pipeline",
    "ClipAnalysis": "pipeline",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'affectllm.media' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
