"""Trainable policy: which parts learn. Encoders frozen by default, projectors trained, LLM by LoRA, fully or not.

Parts of the model (by parameter-name prefix):

* ``model.encoders.video|audio|face``: pretrained towers (frozen unless ``train_encoders``);
* ``model.encoders.au``: the AU-vector encoder, which has no pretrained weights and always trains with the projectors;
* ``model.poolers``, ``model.projectors``, ``model.prefusion``: always trained;
* ``model.language_model`` and ``lm_head``: ``llm_mode`` = ``lora`` (PEFT adapters on the backbone's linear layers
  only), ``full`` or ``frozen``.
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
    model.config.freeze_encoders = not train_encoders
    if llm_mode != "lora":
        return model
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    lora = lora or LoraConfig()
    targets = lora.target_modules or llm_linear_names(model)
    # A regex anchored on the LLM keeps adapters out of the encoders, whose layers share names like q_proj.
    pattern = rf"^model\.language_model\..*\.({'|'.join(map(re.escape, targets))})$"
    peft_config = PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                 target_modules=pattern, modules_to_save=None)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    peft_model = get_peft_model(model, peft_config)
    for name, param in peft_model.base_model.model.named_parameters():
        if name in trainable:  # PEFT freezes everything but adapters; projectors etc. keep training
            param.requires_grad = True
    return peft_model


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Trainable and total parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": total}
