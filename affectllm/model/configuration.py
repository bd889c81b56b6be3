"""`AffectLlmConfig`: the composite config of encoders, poolers, projectors and the LLM backbone."""

from __future__ import annotations

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from ..types import DEFAULT_MEDIA_TOKENS, FUSION_PLACEHOLDER, MODALITIES, MODALITY_TABLE

# Views of types.MODALITY_TABLE (the one table of per-modality names) that the model code indexes by modality.
# Placeholder strings the processor expands; order is the order media appear in a prompt.
MEDIA_TOKENS: dict[str, str] = {**{m.name: m.placeholder for m in MODALITY_TABLE}, "fusion": FUSION_PLACEHOLDER}
# Names of the processed-media keyword arguments of `forward`, per modality.
MEDIA_INPUT_NAMES: dict[str, str] = {m.name: m.model_input for m in MODALITY_TABLE}
# Precomputed (cached) raw encoder outputs, one keyword per tower: ``[u, l, d]``.
FEATURE_INPUT_NAMES: dict[str, str] = {m.name: m.feature_input for m in MODALITY_TABLE if m.feature_input}
# Padding masks over processed media, for the modalities the processor pads per batch (SSL waveforms).
MASK_INPUT_NAMES: dict[str, str] = {m.name: m.mask_input for m in MODALITY_TABLE if m.mask_input}


TOWERS: tuple[str, ...] = ("video", "audio", "face", "words")
"""Modalities encoded by a tower with its own sub-config (``encoder_config``), each of which can carry a stage 0
readout; "au" has an encoder without one."""


class WordsConfig(PreTrainedConfig):
    r"""Configuration of the words tower (:class:`~affectllm.model.encoders.words.WordsTower`): a bag of the
    transcript's tokens (the LLM's tokenizer) with a short convolution over neighbours, no pretrained weights.

    Args:
        vocab_size: the tokenizer's size (the builder sets it).
        hidden_size: width of each token's feature.
        kernel_size: tokens each feature sees (3: a token and its neighbours, so "not happy" differs from "happy").
    """

    model_type = "affectllm_words"

    vocab_size: int = 4096
    hidden_size: int = 32
    kernel_size: int = 3


class AffectLlmConfig(PreTrainedConfig):
    r"""Configuration of :class:`AffectLlmForConditionalGeneration`.

    Args:
        text_config: config of the causal LM backbone (any `AutoModelForCausalLM` architecture).
        vision_config: config of the video-frame tower (`clip_vision_model`, `siglip_vision_model`); None = no video.
        audio_config: config of the audio encoder (`whisper`, `hubert`, `wavlm`, `wav2vec2`); None = no audio.
        face_config: config of the face-crop tower (a vision config); None = no face crops.
        words_config: config of the words tower over the transcript (:class:`WordsConfig`); None = the LLM reads
            the transcript only as prompt text.
        au_feature_dim: length of the per-frame AU/landmark vector (0 = no AU modality).
        media_tokens: LLM tokens each modality contributes per clip (the pooler's output length), incl. "fusion".
        pooling: pooler name per modality ("mean" parameter-free, "attention" learned queries).
        projector_depth: MLP depth of each projector (1 = linear).
        projector_norm: modalities whose projector starts with a LayerNorm over the tower's features (a saved config
            without the field has none, as before the field existed).
        readout: modalities whose projector also reads the tower's readout (the stage 0 head's AU, emotion and
            valence/arousal outputs, see ``encoders.tower.Readout``) where the tower has one; a saved config
            without the field reads none.
        prefusion: add an AffectGPT-style pre-fusion block: learned queries attend over a clip's projected video
            and audio tokens and give `media_tokens["fusion"]` extra tokens (only for clips with both).
        media_token_ids: token id of each placeholder string in the tokenizer (set by the builder).
    """

    model_type = "affectllm"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="clip_vision_model", optional=True),
        "audio_config": SubConfigSpec(config_class=AutoConfig, model_type="whisper", optional=True),
        "face_config": SubConfigSpec(config_class=AutoConfig, model_type="clip_vision_model", optional=True),
        "words_config": SubConfigSpec(config_class=AutoConfig, model_type=WordsConfig.model_type, optional=True),
    }

    text_config: dict | PreTrainedConfig | None = None
    vision_config: dict | PreTrainedConfig | None = None
    audio_config: dict | PreTrainedConfig | None = None
    face_config: dict | PreTrainedConfig | None = None
    words_config: dict | PreTrainedConfig | None = None
    au_feature_dim: int = 0
    media_tokens: dict | None = None
    pooling: dict | None = None
    projector_depth: int = 2
    projector_hidden_act: str = "gelu"
    projector_norm: list | None = None
    readout: list | None = None
    prefusion: bool = False
    media_token_ids: dict | None = None
    tie_word_embeddings: bool = False
    # trl==1.16.0 trl/trainer/utils.py:1359 (create_model_from_path: GRPO's reference model when beta > 0) reads
    # ``config.auto_map`` when the architecture is not a transformers class: an empty map sends it to
    # AutoModelForCausalLM, where this model is registered (without the field a KL term stopped GRPO with an
    # AttributeError). Saved as {}: AutoConfig looks for "AutoConfig" in it, which None would break.
    auto_map: dict | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.media_tokens = {**DEFAULT_MEDIA_TOKENS, **(self.media_tokens or {})}
        self.pooling = {m: "mean" for m in MODALITIES} | (self.pooling or {})
        self.media_token_ids = dict(self.media_token_ids or {})
        self.projector_norm = list(self.projector_norm or [])
        self.readout = list(self.readout or [])
        self.auto_map = dict(self.auto_map or {})
        # The LLM's own tying decides; the composite must not force it on or off.
        self.tie_word_embeddings = bool(getattr(self.text_config, "tie_word_embeddings", False))

    @property
    def image_token_id(self) -> int | None:
        """A TRL shim: trl==1.16.0 trl/trainer/grpo_trainer.py:1170 reads ``model.config.image_token_id`` for
        every processor-based model (to suppress it when sampling), so it must exist; here it is the video
        placeholder (all media placeholders are suppressed through the generation config as well)."""
        return self.media_token_ids.get("video")

    def encoder_config(self, modality: str) -> PreTrainedConfig | None:
        """The sub-config of the tower that encodes ``modality`` (None for "au", which has no tower)."""
        return {"video": self.vision_config, "audio": self.audio_config, "face": self.face_config,
                "words": self.words_config}.get(modality)

    def enabled_modalities(self) -> list[str]:
        """Modalities this model can take (fusion included when pre-fusion is on and video + audio exist)."""
        out = [m for m in MODALITIES if (self.au_feature_dim > 0 if m == "au" else self.encoder_config(m) is not None)]
        if self.prefusion and "video" in out and "audio" in out:
            out.append("fusion")
        return out
