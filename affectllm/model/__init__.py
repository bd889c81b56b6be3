"""The HF-native multimodal model: config, model, processor, builders.

Importing this package registers the classes with transformers' Auto classes, so ``AutoConfig``,
``AutoModelForCausalLM`` and ``AutoProcessor`` load a saved affectllm directory.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModelForCausalLM, AutoProcessor

from .configuration import MEDIA_INPUT_NAMES, MEDIA_TOKENS, AffectLlmConfig, WordsConfig
from .modeling import AffectLlmForConditionalGeneration
from .processor import AffectLlmProcessor, media_prefix


def register_auto_classes() -> None:
    """Register with AutoConfig / AutoModelForCausalLM / AutoProcessor (idempotent)."""
    for config in (AffectLlmConfig, WordsConfig):
        try:
            AutoConfig.register(config.model_type, config)
        except ValueError:  # already registered in this process
            pass
    for auto, cls in ((AutoModelForCausalLM, AffectLlmForConditionalGeneration),
                      (AutoProcessor, AffectLlmProcessor)):
        try:
            auto.register(AffectLlmConfig, cls)
        except ValueError:
            pass


register_auto_classes()

__all__ = ["MEDIA_INPUT_NAMES", "MEDIA_TOKENS", "AffectLlmConfig", "AffectLlmForConditionalGeneration",
           "AffectLlmProcessor", "WordsConfig", "media_prefix", "register_auto_classes"]
