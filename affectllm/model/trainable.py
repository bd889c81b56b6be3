"""Trainable policy: which parts learn. Encoders frozen by default, projectors trained, LLM by LoRA, fully or not.

Parts of the model (by parameter-name prefix):

* ``model.encoders.video|audio|face|words``: the towers, pretrained or warm-started in stage 0 (frozen unless
  ``train_encoders``);
* ``model.encoders.au``: the AU-vector encoder, which has no pretrained weights and always trains with the projectors;
* ``model.poolers``, ``model.projectors``, ``model.prefusion``: always trained;
* ``model.language_model`` and ``lm_head``: ``llm_mode`` = ``lora`` (PEFT adapters on the backbone's linear layers
  only; the trained media modules become PEFT ``modules_to_save``), ``full`` or ``frozen``.
"""

from __future__ import annotations

import re
from typing import Any

from torch import nn

from ..config import LoraConfig
from .modeling import AffectLlmForConditionalGeneration

ALWAYS_TRAINED = ("model.poolers.", "model.projectors.", "model.prefusion.", "model.encoders.au.")
LLM_PREFIXES = ("model.language_model.", "lm_head.")


def llm_linear_names(model: AffectLlmForConditionalGeneration) -> list[str]:
    """Sorted distinct leaf names of the LLM backbone's linear layers (``q_proj``, ``down_proj``...)."""
    backbone = model.get_decoder()
    names = {name.rsplit(".", 1)[-1] for name, mod in backbone.named_modules() if isinstance(mod, nn.Linear)}
    return sorted(names)


def apply_trainable_policy(model: AffectLlmForConditionalGeneration, llm_mode: str = "lora",
                           train_encoders: bool = False, lora: LoraConfig | None = None) -> Any:
    """Set ``requires_grad`` per the policy; with ``llm_mode="lora"`` return a PEFT model (adapters on the LLM only).

    Returns:
        The model to train (a ``PeftModel`` for LoRA, the model itself otherwise).
    """
    if llm_mode not in ("lora", "full", "frozen"):
        raise ValueError(f"llm_mode={llm_mode!r}: expected lora, full or frozen")
    for name, param in model.named_parameters():
        if name.startswith(LLM_PREFIXES):
            param.requires_grad = llm_mode == "full"
        elif name.startswith("model.encoders.") and not name.startswith("model.encoders.au."):
            param.requires_grad = train_encoders
        else:
            param.requires_grad = name.startswith(ALWAYS_TRAINED)
    if llm_mode != "lora":
        return model
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    lora = lora or LoraConfig()
    targets = lora.target_modules or llm_linear_names(model)
    # A regex anchored on the LLM keeps adapters out of the encoders, whose layers share names like q_proj.
    pattern = rf"^model\.language_model\..*\.({'|'.join(map(re.escape, targets))})$"
    # The fully trained media modules go to PEFT's modules_to_save: PEFT trains a copy and keeps the original, so
    # "adapters off" (TRL's KL reference for LoRA) is the whole starting model, projectors included, and
    # merge_and_unload puts the trained copies back.
    peft_config = PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                 target_modules=pattern, modules_to_save=media_modules_to_save(model))
    return get_peft_model(model, peft_config)


def media_modules_to_save(model: AffectLlmForConditionalGeneration) -> list[str]:
    """Names (relative to the model) of the media modules with trainable parameters: projectors, poolers with
    weights, pre-fusion, the AU encoder, and towers when ``train_encoders``."""
    inner = model.model
    names = []
    for group in ("encoders", "poolers", "projectors"):
        for m, module in getattr(inner, group).items():
            if any(p.requires_grad for p in module.parameters()):
                names.append(f"model.{group}.{m}")
    if inner.prefusion is not None:
        names.append("model.prefusion")
    return names


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Trainable and total parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": total}
