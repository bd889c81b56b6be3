"""`AffectLlmForConditionalGeneration`: encoders -> poolers -> projectors -> placeholder splice -> causal LM.

The model is a plain transformers ``PreTrainedModel`` built by composition, so ``save_pretrained`` /
``from_pretrained``, ``generate``, PEFT, TRL, accelerate and DeepSpeed treat it like any HF model.

Media arrive per modality as the *unique* clips of the batch plus an optional index (``video_index`` etc.) that maps
each placeholder run, in row order, to its clip. A GRPO group of G completions of one clip therefore encodes the clip
once and reuses the features G times; without an index every run gets its own clip.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.integrations import is_deepspeed_zero3_enabled
from transformers.modeling_outputs import CausalLMOutputWithPast

from ..types import MODALITIES
from .configuration import FEATURE_INPUT_NAMES, MASK_INPUT_NAMES, MEDIA_INPUT_NAMES, TOWERS, AffectLlmConfig
from .encoders import build_encoder
from .encoders.face import AuEncoder
from .fusion import PreFusion, rows_with, scatter_media
from .pooling import AttentionPooler, build_pooler, takes_lengths
from .projector import MlpProjector

# Keyword arguments that carry media; generation passes them on the first (prefill) step only.
MEDIA_KWARGS: tuple[str, ...] = (
    *MEDIA_INPUT_NAMES.values(),
    *FEATURE_INPUT_NAMES.values(),
    *MASK_INPUT_NAMES.values(),
    *(f"{m}_index" for m in MODALITIES),
)


class AffectLlmPreTrainedModel(PreTrainedModel):
    config: AffectLlmConfig
    config_class = AffectLlmConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _skip_keys_device_placement = ["past_key_values"]
    input_modalities = ("video", "audio", "text")

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, AttentionPooler):  # PreFusion included
            init.normal_(module.queries, mean=0.0, std=0.02)


class AffectLlmModel(AffectLlmPreTrainedModel):
    """Encoders, poolers, projectors, pre-fusion and the LLM backbone (no LM head): returns hidden states.

    Args:
        config: the composite config.
        language_model: an already-built (e.g. pretrained) LLM backbone; built from ``config.text_config`` if None.
        towers: already-built encoders by modality ("video", "audio", "face", "words"); built from their configs if
            absent.
    """

    def __init__(self, config: AffectLlmConfig, language_model: nn.Module | None = None,
                 towers: dict[str, nn.Module] | None = None) -> None:
        if config._attn_implementation is None:  # a composite config resets its sub-configs' kernel to None
            config._attn_implementation = "sdpa"
        super().__init__(config)
        towers = towers or {}
        self.language_model = language_model or AutoModel.from_config(config.text_config)
        llm_dim = config.text_config.hidden_size
        self.encoders = nn.ModuleDict()
        for m in TOWERS:
            sub = config.encoder_config(m)
            if sub is not None:
                self.encoders[m] = towers.get(m) or build_encoder(sub)
        if config.au_feature_dim > 0:
            self.encoders["au"] = AuEncoder.from_config(config)
        self.poolers = nn.ModuleDict({
            m: build_pooler(config.pooling[m], enc.hidden_size, config.media_tokens[m])
            for m, enc in self.encoders.items()
        })
        self.projectors = nn.ModuleDict({m: self._projector(m) for m in self.encoders})
        self.prefusion = PreFusion(llm_dim, config.media_tokens["fusion"]) if (
            "fusion" in config.enabled_modalities()) else None
        self.post_init()

    def _projector(self, modality: str) -> MlpProjector:
        """The projector of ``modality`` as the config and the tower say (the readout's width when it reads one)."""
        enc, cfg = self.encoders[modality], self.config
        return MlpProjector(enc.hidden_size, cfg.text_config.hidden_size, cfg.projector_depth,
                            cfg.projector_hidden_act, norm=modality in cfg.projector_norm,
                            extra_dim=self._readout_width(modality))

    def _readout_width(self, modality: str) -> int:
        """Width of the readout ``modality``'s projector reads: 0 unless it is in ``config.readout`` and its tower
        has one (stage 0 gives it)."""
        readout = getattr(self.encoders[modality], "readout", None)
        return readout.width if readout is not None and modality in self.config.readout else 0

    def attach_readout(self, modality: str, aus: list[str], emotions: list[str]) -> nn.Module:
        """Give ``modality``'s tower a fresh readout over these labels (stage 0 trains it); when the modality is in
        ``config.readout`` its projector is rebuilt (random) to read it. Returns the readout."""
        readout = self.encoders[modality].set_readout(aus, emotions)
        self._rebuild_projector(modality)
        return readout

    def drop_readout(self, modality: str) -> None:
        """Remove ``modality``'s readout; its projector is rebuilt (random) without it where it read one."""
        had = self._readout_width(modality)
        self.encoders[modality].drop_readout()
        if had:
            self._rebuild_projector(modality)

    def _rebuild_projector(self, modality: str) -> None:
        if self.projectors[modality].extra_dim == self._readout_width(modality):
            return
        old = self.projectors[modality].net[0].weight
        self.projectors[modality] = self._projector(modality).to(device=old.device, dtype=old.dtype)
        self.projectors[modality].apply(self._init_weights)

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    @property
    def embed_tokens(self) -> nn.Module:
        """The LLM's token embedding, where TRL's ``cast_lm_head_to_fp32`` hooks a tied model's embedding output
        (mirrors trl==1.16.0 trl/trainer/grpo_trainer.py:1043, ``model.model.embed_tokens``)."""
        return self.get_input_embeddings()

    # -- media ----------------------------------------------------------------------------------------------------
    def encode_media(self, modality: str, values: torch.Tensor,
                     attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Raw encoder output for ``u`` unique clips: ``values`` (see MEDIA_INPUT_NAMES) -> ``[u, l, d]``.

        Frozen encoders run under ``no_grad``; their outputs are what the feature cache stores (pooling and
        projection come after, because they train). ``attention_mask`` ``[u, n]`` marks the real samples of
        padded waveforms (``audio_attention_mask``); frames past a clip's length come out as zeros.
        """
        encoder = self.encoders[modality]
        extra = {} if attention_mask is None else {"attention_mask": attention_mask}
        if any(p.requires_grad for p in encoder.parameters()):
            return encoder(values, **extra)
        with torch.no_grad():
            return encoder(values, **extra)

    def feature_lengths(self, modality: str, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        """Valid encoder frames per clip ``[u]`` given a padding mask over the input (None: all frames valid)."""
        if attention_mask is None:
            return None
        return self.encoders[modality].output_lengths(attention_mask)

    def project_media(self, modality: str, features: torch.Tensor,
                      lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Pool and project encoder output: ``[u, l, d]`` -> ``[u, k, D]`` (D = LLM hidden size).

        With ``lengths`` ``[u]`` each clip is pooled over its own valid frames only, so padding added for its
        batch mates never reaches its tokens. A modality that reads its tower's readout (``config.readout``) gets
        the readout's outputs beside every pooled token (see :class:`~affectllm.model.projector.MlpProjector`).
        """
        pooler, projector = self.poolers[modality], self.projectors[modality]
        features = features.to(projector.net[0].weight.dtype)
        if lengths is None:
            pooled = pooler(features)
        elif takes_lengths(pooler):  # one call for the batch (ZeRO-3 traces module calls, see model/pooling.py)
            pooled = pooler(features, lengths)
        else:  # a user's pooler without lengths: one call per clip (not safe under ZeRO-3 with uneven batches)
            pooled = torch.cat([pooler(f[None, :n]) for f, n in zip(features, lengths.tolist())])
        readout = self.encoders[modality].readout(features, lengths) if projector.extra_dim else None
        return projector(pooled, readout)

    @torch.no_grad()
    def readout_emotions(self, **media: Any) -> dict[str, tuple[list[str], torch.Tensor]]:
        """Each tower's own verdict on the emotion: per modality whose tower has a readout (stage 0) and whose
        inputs ``media`` holds (raw media or cached features, as in :meth:`merge_media`), ``(emotion names,
        log-probabilities [u, E])`` over the ``u`` unique clips of that input."""
        out = {}
        for m in MODALITIES:
            readout = getattr(self.encoders[m], "readout", None) if m in self.encoders else None
            cached, values = media.get(FEATURE_INPUT_NAMES.get(m, "")), media.get(MEDIA_INPUT_NAMES[m])
            if readout is None or (cached is None and values is None):
                continue
            mask = media.get(MASK_INPUT_NAMES.get(m, ""))
            features = cached if cached is not None else self.encode_media(m, values, mask)
            logits = readout.logits(features, self.feature_lengths(m, mask))
            a = len(readout.aus)
            out[m] = (list(readout.emotions), torch.log_softmax(logits[:, a:a + len(readout.emotions)].float(), -1))
        return out

    def _media_rows(self, modality: str, media: dict[str, Any]) -> torch.Tensor | None:
        """Projected features per placeholder run for one modality, ``[r, k, D]``, or None if none given."""
        cached = media.get(FEATURE_INPUT_NAMES.get(modality, ""))
        values = media.get(MEDIA_INPUT_NAMES[modality])
        if cached is None and values is None:
            return None
        if modality not in self.encoders:
            raise ValueError(f"{modality} inputs given but this model has no {modality} encoder")
        mask = media.get(MASK_INPUT_NAMES.get(modality, ""))
        if cached is not None and modality in FEATURE_INPUT_NAMES and is_deepspeed_zero3_enabled():
            self.tower_dummy(modality, cached)  # ranks that encode this modality live run its tower: join them
        features = cached if cached is not None else self.encode_media(modality, values, mask)
        projected = self.project_media(modality, features, self.feature_lengths(modality, mask))  # [u, k, D]
        index = media.get(f"{modality}_index")
        return projected if index is None else projected[index.to(projected.device)]

    def merge_media(self, input_ids: torch.Tensor, inputs_embeds: torch.Tensor, **media: Any) -> torch.Tensor:
        """Splice every modality's features into ``inputs_embeds [b, s, D]`` at its placeholder tokens."""
        ids = self.config.media_token_ids
        per_row: dict[str, torch.Tensor] = {}
        dummies: list[torch.Tensor] = []
        for m in MODALITIES:
            rows = self._media_rows(m, media)
            token_id = ids.get(m)
            if rows is None:
                if token_id is not None and bool((input_ids == token_id).any()):
                    n = int((input_ids == token_id).sum())
                    raise ValueError(f"{m}: {n} placeholder tokens in input_ids but 0 feature vectors (no {m} input)")
                if m in self.encoders and self._needs_sync():
                    dummies.append(self._dummy_pass(m, inputs_embeds))
                continue
            inputs_embeds = scatter_media(inputs_embeds, input_ids, token_id, rows, m)
            per_row[m] = rows
        fusion_id = ids.get("fusion")
        if self.prefusion is not None and fusion_id is not None and bool((input_ids == fusion_id).any()):
            fused = self._fuse(input_ids, per_row)  # [r, k, D]
            inputs_embeds = scatter_media(inputs_embeds, input_ids, fusion_id, fused, "fusion")
        elif self.prefusion is not None and self._needs_sync():
            k = self.config.media_tokens
            zeros = inputs_embeds.new_zeros((1, k["video"] + k["audio"], inputs_embeds.shape[-1]))
            dummies.append(self.prefusion(zeros[:, :k["video"]], zeros[:, k["video"]:]).sum())
        if dummies:
            inputs_embeds = inputs_embeds + 0.0 * torch.stack(dummies).sum().to(inputs_embeds.dtype)
        return inputs_embeds

    def _needs_sync(self) -> bool:
        """Whether a modality the batch lacks must still run (see :meth:`_dummy_pass`)."""
        return (self.training and torch.is_grad_enabled()) or is_deepspeed_zero3_enabled()

    def tower_dummy(self, modality: str, like: torch.Tensor) -> torch.Tensor:
        """Run ``modality``'s encoder on a one-clip dummy input (``[1, l, d]``, no gradient when it is frozen).

        Under ZeRO-3 every rank must run each tower once per forward, because running it gathers its partitioned
        parameters collectively: ranks with cached features or without the modality call this while others encode
        live. Code that encodes outside ``forward`` for only the modalities its batch has (GRPO's frozen-feature
        path) must call it for the others, in :data:`affectllm.types.MODALITIES` order, on the same condition
        (``transformers.integrations.is_deepspeed_zero3_enabled()``).
        """
        return self.encode_media(modality, self._dummy_input(modality, like))

    def _dummy_pass(self, modality: str, like: torch.Tensor) -> torch.Tensor:
        """Run a modality the batch lacks on a one-clip dummy input; the caller adds it times zero.

        Why: DDP and DeepSpeed ZeRO reduce gradients across ranks parameter by parameter in the order they become
        ready; a rank whose batch has no audio must still produce (zero) gradients for the audio path, through the
        same modules in the same order as a rank that has audio, or the collectives go out of step. The dummy never
        reaches the LLM's input: it contributes 0 to the output.

        Frozen towers: outside ZeRO-3 they are skipped (zeros stand in for their output; they have no gradient to
        reduce). Under ZeRO-3 every parameter, frozen or not, is partitioned and gathered by a collective when its
        module runs, so a rank that skipped a tower another rank runs would hang both; there every tower runs once
        per forward on every rank, in every mode (training, evaluation, generation): on the clips when they come
        raw, else on the dummy (absent modality here, or cached features given instead, see :meth:`tower_dummy`).
        This costs one one-clip tower pass per such modality and step, and keeps ZeRO-3's memory saving, which
        gathering the towers once for good would give up (SigLIP-so400m + Whisper-large encoder: ~2 GB in bf16 on
        every rank).
        """
        encoder = self.encoders[modality]
        if any(p.requires_grad for p in encoder.parameters()) or is_deepspeed_zero3_enabled():
            features = self.tower_dummy(modality, like)
        else:
            features = like.new_zeros((1, 1, encoder.hidden_size))
        return self.project_media(modality, features).sum()

    def _dummy_input(self, modality: str, like: torch.Tensor) -> torch.Tensor:
        """A minimal valid input for ``modality``'s encoder (one clip, one frame / the encoder's audio length)."""
        if modality == "au":
            return like.new_zeros((1, 1, self.config.au_feature_dim))
        if modality == "words":
            return torch.zeros((1, 1), dtype=torch.long, device=like.device)
        sub = self.config.encoder_config(modality)
        if modality == "audio":
            if sub.model_type == "whisper":
                return like.new_zeros((1, sub.num_mel_bins, 2 * sub.max_source_positions))
            return like.new_zeros((1, 16000))
        return like.new_zeros((1, 1, getattr(sub, "num_channels", 3), sub.image_size, sub.image_size))

    def _fuse(self, input_ids: torch.Tensor, per_row: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pre-fusion tokens for the rows that carry a fusion placeholder (each must have video and audio)."""
        ids = self.config.media_token_ids
        rows_f = rows_with(input_ids, ids["fusion"])
        picked = []
        for m in ("video", "audio"):
            rows_m = rows_with(input_ids, ids[m])
            pos = torch.searchsorted(rows_m, rows_f).clamp(max=max(len(rows_m) - 1, 0))
            if m not in per_row or len(rows_m) == 0 or not torch.equal(rows_m[pos], rows_f):
                raise ValueError(f"fusion: a row with a <fusion> placeholder has no {m}; fusion needs video and audio")
            picked.append(per_row[m][pos])
        return self.prefusion(*picked)

    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.LongTensor | None = None, past_key_values: Any = None,
                inputs_embeds: torch.FloatTensor | None = None, use_cache: bool | None = None, **kwargs: Any):
        """Backbone forward with media spliced in; returns the backbone's output (``last_hidden_state [b, s, D]``).

        Media keyword arguments (see :data:`MEDIA_KWARGS`) are consumed here; the rest go to the backbone.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        media = {k: kwargs.pop(k) for k in list(kwargs) if k in MEDIA_KWARGS}
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
            inputs_embeds = self.merge_media(input_ids, inputs_embeds, **media)
        return self.language_model(attention_mask=attention_mask, position_ids=position_ids,
                                   past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache,
                                   **kwargs)


class AffectLlmForConditionalGeneration(AffectLlmPreTrainedModel, GenerationMixin):
    """Multimodal emotion LLM: :class:`AffectLlmModel` + LM head. See the module docstring for the media contract.

    Args:
        config: the composite config.
        language_model: an already-built causal LM (e.g. pretrained); its backbone and LM head are reused.
        towers: already-built encoders by modality.
    """

    base_model_prefix = "model"

    def __init__(self, config: AffectLlmConfig, language_model: nn.Module | None = None,
                 towers: dict[str, nn.Module] | None = None) -> None:
        super().__init__(config)
        backbone = language_model.base_model if language_model is not None else None
        self.model = AffectLlmModel(config, language_model=backbone, towers=towers)
        head = language_model.get_output_embeddings() if language_model is not None else None
        self.lm_head = head or nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            embed = self.model.get_input_embeddings()
            name = next(n for n, mod in self.model.language_model.named_modules() if mod is embed)
            self._tied_weights_keys = {"lm_head.weight": f"model.language_model.{name}.weight"}
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    def get_decoder(self) -> nn.Module:
        return self.model.language_model

    @property
    def encoders(self) -> nn.ModuleDict:
        return self.model.encoders

    @property
    def poolers(self) -> nn.ModuleDict:
        return self.model.poolers

    @property
    def projectors(self) -> nn.ModuleDict:
        return self.model.projectors

    @property
    def prefusion(self) -> nn.Module | None:
        return self.model.prefusion

    def encode_media(self, modality: str, values: torch.Tensor,
                     attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """See :meth:`AffectLlmModel.encode_media`."""
        return self.model.encode_media(modality, values, attention_mask)

    def tower_dummy(self, modality: str, like: torch.Tensor) -> torch.Tensor:
        """See :meth:`AffectLlmModel.tower_dummy`."""
        return self.model.tower_dummy(modality, like)

    def feature_lengths(self, modality: str, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        """See :meth:`AffectLlmModel.feature_lengths`."""
        return self.model.feature_lengths(modality, attention_mask)

    def project_media(self, modality: str, features: torch.Tensor,
                      lengths: torch.Tensor | None = None) -> torch.Tensor:
        """See :meth:`AffectLlmModel.project_media`."""
        return self.model.project_media(modality, features, lengths)

    # -- forward / generate -----------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Any = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        pixel_values_videos: torch.FloatTensor | None = None,
        audio_values: torch.FloatTensor | None = None,
        face_pixel_values: torch.FloatTensor | None = None,
        au_features: torch.FloatTensor | None = None,
        video_index: torch.LongTensor | None = None,
        audio_index: torch.LongTensor | None = None,
        face_index: torch.LongTensor | None = None,
        au_index: torch.LongTensor | None = None,
        audio_attention_mask: torch.LongTensor | None = None,
        video_features: torch.FloatTensor | None = None,
        audio_features: torch.FloatTensor | None = None,
        face_features: torch.FloatTensor | None = None,
        words_ids: torch.LongTensor | None = None,
        words_mask: torch.LongTensor | None = None,
        words_index: torch.LongTensor | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """Causal-LM forward with media spliced in at placeholder tokens.

        Args:
            input_ids: ``[b, s]`` with placeholders expanded by the processor.
            pixel_values_videos: ``[u, t, 3, h, w]``; audio_values: ``[u, mel, frames]`` or ``[u, samples]``;
                face_pixel_values: ``[u, t, 3, s, s]``; au_features: ``[u, t, f]``; words_ids: the transcript's
                tokens for the words tower ``[u, n]``, right-padded, with words_mask ``[u, n]``.
            video_index / audio_index / face_index / au_index / words_index: ``[r]`` clip index per placeholder run
                (row order).
            audio_attention_mask: ``[u, samples]``, 1 on the real samples of right-padded waveforms (HuBERT-style
                towers; the processor adds it); with ``audio_features`` it gives their valid frames.
            video_features / audio_features / face_features: precomputed (cached) tower outputs ``[u, l, d]``, used
                instead of running that modality's tower.

        Returns:
            ``CausalLMOutputWithPast`` (``logits [b, s', V]``, ``loss`` when labels are given).
        """
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        outputs = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache,
            pixel_values_videos=pixel_values_videos, audio_values=audio_values, face_pixel_values=face_pixel_values,
            au_features=au_features, video_index=video_index, audio_index=audio_index, face_index=face_index,
            au_index=au_index, audio_attention_mask=audio_attention_mask, video_features=video_features,
            audio_features=audio_features, face_features=face_features, words_ids=words_ids, words_mask=words_mask,
            words_index=words_index, **kwargs,
        )
        hidden = outputs.last_hidden_state  # [b, s, D]
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden[:, keep, :])
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size,
                                      num_items_in_batch=num_items_in_batch)
        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=outputs.past_key_values,
                                      hidden_states=outputs.hidden_states, attentions=outputs.attentions)

    def prepare_inputs_for_generation(self, input_ids: torch.LongTensor, *args: Any, cache: Any = None,
                                      is_first_iteration: bool | None = False, **kwargs: Any) -> dict[str, Any]:
        """Pass media only on the prefill step; later steps read them from the KV cache.

        ``cache`` is named so that ``generate`` accepts a cache built beforehand (``generation.generate_shared``).
        """
        inputs = super().prepare_inputs_for_generation(input_ids, *args, cache=cache,
                                                       is_first_iteration=is_first_iteration, **kwargs)
        if not is_first_iteration and kwargs.get("use_cache", True):
            for key in MEDIA_KWARGS:
                inputs.pop(key, None)
        return inputs
