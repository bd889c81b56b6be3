"""The words tower: the transcript's tokens as features a readout can learn from, for LLMs that cannot read yet.

A pretrained LLM reads the transcript in its prompt; the tiny preset's random LLM learns word meanings only through
SFT's gradient, from a few thousand clips, and on EmoWorld answered clips whose words name the emotion no better
than the face and voice alone allow (docs/emoworld.md). This tower embeds each token of the transcript (the LLM's
own tokenizer), lets it see its neighbours through a short depth-wise convolution ("not happy" is not "happy"), and
returns one feature per token. Stage 0 trains it with a readout (emotion, valence/arousal) on the gold like the
media towers; its pooled features and readout then reach the LLM at the ``<words>`` placeholder.
"""

from __future__ import annotations

import torch
from torch import nn

from ..configuration import WordsConfig
from .tower import Tower


class WordsTower(Tower):
    """Token ids ``[u, n]`` (right-padded; ``attention_mask [u, n]`` marks real tokens) -> features ``[u, n, d]``,
    zero past each transcript's end."""

    def __init__(self, config: WordsConfig) -> None:
        super().__init__(config, config.hidden_size)
        d = config.hidden_size
        self.embed = nn.Embedding(config.vocab_size, d)
        self.context = nn.Conv1d(d, d, kernel_size=config.kernel_size, padding=config.kernel_size // 2, groups=d)
        self.act = nn.GELU()

    def output_lengths(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """Tokens per transcript: ``[u, n]`` mask -> ``[u]``."""
        return attention_mask.sum(-1).long()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        keep = (torch.ones_like(input_ids) if attention_mask is None else attention_mask)[..., None]
        x = self.embed(input_ids.long()) * keep.to(self.embed.weight.dtype)  # [u, n, d]
        x = x + self.act(self.context(x.transpose(1, 2))).transpose(1, 2)
        return x * keep.to(x.dtype)
