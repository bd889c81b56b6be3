"""The AU-vector encoder: per-frame AU/landmark vectors go through :class:`AuEncoder`, a small temporal network
trained with the projectors (it has no pretrained weights). Face crops go through a
:class:`~affectllm.model.encoders.vision.VisionTower`."""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedConfig

from .vision import channel_width


class AuEncoder(nn.Module):
    """Per-frame AU/landmark feature vectors -> per-frame embeddings.

    LayerNorm over the raw features (their scales differ: intensities 0..1, landmark offsets), a linear map, and a
    depth-wise temporal convolution that lets each frame see its neighbours (onsets and apexes are temporal cues).
    """

    def __init__(self, feature_dim: int, hidden_size: int = 64) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.norm = nn.LayerNorm(feature_dim)
        self.proj = nn.Linear(feature_dim, hidden_size)
        self.act = nn.GELU()
        self.temporal = nn.Conv1d(hidden_size, hidden_size, kernel_size=3, padding=1, groups=hidden_size)

    @classmethod
    def from_config(cls, config: PreTrainedConfig) -> AuEncoder:
        """Build from a composite config's ``au_feature_dim`` (hidden size follows the face/vision tower)."""
        tower = config.face_config or config.vision_config
        return cls(config.au_feature_dim, 64 if tower is None else channel_width(tower))

    def forward(self, au_features: torch.Tensor) -> torch.Tensor:
        """``[u, t, f]`` -> ``[u, t, d]``."""
        x = self.act(self.proj(self.norm(au_features.to(self.proj.weight.dtype))))  # [u, t, d]
        return x + self.temporal(x.transpose(1, 2)).transpose(1, 2)
