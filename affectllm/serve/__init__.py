"""Use a trained model: the inference engine, ``affectllm chat`` and resumable batch ``affectllm label``.

``Engine`` and ``GenerationOptions`` (:mod:`affectllm.serve.engine`) load lazily, so the CLI's argument parsing
imports no torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Engine", "GenerationOptions"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
