"""Generation that computes a shared prompt once: a GRPO group, or ``label``/``eval`` with ``n > 1`` answers per clip.

A group's G rows carry the same prompt (hundreds to thousands of media and text tokens) and differ only in the
sampled answer. :func:`generate_shared` finds the rows that repeat (same tokens, same padding, same clip per
modality), runs each distinct prompt but its last token through the model once (media included), copies the KV
cache to its rows (``DynamicCache.batch_select_indices``) and lets ``generate`` go on from there: the last prompt
token of every row is the first step, so each row samples its own tokens from its own logits, exactly as when every
row is prefilled. :func:`generate_prefill_once` is the same for distinct prompts asked ``n`` times each.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import torch
from transformers import DynamicCache, GenerationMixin

from ..types import MODALITIES
from .configuration import FEATURE_INPUT_NAMES, MASK_INPUT_NAMES, MEDIA_INPUT_NAMES
from .fusion import rows_with
from .modeling import MEDIA_KWARGS


def _clip_of_row(model: Any, input_ids: torch.Tensor, media: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Per modality given, the clip index each row's placeholder run reads (``[b]``, -1 where the row has none).

    Without ``<m>_index`` every run has its own clip (the model's contract), so no two rows share one.

    Raises:
        ValueError: a row with more than one run of a modality (a multi-turn prompt; not shared here).
    """
    out = {}
    for m in MODALITIES:
        token_id = model.config.media_token_ids.get(m)
        if token_id is None or not any(k in media for k in (f"{m}_index", *_keywords(m))):
            continue
        rows = rows_with(input_ids, token_id)
        index = media.get(f"{m}_index")
        index = torch.arange(len(rows), device=input_ids.device) if index is None else index.to(input_ids.device)
        if len(index) != len(rows):
            raise ValueError(f"{m}: {len(index)} placeholder runs in {len(rows)} rows; prefill-once needs one run "
                             "per row (generate without it)")
        clip = torch.full((input_ids.shape[0],), -1, dtype=torch.long, device=input_ids.device)
        clip[rows] = index.long()
        out[m] = clip
    return out


def _keywords(modality: str) -> list[str]:
    """The media keywords of ``modality`` (raw values, cached features, padding mask)."""
    return [names[modality] for names in (MEDIA_INPUT_NAMES, FEATURE_INPUT_NAMES, MASK_INPUT_NAMES)
            if modality in names]


def shared_rows(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                **media: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Which rows are the same prompt.

    Args:
        model: an ``AffectLlmForConditionalGeneration`` (its media token ids).
        input_ids: ``[b, s]``; attention_mask: ``[b, s]``.
        **media: the media keyword arguments (``<m>_index`` ``[r]`` tells which clip each run reads).

    Returns:
        ``first`` ``[u]``: the first row of each distinct prompt, ascending; ``inverse`` ``[b]``: each row's
        position in ``first``.
    """
    clips = _clip_of_row(model, input_ids, media)
    keys = torch.cat([input_ids, attention_mask.to(input_ids.dtype), *(c[:, None] for c in clips.values())], dim=1)
    _, inverse = torch.unique(keys, dim=0, return_inverse=True)
    rows = torch.arange(len(keys), device=keys.device)
    first = torch.full((int(inverse.max()) + 1,), len(keys), device=keys.device).scatter_reduce(
        0, inverse, rows, reduce="amin")
    order = torch.argsort(first)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=order.device)
    return first[order], rank[inverse]


def select_media(model: Any, input_ids: torch.Tensor, media: dict[str, Any], rows: torch.Tensor) -> dict[str, Any]:
    """The media keyword arguments of the rows ``rows`` (ascending) of a batch: clips kept, runs re-indexed."""
    out = {k: v for k, v in media.items() if not k.endswith("_index")}
    for m, clip in _clip_of_row(model, input_ids, media).items():
        picked = clip[rows]
        out[f"{m}_index"] = picked[picked >= 0]
    return out


def prefill(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, **media: Any) -> DynamicCache:
    """The KV cache of the prompts ``[u, s]`` without their last token (media spliced in), as ``generate`` builds it.

    Position ids follow ``generate``'s rule for left padding (``cumsum(mask) - 1``, 0 on padding), so the cache
    equals the first ``s - 1`` positions of a plain prefill.
    """
    cache = DynamicCache(config=model.config.get_text_config())
    mask = attention_mask[:, :-1]
    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    with torch.no_grad():
        model(input_ids=input_ids[:, :-1], attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
              logits_to_keep=1, **media)
    return cache


def _generate_from(model: Any, cache: DynamicCache, rows: torch.Tensor, input_ids: torch.Tensor,
                   attention_mask: torch.Tensor, kwargs: dict[str, Any]) -> Any:
    """``generate`` over ``input_ids``/``attention_mask`` ``[b, s]`` from ``cache``'s rows ``rows`` ``[b]``."""
    generation_config = kwargs.get("generation_config")
    if getattr(generation_config, "cache_implementation", None) or kwargs.get("cache_implementation"):
        raise ValueError("prefill-once builds a DynamicCache; drop cache_implementation from the generation config")
    if (kwargs.get("num_return_sequences") or getattr(generation_config, "num_return_sequences", 1) or 1) > 1:
        raise ValueError("generate_shared keeps one sequence per row; for n answers per prompt call "
                         "generate_prefill_once(..., num_return_sequences=n)")
    cache.batch_select_indices(rows)
    rest = {k: v for k, v in kwargs.items() if k not in MEDIA_KWARGS}
    return GenerationMixin.generate(model, input_ids=input_ids, attention_mask=attention_mask, cache=cache, **rest)


def generate_shared(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                    **kwargs: Any) -> Any:
    """``model.generate`` for a batch whose rows may repeat a prompt: each distinct prompt is prefilled once.

    Same outputs as ``model.generate(input_ids, attention_mask, **kwargs)`` (greedy tokens and scores equal up to
    float round-off; sampled rows draw their own tokens). A batch without repeats is prefilled the same way, so
    every process runs the same forwards (under ZeRO-3 each forward gathers parameters collectively, and a GRPO
    group may span processes); prompts of one token take the plain path.

    Args:
        model: an ``AffectLlmForConditionalGeneration`` (not PEFT-wrapped: pass ``get_base_model()``).
        input_ids: ``[b, s]``, left-padded; attention_mask: ``[b, s]`` (all ones when None).
        **kwargs: media keyword arguments and ``generate``'s arguments.
    """
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    media = {k: v for k, v in kwargs.items() if k in MEDIA_KWARGS and v is not None}
    first, inverse = shared_rows(model, input_ids, attention_mask, **media)
    if input_ids.shape[1] < 2:
        return GenerationMixin.generate(model, input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    cache = prefill(model, input_ids[first], attention_mask[first], **select_media(model, input_ids, media, first))
    return _generate_from(model, cache, inverse, input_ids, attention_mask, kwargs)


def generate_prefill_once(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                          num_return_sequences: int = 1, **kwargs: Any) -> Any:
    """``model.generate(..., num_return_sequences=n)`` with each of the ``u`` prompts prefilled once.

    For ``label``/``eval`` with ``n > 1`` answers per clip: pass the processor output of the ``u`` distinct clips
    (media ``[u, ...]``) and sampling arguments; rows ``i * n .. i * n + n - 1`` of the result answer prompt ``i``,
    as with ``generate``'s own ``num_return_sequences``.

    Args:
        model: an ``AffectLlmForConditionalGeneration``.
        input_ids: ``[u, s]``, left-padded; attention_mask: ``[u, s]`` (all ones when None).
        num_return_sequences: answers per prompt ``n``.
        **kwargs: media keyword arguments and ``generate``'s arguments.

    Returns:
        what ``generate`` returns for ``u * n`` rows (``[u * n, s + t]`` sequences, or its output dict).
    """
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    media = {k: v for k, v in kwargs.items() if k in MEDIA_KWARGS and v is not None}
    if num_return_sequences == 1 or input_ids.shape[1] < 2:
        return GenerationMixin.generate(model, input_ids=input_ids, attention_mask=attention_mask,
                                        num_return_sequences=num_return_sequences, **kwargs)
    cache = prefill(model, input_ids, attention_mask, **media)
    rows = torch.arange(len(input_ids), device=input_ids.device).repeat_interleave(num_return_sequences)
    return _generate_from(model, cache, rows, input_ids[rows], attention_mask[rows], kwargs)


@contextlib.contextmanager
def prefill_once_generation(model: Any) -> Iterator[None]:
    """Within the block, ``model.generate`` is :func:`generate_shared` (for callers that own the ``generate`` call,
    such as TRL's rollout, through any wrapper that ends in ``model.generate``: PEFT, accelerate)."""
    model.generate = functools.partial(generate_shared, model)
    try:
        yield
    finally:
        del model.generate
