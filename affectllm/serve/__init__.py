"""Use a trained model: the inference engine, ``affectllm chat`` and resumable batch ``affectllm label``."""

from .engine import Engine, GenerationOptions

__all__ = ["Engine", "GenerationOptions"]
