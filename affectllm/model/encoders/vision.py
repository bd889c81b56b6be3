"""Vision towers (CLIP / SigLIP style) over sampled video frames or face crops."""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, CLIPVisionModel, PreTrainedConfig, SiglipVisionModel

from .tower import Tower


class VisionTower(Tower):
    """A HF vision tower applied frame by frame; patch tokens are mean-pooled to one vector per frame.

    Per-frame spatial pooling keeps the token budget linear in the number of frames; the temporal pooler that
    follows (see :mod:`affectllm.model.pooling`) decides how many LLM tokens the clip gets.
    """

    def __init__(self, config: PreTrainedConfig, tower: nn.Module | None = None) -> None:
        super().__init__(config, config.hidden_size)
        self.tower = tower if tower is not None else AutoModel.from_config(config)

    @classmethod
    def from_pretrained(cls, name_or_path: str, **kwargs) -> VisionTower:
        """Load a pretrained tower (hub id or local dir); CLIP/SigLIP full checkpoints give their vision part."""
        config = AutoConfig.from_pretrained(name_or_path)
        if hasattr(config, "vision_config"):  # a full CLIP/SigLIP checkpoint: keep its vision half only
            vision_cls = {"clip": CLIPVisionModel, "siglip": SiglipVisionModel}[config.model_type]
            tower = vision_cls.from_pretrained(name_or_path, **kwargs)
        else:
            tower = AutoModel.from_pretrained(name_or_path, **kwargs)
        return cls(tower.config, tower=tower)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Encode frames.

        Args:
            pixel_values: ``[u, t, 3, h, w]`` normalised frames of ``u`` clips.

        Returns:
            ``[u, t, d]``: one vector per frame.
        """
        u, t = pixel_values.shape[:2]
        flat = pixel_values.flatten(0, 1).to(self.tower.dtype)  # [u*t, 3, h, w]
        hidden = self.tower(pixel_values=flat).last_hidden_state  # [u*t, p, d]
        return hidden.mean(dim=1).view(u, t, -1)
