"""Decoded media per clip id: a ``data prep`` folder (and its encoder-feature cache) or live decoding."""

from __future__ import annotations

import logging
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from ..jsonl import iter_jsonl
from ..types import Clip, DecodedClip

log = logging.getLogger(__name__)


UNREADABLE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)
"""What reading a damaged or missing ``arrays/<id>.npz`` raises."""


def read_arrays(path: Path, clip: Clip) -> DecodedClip:
    """The decoded media ``data prep`` saved for ``clip`` in one ``arrays/<id>.npz``, as training reads them: face
    crops and AU features only where a face was found, the transcript from the manifest row.

    Raises:
        One of :data:`UNREADABLE` when the file is missing or damaged.
    """
    with np.load(path) as z:
        found = z["face_found"] if "face_found" in z else None
        has_face = found is not None and bool(np.any(found))
        return DecodedClip(
            id=clip.id, frames=z["frames"] if "frames" in z else None,
            audio=z["audio"] if "audio" in z else None,
            sample_rate=int(z["sample_rate"]) if "sample_rate" in z else 16000,
            faces=z["faces"] if has_face and "faces" in z else None,
            au_features=z["au_features"] if has_face and "au_features" in z else None,
            frame_times=z["frame_times"] if "frame_times" in z else None,
            transcript=clip.transcript)


class ClipStore:
    """Decoded media per clip id: read from a ``data prep`` folder when it has the clip, decoded live otherwise.

    Live decoding takes frames and audio only (face crops and AU features come from ``data prep``, which runs the
    face pipeline once per clip). Results are kept in a small LRU cache; a clip that fails to decode is logged and
    served without its media (text only) so a batch goes on.

    Args:
        prep_dir: a folder written by ``affectllm data prep`` (its ``prep.jsonl``, ``arrays/`` and, with
            ``--cache-features``, ``features/``), or None.
        num_frames: frames sampled uniformly per clip when decoding live.
        cache_size: clips kept in memory.
    """

    def __init__(self, prep_dir: str | None = None, num_frames: int = 8, cache_size: int = 512) -> None:
        self.prep_dir = Path(prep_dir) if prep_dir else None
        self.num_frames = num_frames
        self.cache_size = cache_size
        self._cache: OrderedDict[str, DecodedClip] = OrderedDict()
        self._prep: dict[str, dict[str, Any]] = self._read_prep() if self.prep_dir else {}
        self.failures: dict[str, str] = {}
        self._fingerprint: str | None = None
        self._features: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()

    def features_for(self, model: Any, processor: Any) -> bool:
        """Serve cached encoder features made by ``model``'s encoders (checked by fingerprint).

        Args:
            model: the model being trained (PEFT-wrapped or not).
            processor: its processor (its media settings are part of the fingerprint).

        Returns:
            True when the prep folder has cached features (checked: the first clip's fingerprint matches now, every
            other clip's when it is read); False when it has none (live encoders).

        Raises:
            FeatureCacheError: the cache was made by other encoders or media settings (a stale cache).
        """
        rows = [r for r in self._prep.values() if r.get("features")]
        if not rows:
            return False
        from .features import encoder_fingerprint

        self._fingerprint = encoder_fingerprint(model, processor)
        self._features.clear()
        self.features(str(rows[0]["id"]))
        return True

    def features(self, clip_id: str) -> dict[str, np.ndarray]:
        """Cached encoder features of a clip, ``{modality: [l, d]}``; empty when there are none or not enabled.

        Raises:
            FeatureCacheError: the clip's features were made by other encoders than the model passed to
                :meth:`features_for`.
        """
        row = self._prep.get(clip_id)
        if self._fingerprint is None or row is None or not row.get("features"):
            return {}
        if clip_id in self._features:
            self._features.move_to_end(clip_id)
            return self._features[clip_id]
        path = self.prep_dir / row["features"]
        if not path.is_file():  # features/ deleted to fall back to live encoders
            return {}
        from .features import read_cached

        feats = read_cached(path, self._fingerprint)
        self._features[clip_id] = feats
        if len(self._features) > self.cache_size:
            self._features.popitem(last=False)
        return feats

    def _read_prep(self) -> dict[str, dict[str, Any]]:
        path = self.prep_dir / "prep.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no prep.jsonl; run `affectllm data prep MANIFEST --out {self.prep_dir}`")
        rows = {}
        for number, row, error in iter_jsonl(path):
            if error is not None:  # e.g. a torn last line from a killed prep run: that clip decodes live
                log.warning("%s:%d: %s (%s); clip decoded live instead", path, number, error.message, error.hint)
            elif isinstance(row, dict) and row.get("arrays") and not row.get("error"):
                rows[str(row["id"])] = row
        return rows

    def get(self, clip: Clip) -> DecodedClip:
        """The decoded media of ``clip`` (modalities it lacks are None)."""
        if clip.id in self._cache:
            self._cache.move_to_end(clip.id)
            return self._cache[clip.id]
        decoded = self._load(clip)
        self._cache[clip.id] = decoded
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return decoded

    def _read_arrays(self, clip: Clip, row: dict[str, Any]) -> DecodedClip | None:
        """The clip's arrays from the prep folder; None (logged) when the file is damaged or gone."""
        path = self.prep_dir / row["arrays"]
        try:
            return read_arrays(path, clip)
        except UNREADABLE as err:
            log.warning("clip %s: %s is unreadable (%s: %s); decoding the clip live instead (delete its row from "
                        "prep.jsonl and run data prep again to repair the folder)", clip.id, path, type(err).__name__,
                        err)
            return None

    def _load(self, clip: Clip) -> DecodedClip:
        row = self._prep.get(clip.id)
        decoded = self._read_arrays(clip, row) if row is not None else None
        if decoded is not None:
            return decoded
        if not (clip.video or clip.audio):
            return DecodedClip(id=clip.id, transcript=clip.transcript)
        from ..media.decode import DecodeConfig, MediaError, decode_clip
        from ..media.sampling import SamplingConfig

        cfg = DecodeConfig(sampling=SamplingConfig(num_frames=self.num_frames, repeat=True))
        try:
            return decode_clip(clip, cfg)
        except (MediaError, OSError) as err:
            self.failures[clip.id] = str(err)
            log.warning("clip %s: media not decodable, using its text only: %s", clip.id, err)
            return DecodedClip(id=clip.id, transcript=clip.transcript)
