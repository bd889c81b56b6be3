"""Vision towers over sampled video frames or face crops, with per-frame spatial pooling: transformers
(CLIP / SigLIP vision models, patch tokens ``[n, p, d]``) and convolutional backbones (transformers' ResNet,
feature maps ``[n, C, h, w]``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, CLIPVisionModel, PreTrainedConfig, SiglipVisionModel

from .tower import Tower

SPATIAL_POOLING = ("grid", "cls", "mean")
CONV_TYPES = ("resnet",)
DEFAULT_SPATIAL = "grid"
DEFAULT_GRID = 2
# A saved tower config without the field was trained with the patch mean (the only pooling before "grid"): it keeps
# it, so an older checkpoint reads the features it was trained on.
LEGACY_SPATIAL = "mean"


def is_conv(config: PreTrainedConfig) -> bool:
    """True for a convolutional backbone (transformers' ResNet: a feature map, no patch tokens)."""
    return config.model_type in CONV_TYPES


def channel_width(config: PreTrainedConfig) -> int:
    """Width ``d`` of one patch token or feature-map cell: ``hidden_size``, or a convolutional backbone's last
    ``hidden_sizes`` entry."""
    return config.hidden_sizes[-1] if is_conv(config) else config.hidden_size


def feature_side(config: PreTrainedConfig) -> int:
    """Cells per side of the tower's last feature map: patches per side (transformers) or the input side over the
    backbone's total stride (convolutional: a stride-4 stem, then stride 2 per later stage, and per the first when
    it downsamples). A convolutional config carries the ``image_size`` its processor resizes to."""
    if not is_conv(config):
        return config.image_size // config.patch_size
    first = 2 if getattr(config, "downsample_in_first_stage", False) else 1
    stride = 4 * 2 ** (len(config.hidden_sizes) - 1) * first
    return max(1, config.image_size // stride)


def set_spatial_pooling(config: PreTrainedConfig, pooling: str = DEFAULT_SPATIAL, grid: int = DEFAULT_GRID) -> None:
    """Write the spatial pooling of a vision tower into its config (saved with the model's ``config.json``).

    Raises:
        ValueError: unknown ``pooling`` or a grid that is not between 1 and the tower's patches (or feature-map
            cells) per side.
    """
    if pooling not in SPATIAL_POOLING:
        raise ValueError(f"spatial pooling {pooling!r}: expected one of {', '.join(SPATIAL_POOLING)}")
    side = feature_side(config)
    if pooling == "grid" and not 1 <= grid <= side:
        raise ValueError(f"spatial grid {grid}: must be 1..{side} (the tower has {side}x{side} patches)")
    config.spatial_pooling = pooling
    config.spatial_grid = int(grid)


class VisionTower(Tower):
    """A HF vision tower applied frame by frame, each frame pooled to one vector by ``config.spatial_pooling``.

    * ``grid`` (default): the patch tokens' ``s x s`` layout is average-pooled to a ``g x g`` grid
      (``config.spatial_grid``) and the ``g*g`` cell vectors are concatenated, so where on the face something moved
      survives; the feature width is ``g*g*d``.
    * ``cls``: CLIP's class token, SigLIP's attention-pooled head output (``pooler_output``), a convolutional
      backbone's pooled output; width ``d``.
    * ``mean``: the mean over patch tokens (or feature-map cells); width ``d``.

    ``d`` is the transformer's ``hidden_size`` or the convolutional backbone's last ``hidden_sizes`` entry.

    One vector per frame keeps the token budget linear in the number of frames; the temporal pooler that follows
    (see :mod:`affectllm.model.pooling`) decides how many LLM tokens the clip gets, whatever the pooling here.
    """

    def __init__(self, config: PreTrainedConfig, tower: nn.Module | None = None) -> None:
        self.spatial = getattr(config, "spatial_pooling", LEGACY_SPATIAL)
        self.grid = int(getattr(config, "spatial_grid", DEFAULT_GRID))
        cells = self.grid * self.grid if self.spatial == "grid" else 1
        self.conv = is_conv(config)
        super().__init__(config, channel_width(config) * cells)
        if self.conv:  # no attention in a ResNet; the composite's attn_implementation (sdpa) is refused by it
            config._attn_implementation = "eager"
        self.tower = tower if tower is not None else AutoModel.from_config(config)
        self.side = feature_side(config)

    @classmethod
    def from_pretrained(cls, name_or_path: str, spatial_pooling: str = DEFAULT_SPATIAL,
                        spatial_grid: int = DEFAULT_GRID, **kwargs) -> VisionTower:
        """Load a pretrained tower (hub id or local dir); CLIP/SigLIP full checkpoints give their vision part."""
        config = AutoConfig.from_pretrained(name_or_path)
        if hasattr(config, "vision_config"):  # a full CLIP/SigLIP checkpoint: keep its vision half only
            vision_cls = {"clip": CLIPVisionModel, "siglip": SiglipVisionModel}[config.model_type]
            tower = vision_cls.from_pretrained(name_or_path, **kwargs)
        else:
            tower = AutoModel.from_pretrained(name_or_path, **kwargs)
        if is_conv(tower.config) and not hasattr(tower.config, "image_size"):
            tower.config.image_size = 224  # ImageNet backbones' input side (their processors resize to it)
        set_spatial_pooling(tower.config, spatial_pooling, spatial_grid)
        return cls(tower.config, tower=tower)

    def pool_frames(self, out: object) -> torch.Tensor:
        """A tower output over ``n`` frames -> ``[n, width]`` by the configured spatial pooling."""
        hidden = out.last_hidden_state  # [n, p, d]; CLIP: p = 1 + s*s (class token first), SigLIP: p = s*s
        if self.conv:  # [n, d, h, w] feature map
            if self.spatial == "grid":
                return F.adaptive_avg_pool2d(hidden, self.grid).flatten(2).transpose(1, 2).reshape(len(hidden), -1)
            return hidden.mean(dim=(2, 3))  # cls and mean: a ResNet's pooled output is this mean
        if self.spatial == "cls":
            return out.pooler_output if self.config.model_type.startswith("siglip") else hidden[:, 0]
        patches = hidden[:, -self.side * self.side:]  # [n, s*s, d]
        if self.spatial == "mean":
            return patches.mean(dim=1)
        n, _, d = patches.shape
        grid = patches.transpose(1, 2).reshape(n, d, self.side, self.side)  # row-major patch order
        cells = F.adaptive_avg_pool2d(grid, self.grid)  # [n, d, g, g]
        return cells.flatten(2).transpose(1, 2).reshape(n, -1)  # [n, g*g*d], cell-major

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Encode frames.

        Args:
            pixel_values: ``[u, t, 3, h, w]`` normalised frames of ``u`` clips.

        Returns:
            ``[u, t, width]``: one vector per frame (``width = self.hidden_size``).
        """
        u, t = pixel_values.shape[:2]
        flat = pixel_values.flatten(0, 1).to(self.tower.dtype)  # [u*t, 3, h, w]
        return self.pool_frames(self.tower(pixel_values=flat)).view(u, t, -1)
