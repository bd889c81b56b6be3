"""Audio encoders: a Whisper encoder over log-mel features, or a HuBERT/WavLM/wav2vec2 encoder over waveforms."""

from __future__ import annotations

import torch
from torch.nn.utils.rnn import pad_sequence
from transformers import AutoModel, PreTrainedConfig, WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from .tower import Tower


class WhisperAudioEncoder(Tower):
    """Whisper's encoder (the decoder is never built). Input: log-mel ``[u, mel, frames]`` from the processor,
    always padded to the extractor's fixed length, so it needs no padding mask."""

    def __init__(self, config: PreTrainedConfig, encoder: torch.nn.Module | None = None) -> None:
        super().__init__(config, config.d_model)
        self.encoder = encoder if encoder is not None else WhisperEncoder(config)

    @classmethod
    def from_pretrained(cls, name_or_path: str, **kwargs) -> WhisperAudioEncoder:
        """Load the encoder half of a Whisper checkpoint."""
        config = WhisperConfig.from_pretrained(name_or_path)
        encoder = WhisperEncoder.from_pretrained(name_or_path, config=config, **kwargs)
        return cls(config, encoder=encoder)

    def forward(self, input_features: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``[u, mel, frames]`` -> ``[u, frames // 2, d]`` (``attention_mask`` unused: the input is never padded
        per batch)."""
        return self.encoder(input_features.to(self.encoder.dtype)).last_hidden_state


class SslAudioEncoder(Tower):
    """A self-supervised speech encoder over 16 kHz waveforms ``[u, samples]`` (HuBERT, WavLM, wav2vec2).

    Waveforms of a batch are right-padded to the longest; ``attention_mask`` ``[u, samples]`` marks the real
    samples, so a clip's features do not depend on its batch mates. Towers with ``feat_extract_norm="layer"`` take
    the mask (HF's batched path); ``"group"`` towers (HuBERT/WavLM/wav2vec2 base) normalise their first
    convolution over the whole padded length and were trained without a mask, so each clip runs alone at its own
    length instead. Frames past a clip's length are zero in the output.
    """

    def __init__(self, config: PreTrainedConfig, model: torch.nn.Module | None = None) -> None:
        super().__init__(config, config.hidden_size)
        self.model = model if model is not None else AutoModel.from_config(config)

    @classmethod
    def from_pretrained(cls, name_or_path: str, **kwargs) -> SslAudioEncoder:
        """Load a pretrained speech encoder by hub id or local dir."""
        model = AutoModel.from_pretrained(name_or_path, **kwargs)
        return cls(model.config, model=model)

    def output_lengths(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """Valid output frames per clip: ``[u, samples]`` mask -> ``[u]`` (the convolutions' arithmetic)."""
        return self.model._get_feat_extract_output_lengths(attention_mask.sum(-1)).long()

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``[u, samples]`` (+ mask ``[u, samples]``) -> ``[u, frames, d]`` (about 50 frames a second)."""
        x = input_values.to(self.model.dtype)
        if attention_mask is None:
            return self.model(input_values=x).last_hidden_state
        lengths = self.output_lengths(attention_mask)
        if self.config.feat_extract_norm == "layer":
            hidden = self.model(input_values=x, attention_mask=attention_mask).last_hidden_state
            valid = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lengths[:, None].to(hidden.device)
            return hidden * valid[..., None].to(hidden.dtype)
        outs = [self.model(input_values=x[i:i + 1, :n]).last_hidden_state[0]
                for i, n in enumerate(attention_mask.sum(-1).tolist())]
        return pad_sequence(outs, batch_first=True)
