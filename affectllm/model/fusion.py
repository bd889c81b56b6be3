"""Placing media features into the LLM's input embeddings, and the optional audio-video pre-fusion block."""

from __future__ import annotations

import torch
from torch import nn


def scatter_media(inputs_embeds: torch.Tensor, input_ids: torch.Tensor, token_id: int, features: torch.Tensor,
                  modality: str) -> torch.Tensor:
    """Write ``features`` into the positions of ``token_id`` (row-major order), checking the counts.

    Args:
        inputs_embeds: ``[b, s, D]`` token embeddings.
        input_ids: ``[b, s]``.
        token_id: the placeholder id of this modality.
        features: ``[r, k, D]``, one block of ``k`` tokens per placeholder run, in row order.
        modality: name used in the error message.

    Raises:
        ValueError: the number of placeholder tokens differs from the number of feature vectors.
    """
    mask = input_ids == token_id  # [b, s]
    n_tokens = int(mask.sum())
    n_feats = features.shape[0] * features.shape[1]
    if n_tokens != n_feats:
        raise ValueError(
            f"{modality}: {n_tokens} placeholder tokens in input_ids but {n_feats} feature vectors "
            f"({features.shape[0]} clips x {features.shape[1]} tokens); build inputs with AffectLlmProcessor so "
            "each placeholder is expanded to the model's media_tokens"
        )
    flat = features.reshape(-1, features.shape[-1]).to(inputs_embeds.dtype)
    return inputs_embeds.masked_scatter(mask.unsqueeze(-1).expand_as(inputs_embeds), flat)


def rows_with(input_ids: torch.Tensor, token_id: int) -> torch.Tensor:
    """Indices of the rows that contain ``token_id``: ``[b, s] -> [r]``."""
    return (input_ids == token_id).any(dim=1).nonzero(as_tuple=True)[0]


class PreFusion(nn.Module):
    """AffectGPT-style pre-fusion: ``k`` learned queries attend jointly over a clip's video and audio tokens.

    It gives the LLM tokens where the two streams are already mixed, before any language reasoning.
    """

    def __init__(self, dim: int, num_tokens: int) -> None:
        super().__init__()
        heads = next(h for h in (8, 4, 2, 1) if dim % h == 0)
        self.queries = nn.Parameter(torch.zeros(num_tokens, dim))
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """``video [r, kv, D]``, ``audio [r, ka, D]`` -> ``[r, k, D]``."""
        context = torch.cat([video, audio], dim=1)  # [r, kv+ka, D]
        q = self.queries.unsqueeze(0).expand(context.shape[0], -1, -1).to(context.dtype)
        out, _ = self.attn(q, context, context, need_weights=False)
        return self.norm(out + q)
