"""Media encoders, registered in :data:`affectllm.registry.ENCODERS` by the ``model_type`` of their config.

Every encoder maps one modality's processed tensors for ``u`` unique clips to features ``[u, l, d]`` where
``d == encoder.hidden_size``. Users plug in their own tower with ``ENCODERS.register("my_type", MyEncoder)``:
the class is built as ``MyEncoder(config)`` from the sub-config whose ``model_type`` is ``"my_type"``.
"""

from __future__ import annotations

from torch import nn
from transformers import PreTrainedConfig

from ...registry import ENCODERS
from .audio import SslAudioEncoder, WhisperAudioEncoder
from .face import AuEncoder
from .vision import VisionTower
from .words import WordsTower

for _name in ("clip_vision_model", "siglip_vision_model", "resnet"):
    ENCODERS.register(_name, VisionTower)
ENCODERS.register("whisper", WhisperAudioEncoder)
ENCODERS.register("affectllm_words", WordsTower)
for _name in ("hubert", "wavlm", "wav2vec2"):
    ENCODERS.register(_name, SslAudioEncoder)


def build_encoder(config: PreTrainedConfig) -> nn.Module:
    """Instantiate (random init) the registered encoder for ``config.model_type``."""
    return ENCODERS.get(config.model_type)(config)


__all__ = ["AuEncoder", "SslAudioEncoder", "VisionTower", "WhisperAudioEncoder", "WordsTower", "build_encoder"]
