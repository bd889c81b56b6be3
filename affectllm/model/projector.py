"""Projectors map pooled encoder features into the LLM's embedding space."""

from __future__ import annotations

import torch
from torch import nn
from transformers.activations import ACT2FN


class MlpProjector(nn.Module):
    """``depth`` linear layers with an activation between them: ``[.., d_in] -> [.., d_out]`` (depth 1 = linear)."""

    def __init__(self, in_dim: int, out_dim: int, depth: int = 2, act: str = "gelu") -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"projector_depth must be >= 1, got {depth}")
        layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
        for _ in range(depth - 1):
            layers += [ACT2FN[act], nn.Linear(out_dim, out_dim)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
