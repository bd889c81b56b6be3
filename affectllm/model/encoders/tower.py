"""The base of the pretrained-tower wrappers: each keeps its HF config and stays in eval mode while frozen, and may
carry a *readout*: the small head stage 0 trained on the gold, kept so the LLM can read what the tower concluded."""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedConfig

READOUT_VA = ("valence", "arousal")


class Readout(nn.Module):
    """A linear head over the time-average of a tower's features: AU logits, emotion logits, valence/arousal.

    Stage 0 (``stage: encoders``) trains it with the tower on the manifest's gold; it is saved with the tower
    (the label names in the tower config's ``readout_aus`` / ``readout_emotions``), frozen with it afterwards, and
    its bounded outputs (:meth:`forward`) go into the modality's projector beside the pooled features when the
    modality is in ``AffectLlmConfig.readout``: the LLM gets the tower's own verdict as an input it can copy,
    as AU-detector pipelines hand detected AUs to an LLM.

    Args:
        dim: the tower's feature width.
        aus: the AU codes it predicts (empty for a voice).
        emotions: the emotions it predicts.
    """

    def __init__(self, dim: int, aus: list[str], emotions: list[str]) -> None:
        super().__init__()
        self.aus, self.emotions = list(aus), list(emotions)
        self.norm = nn.LayerNorm(dim)
        self.linear = nn.Linear(dim, self.width)

    @property
    def width(self) -> int:
        """Outputs: AUs, emotions, then valence and arousal."""
        return len(self.aus) + len(self.emotions) + len(READOUT_VA)

    def logits(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``[u, l, d]`` tower features (``lengths [u]``: valid frames) -> raw head outputs ``[u, width]``."""
        if lengths is None:
            pooled = features.mean(dim=1)
        else:
            pooled = torch.stack([f[:max(int(n), 1)].mean(dim=0) for f, n in zip(features, lengths.tolist())])
        return self.linear(self.norm(pooled.to(self.linear.weight.dtype)))

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Bounded outputs ``[u, width]``: AU probabilities (sigmoid), emotion probabilities (softmax), valence
        and arousal clamped to [-1, 1]."""
        h = self.logits(features, lengths)
        a, e = len(self.aus), len(self.emotions)
        return torch.cat([torch.sigmoid(h[:, :a]), torch.softmax(h[:, a:a + e], dim=-1),
                          h[:, a + e:].clamp(-1.0, 1.0)], dim=-1)


class Tower(nn.Module):
    """A pretrained encoder of one modality (video frames, face crops, audio) wrapped for the composite model.

    ``Trainer`` calls ``model.train()`` before every step, which would switch a frozen tower's dropout, LayerDrop
    and SpecAugment on (HuBERT/WavLM/wav2vec2 default to all three): its features would then be noisy, differ
    between two calls on one clip and from the eval-mode features of the cache and of inference. A tower without
    a trainable parameter therefore ignores ``train(True)``; one that trains follows it.

    Args:
        config: the tower's HF config (``vision_config`` / ``audio_config`` / ``face_config`` of the composite); a
            config with ``readout_emotions`` (written by :meth:`set_readout`) builds the :class:`Readout`.
        hidden_size: width ``d`` of the features it returns.
    """

    def __init__(self, config: PreTrainedConfig, hidden_size: int) -> None:
        super().__init__()
        self.config = config
        self.hidden_size = hidden_size
        emotions = getattr(config, "readout_emotions", None)
        self.readout = Readout(hidden_size, getattr(config, "readout_aus", None) or [], emotions) if emotions \
            else None

    def set_readout(self, aus: list[str], emotions: list[str]) -> Readout:
        """Give the tower a fresh (random) readout over these labels and record them in its config."""
        if not emotions:
            raise ValueError("a readout needs at least one emotion")
        self.config.readout_aus, self.config.readout_emotions = list(aus), list(emotions)
        like = next(self.parameters(), None)
        self.readout = Readout(self.hidden_size, aus, emotions)
        if like is not None:
            self.readout.to(device=like.device, dtype=like.dtype)
        return self.readout

    def drop_readout(self) -> None:
        """Remove the readout (and its labels from the config): a tower whose head never saw gold keeps none."""
        self.readout = None
        for key in ("readout_aus", "readout_emotions"):
            if hasattr(self.config, key):
                delattr(self.config, key)

    @property
    def trainable(self) -> bool:
        """True when any parameter requires grad (the trainable policy decides, see ``model/trainable.py``)."""
        return any(p.requires_grad for p in self.parameters())

    def train(self, mode: bool = True) -> Tower:
        return super().train(mode and self.trainable)
