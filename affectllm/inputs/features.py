"""Encoder feature cache: raw outputs of the frozen pretrained towers, computed once per clip by ``data prep``.

``affectllm data prep MANIFEST --out DIR --cache-features --model MODEL_DIR`` runs :func:`encoder_feature_fn` on each
clip and writes ``DIR/features/<id>.npz`` with one ``[l, d]`` float32 array per tower modality the clip has
(``video`` ``[t, d]`` one vector per frame, ``audio`` ``[l, d]``, ``face`` ``[t, d]``), plus ``fingerprint`` (see
:func:`encoder_fingerprint`) and ``model`` (the directory the features came from).

Only the pretrained towers (video, audio, face) are cached: pooling, projection and the AU encoder come after the
cache because they train (the AU encoder has no pretrained weights and always trains; its input is already a small
per-frame vector). Training uses the cache (``ClipStore.features_for`` + ``SftCollator(model=...)``) only for
towers that are frozen, and refuses a cache whose fingerprint is not the trained model's.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import is_peft_model

from ..model.configuration import MEDIA_INPUT_NAMES
from ..model.processor import media_prefix
from ..types import MODALITY, MODALITY_TABLE, DecodedClip

# Modalities whose encoder is a pretrained tower (frozen by default): the ones the cache holds.
TOWER_MODALITIES: tuple[str, ...] = tuple(m.name for m in MODALITY_TABLE if m.feature_input)
# DecodedClip attribute and processor keyword argument per cached modality.
CLIP_ATTRS: dict[str, str] = {m: MODALITY[m].clip_attr for m in TOWER_MODALITIES}
PROCESSOR_ARGS: dict[str, str] = {m: MODALITY[m].processor_kwarg for m in TOWER_MODALITIES}
# Values sampled per parameter tensor for the fingerprint (evenly spaced over the flattened tensor).
SAMPLED_VALUES = 16


class FeatureCacheError(ValueError):
    """A feature cache (or the model meant to make one) does not fit the model; the message says what to re-run."""


# Processor settings that do not change the pixels/features the towers see (bookkeeping names).
_IGNORED_SETTINGS = ("processor_class", "image_processor_type", "feature_extractor_type", "auto_map")


def _base(model: Any) -> Any:
    """The AffectLlm model under a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if is_peft_model(model) else model


def tower_modalities(model: Any) -> list[str]:
    """Tower modalities the model has an encoder for, in canonical order."""
    encoders = _base(model).model.encoders
    return [m for m in TOWER_MODALITIES if m in encoders]


def frozen_towers(model: Any) -> list[str]:
    """Tower modalities whose encoder has no trainable parameter right now (their outputs may come from a cache)."""
    encoders = _base(model).model.encoders
    return [m for m in tower_modalities(model) if not any(p.requires_grad for p in encoders[m].parameters())]


def _media_settings(processor: Any) -> dict[str, Any]:
    """What the processor does to frames and audio before the towers see them (resize, normalise, log-mel)."""
    out: dict[str, Any] = {}
    for attr in ("image_processor", "face_image_processor", "feature_extractor"):
        part = getattr(processor, attr, None)
        if part is None:
            continue
        settings = part.to_dict()
        out[attr] = {k: v for k, v in settings.items() if not k.startswith("_") and k not in _IGNORED_SETTINGS
                     and not isinstance(v, np.ndarray)}  # Whisper's mel filter bank follows from its settings
    return out


def encoder_fingerprint(model: Any, processor: Any) -> str:
    """A short hash identifying what produced the cached features of ``model``'s towers.

    It covers, per tower modality: every parameter's name and shape and :data:`SAMPLED_VALUES` evenly spaced values,
    rounded to bfloat16 (so the same weights loaded in float32 or bfloat16 match, and any fine-tuning, which moves
    essentially every value, does not); and the processor's media settings (image size and normalisation, audio
    feature extraction). It reads a handful of values per tensor, so it costs milliseconds even for large towers.

    Args:
        model: an AffectLlm model (PEFT-wrapped or not).
        processor: its :class:`~affectllm.model.processor.AffectLlmProcessor`.

    Returns:
        16 hex characters.
    """
    encoders = _base(model).model.encoders
    digest = hashlib.sha256()
    for m in tower_modalities(model):
        digest.update(f"[{m}:{type(encoders[m]).__name__}]".encode())
        for name, param in encoders[m].named_parameters():
            flat = param.detach().reshape(-1)
            idx = torch.linspace(0, max(flat.numel() - 1, 0), min(flat.numel(), SAMPLED_VALUES), device=flat.device)
            values = flat[idx.long()].to(torch.bfloat16).float().cpu().numpy()
            digest.update(f"{name}{tuple(param.shape)}".encode())
            digest.update(values.tobytes())
    digest.update(json.dumps(_media_settings(processor), sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


class EncoderFeatureFn:
    """``DecodedClip -> {modality: [l, d] float32, "fingerprint", "model"}`` with one model's frozen towers.

    The model and processor load once, in float32, when the function is made (so a bad ``model_dir`` fails before
    any clip is decoded). Pickling (``data prep --workers N``) sends only the directory; each worker loads its own
    copy on its first clip and runs torch on one thread, since the workers are the parallelism.

    Args:
        model_dir: a saved affectllm model directory (any stage's ``output_dir``).
    """

    def __init__(self, model_dir: str) -> None:
        self.model_dir = str(model_dir)
        self._model: Any = None
        self._processor: Any = None
        self.fingerprint = ""
        self.modalities: list[str] = []
        self._load()

    def _load(self) -> None:
        if not (Path(self.model_dir) / "config.json").is_file():
            raise FeatureCacheError(f"cache_features: --model {self.model_dir!r} is not a model directory (no "
                                    "config.json); pass a saved affectllm model, e.g. a training stage's output_dir")
        from ..model.build import load_pretrained

        self._model, self._processor = load_pretrained(self.model_dir, dtype=torch.float32, device="cpu")
        self.modalities = tower_modalities(self._model)
        self.fingerprint = encoder_fingerprint(self._model, self._processor)

    def __getstate__(self) -> dict[str, Any]:
        return {"model_dir": self.model_dir, "fingerprint": self.fingerprint, "modalities": self.modalities}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _model=None, _processor=None)

    def __call__(self, clip: DecodedClip) -> dict[str, np.ndarray]:
        """Encoder features of the clip's present tower modalities.

        Args:
            clip: decoded media (frames ``[t, h, w, 3]``, audio ``[n]``, face crops ``[t, s, s, 3]``).

        Returns:
            ``{modality: [l, d] float32}`` for each present modality, ``fingerprint`` and ``model`` (0-d strings).
        """
        if self._model is None:  # first clip in a worker process
            torch.set_num_threads(1)
            self._load()
        out = {"fingerprint": np.asarray(self.fingerprint), "model": np.asarray(self.model_dir)}
        present = [m for m in self.modalities if getattr(clip, CLIP_ATTRS[m]) is not None]
        if not present:
            return out
        inputs = self._processor([media_prefix(present)],
                                 **{PROCESSOR_ARGS[m]: [getattr(clip, CLIP_ATTRS[m])] for m in present})
        with torch.inference_mode():
            for m in present:
                features = self._model.encode_media(m, inputs[MEDIA_INPUT_NAMES[m]])  # [1, l, d]
                out[m] = features[0].float().cpu().numpy()
        return out


def encoder_feature_fn(model_dir: str) -> EncoderFeatureFn:
    """The ``data prep`` feature hook for ``model_dir``'s frozen towers (see :class:`EncoderFeatureFn`)."""
    return EncoderFeatureFn(model_dir)


def read_cached(path: Path, expected: str) -> dict[str, np.ndarray]:
    """The tower features in one ``features/<id>.npz``, refusing features made by other encoders.

    Args:
        path: the clip's features file.
        expected: :func:`encoder_fingerprint` of the model being trained.

    Returns:
        ``{modality: [l, d] float32}``.

    Raises:
        FeatureCacheError: the file's fingerprint is missing or differs from ``expected``.
    """
    with np.load(path) as z:
        found = str(z["fingerprint"]) if "fingerprint" in z.files else "none"
        if found != expected:
            made_by = str(z["model"]) if "model" in z.files else "an unknown model"
            raise FeatureCacheError(
                f"{path}: stale encoder feature cache: made by {made_by} (encoder fingerprint {found}), but the model "
                f"being trained has encoder fingerprint {expected}. Re-run `affectllm data prep MANIFEST --out DIR "
                "--cache-features --model MODEL_DIR` with this model's directory into a fresh --out, or delete "
                f"{path.parent} to use live encoders.")
        return {m: z[m] for m in TOWER_MODALITIES if m in z.files}
