"""Temporal poolers: ``[u, l, d] -> [u, k, d]``, so each clip contributes a fixed number ``k`` of LLM tokens.

A pooler whose ``forward`` takes ``lengths`` (``[u]``, the valid frames of each clip) pools each clip over its own
frames in that one call. One call per batch matters under DeepSpeed ZeRO-3: every module call is a step of the
trace its parameter prefetcher follows, so calling a pooler once per clip (a different count on each rank when
ranks hold different numbers of clips) put the ranks' collectives out of step (a gloo size mismatch in a two-rank
SFT step).
"""

from __future__ import annotations

import functools
import inspect

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

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``[u, l, d] -> [u, k, d]``; with ``lengths [u]`` each clip is pooled over its first ``lengths[i]``
        inputs only."""
        if lengths is not None:
            return torch.cat([self._pool(f[None, :max(int(n), 1)]) for f, n in zip(x, lengths.tolist())])
        return self._pool(x)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
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

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``[u, l, d] -> [u, k, d]``; with ``lengths [u]`` the queries attend to each clip's first
        ``lengths[i]`` inputs only (a key padding mask)."""
        q = self.queries.unsqueeze(0).expand(x.shape[0], -1, -1).to(x.dtype)  # [u, k, d]
        pad = None
        if lengths is not None:
            pad = torch.arange(x.shape[1], device=x.device)[None, :] >= lengths.clamp(min=1).to(x.device)[:, None]
        out, _ = self.attn(q, x, x, key_padding_mask=pad, need_weights=False)
        return self.norm(out + q)


def takes_lengths(pooler: nn.Module) -> bool:
    """Whether ``pooler.forward`` takes ``lengths`` (a pooler registered by a user may not); looked up once per
    class (it is asked in every forward)."""
    return _forward_takes_lengths(type(pooler))


@functools.cache
def _forward_takes_lengths(cls: type) -> bool:
    return "lengths" in inspect.signature(cls.forward).parameters


def build_pooler(name: str, dim: int, num_tokens: int) -> nn.Module:
    """Instantiate the pooler registered as ``name``."""
    return POOLERS.get(name)(dim, num_tokens)
