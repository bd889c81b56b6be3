"""Placing media features into the LLM's input embeddings, and the optional audio-video pre-fusion block."""

from __future__ import annotations

import torch

from .pooling import AttentionPooler


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


class PreFusion(AttentionPooler):
    """AffectGPT-style pre-fusion: ``k`` learned queries attend jointly over a clip's video and audio tokens.

    It gives the LLM tokens where the two streams are already mixed, before any language reasoning. It is the
    attention pooler applied to the concatenated streams (same parameters and state-dict keys).
    """

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """``video [r, kv, D]``, ``audio [r, ka, D]`` -> ``[r, k, D]``."""
        return super().forward(torch.cat([video, audio], dim=1))  # [r, kv+ka, D] -> [r, k, D]
