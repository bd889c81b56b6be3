"""The base of the pretrained-tower wrappers: each keeps its HF config and stays in eval mode while frozen."""

from __future__ import annotations

from torch import nn
from transformers import PreTrainedConfig


class Tower(nn.Module):
    """A pretrained encoder of one modality (video frames, face crops, audio) wrapped for the composite model.

    ``Trainer`` calls ``model.train()`` before every step, which would switch a frozen tower's dropout, LayerDrop
    and SpecAugment on (HuBERT/WavLM/wav2vec2 default to all three): its features would then be noisy, differ
    between two calls on one clip and from the eval-mode features of the cache and of inference. A tower without
    a trainable parameter therefore ignores ``train(True)``; one that trains follows it.

    Args:
        config: the tower's HF config (``vision_config`` / ``audio_config`` / ``face_config`` of the composite).
        hidden_size: width ``d`` of the features it returns.
    """

    def __init__(self, config: PreTrainedConfig, hidden_size: int) -> None:
        super().__init__()
        self.config = config
        self.hidden_size = hidden_size

    @property
    def trainable(self) -> bool:
        """True when any parameter requires grad (the trainable policy decides, see ``model/trainable.py``)."""
        return any(p.requires_grad for p in self.parameters())

    def train(self, mode: bool = True) -> Tower:
        return super().train(mode and self.trainable)
