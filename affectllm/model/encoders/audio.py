"""Audio encoders: a Whisper encoder over log-mel features, or a HuBERT/WavLM/wav2vec2 encoder over waveforms."""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModel, PreTrainedConfig, WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder


class WhisperAudioEncoder(nn.Module):
    """Whisper's encoder (the decoder is never built). Input: log-mel ``[u, mel, frames]`` from the processor."""

    def __init__(self, config: PreTrainedConfig, encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.encoder = encoder if encoder is not None else WhisperEncoder(config)
        self.hidden_size = config.d_model

    @classmethod
    def from_pretrained(cls, name_or_path: str, **kwargs) -> WhisperAudioEncoder:
        """Load the encoder half of a Whisper checkpoint."""
        config = WhisperConfig.from_pretrained(name_or_path)
        encoder = WhisperEncoder.from_pretrained(name_or_path, config=config, **kwargs)
        return cls(config, encoder=encoder)

    def forward(self, input_features: torch.Tensor) -> torch.Tensor:
        """``[u, mel, frames]`` -> ``[u, frames // 2, d]``."""
        return self.encoder(input_features.to(self.encoder.dtype)).last_hidden_state


class SslAudioEncoder(nn.Module):
    """A self-supervised speech encoder over 16 kHz waveforms ``[u, samples]`` (HuBERT, WavLM, wav2vec2)."""

    def __init__(self, config: PreTrainedConfig, model: nn.Module | None = None) -> None:
        super().__init__()
        self.model = model if model is not None else AutoModel.from_config(config)
        self.hidden_size = config.hidden_size

    @classmethod
    def from_pretrained(cls, name_or_path: str, **kwargs) -> SslAudioEncoder:
        """Load a pretrained speech encoder by hub id or local dir."""
        model = AutoModel.from_pretrained(name_or_path, **kwargs)
        return cls(model.config, model=model)

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        """``[u, samples]`` -> ``[u, frames, d]`` (about 50 frames a second)."""
        return self.model(input_values=input_values.to(self.model.dtype)).last_hidden_state
