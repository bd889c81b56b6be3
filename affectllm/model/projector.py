"""Projectors map pooled encoder features into the LLM's embedding space."""

from __future__ import annotations

import torch
from torch import nn
from transformers.activations import ACT2FN


class MlpProjector(nn.Module):
    """Optionally a LayerNorm over the input (``norm``), then ``depth`` linear layers with an activation between
    them: ``[.., d_in] -> [.., d_out]`` (depth 1 = linear). With ``extra_dim`` the first layer also reads a
    per-clip vector (a tower's readout, see :class:`~affectllm.model.encoders.tower.Readout`) beside every token,
    after the norm: its values are already bounded.

    The norm (as in Qwen2-VL's patch merger) centres and scales the tower's features per token: a ResNet's post-ReLU
    features are all positive, so without it the first layer's output is dominated by their common mean and every
    clip's tokens look alike to the LLM (the tiny preset's SFT fell from EW-F 68 to 51 when its towers became a
    ResNet, with the same training loss).
    """

    def __init__(self, in_dim: int, out_dim: int, depth: int = 2, act: str = "gelu", norm: bool = False,
                 extra_dim: int = 0) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"projector_depth must be >= 1, got {depth}")
        self.extra_dim = extra_dim
        self.norm = nn.LayerNorm(in_dim) if norm else nn.Identity()
        layers: list[nn.Module] = [nn.Linear(in_dim + extra_dim, out_dim)]
        for _ in range(depth - 1):
            layers += [ACT2FN[act], nn.Linear(out_dim, out_dim)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """``x [u, k, d_in]`` (+ ``extra [u, extra_dim]``, required when ``extra_dim``) -> ``[u, k, d_out]``."""
        x = self.norm(x)
        if self.extra_dim:
            if extra is None:
                raise ValueError(f"this projector reads a {self.extra_dim}-wide readout beside the features: "
                                 "none given")
            x = torch.cat([x, extra.to(x.dtype)[:, None, :].expand(-1, x.shape[1], -1)], dim=-1)
        return self.net(x)
