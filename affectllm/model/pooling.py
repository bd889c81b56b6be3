"""Temporal poolers: ``[u, l, d] -> [u, k, d]``, so each clip contributes a fixed number ``k`` of LLM tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import POOLERS


@POOLERS.register("mean")
class MeanPooler(nn.Module):
    """Parameter-free: average ``l`` inputs into ``k`` contiguous segments (adaptive average pooling).

    When ``l < k`` inputs are repeated (nearest), so short clips still fill their token budget.
    """

    def __init__(self, dim: int, num_tokens: int) -> None:
        super().__init__()
        self.num_tokens = num_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[u, l, d] -> [u, k, d]``."""
        if x.shape[1] < self.num_tokens:
            return F.interpolate(x.transpose(1, 2), size=self.num_tokens, mode="nearest").transpose(1, 2)
        return F.adaptive_avg_pool1d(x.transpose(1, 2), self.num_tokens).transpose(1, 2)


@POOLERS.register("attention")
class AttentionPooler(nn.Module):
    """``k`` learned queries cross-attend over the ``l`` inputs (a one-layer Q-Former)."""

    def __init__(self, dim: int, num_tokens: int, num_heads: int | None = None) -> None:
        super().__init__()
        heads = num_heads or next(h for h in (8, 4, 2, 1) if dim % h == 0)
        self.queries = nn.Parameter(torch.zeros(num_tokens, dim))
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[u, l, d] -> [u, k, d]``."""
        q = self.queries.unsqueeze(0).expand(x.shape[0], -1, -1).to(x.dtype)  # [u, k, d]
        out, _ = self.attn(q, x, x, need_weights=False)
        return self.norm(out + q)


def build_pooler(name: str, dim: int, num_tokens: int) -> nn.Module:
    """Instantiate the pooler registered as ``name``."""
    return POOLERS.get(name)(dim, num_tokens)
