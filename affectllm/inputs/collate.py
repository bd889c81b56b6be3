"""From decoded clips to model batches: prompt text, processor arguments and the SFT collator.

With a prep folder that holds encoder features (``data prep --cache-features``, see :mod:`affectllm.inputs.features`),
the store serves them after checking their fingerprint against the trained model, and the collator passes them as
cached encoder outputs (``video_features`` ...) in place of raw media for frozen towers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..data.manifest import row_to_clip
from ..data.prompts import messages
from ..types import MODALITY_TABLE, Clip, DecodedClip
from .store import ClipStore

log = logging.getLogger(__name__)
IGNORE_INDEX = -100


def present_modalities(decoded: DecodedClip, allowed: Sequence[str]) -> list[str]:
    """Modalities the clip carries (:meth:`DecodedClip.present`) that the model takes."""
    return [m for m in decoded.present() if m in allowed]


def media_kwargs(decoded: Sequence[DecodedClip], present: Sequence[Sequence[str]]) -> dict[str, list]:
    """Processor keyword arguments (``videos=[...]`` etc.) for rows with the given present modalities."""
    return {m.processor_kwarg: [getattr(d, m.clip_attr) if m.name in p else None for d, p in zip(decoded, present)]
            for m in MODALITY_TABLE}


def prompt_text(processor: Any, present: Sequence[str], transcript: str | None, question: str) -> str:
    """The chat-templated prompt (system + user, generation prompt added) for a clip with ``present`` media."""
    return processor.apply_chat_template(messages(present, transcript, question=question), add_generation_prompt=True,
                                         tokenize=False)


@dataclass
class PromptBatch:
    """What :func:`build_prompt_inputs` makes of a batch of clips.

    Attributes:
        texts: the chat-templated prompt per row (placeholders of the modalities the row has).
        present: per row, the modalities it carries that the model takes.
        decoded: per row, the decoded clip.
        inputs: the processor's output (``input_ids``, ``attention_mask``, media tensors), or None when
            ``process=False``.
    """

    texts: list[str]
    present: list[list[str]]
    decoded: list[DecodedClip]
    inputs: Any = None


def usable_features(store: ClipStore, model: Any, ids: Sequence[str], present: Sequence[Sequence[str]],
                    modalities: Sequence[str]) -> dict[str, list[Any]]:
    """The store's cached encoder features usable for a batch: ``{modality: per row [l, d] or None}`` for each
    frozen tower of ``model`` (checked now, so a trainable policy applied later counts) whose every row with the
    modality has them; empty unless :meth:`ClipStore.features_for` was called. Audio features of different lengths
    (waveform encoders, whose live input is padded per batch) are left out: that batch encodes audio live."""
    from .features import frozen_towers

    feats = [store.features(i) for i in ids]
    out = {}
    for m in frozen_towers(model):
        items = [f.get(m) if m in p else None for f, p in zip(feats, present)]
        rows = [i for i, p in enumerate(present) if m in p]
        if m not in modalities or not rows or any(items[i] is None for i in rows):
            continue
        if m == "audio" and len({items[i].shape for i in rows}) > 1:
            continue
        out[m] = items
    return out


def build_prompt_inputs(processor: Any, store: ClipStore, clips: Sequence[Clip], questions: Sequence[str],
                        modalities: Sequence[str], dedup: bool = True, process: bool = True,
                        model: Any = None, **processor_kwargs: Any) -> PromptBatch:
    """The one path from clips to model inputs (SFT, GRPO, evaluation and inference all use it): decode (or read
    from the prep folder), keep the modalities the model takes, build each prompt with the training prompts, and
    run the processor over the batch (``clip_ids`` when ``dedup``, so rows sharing a clip encode it once).

    Args:
        processor: the model's processor.
        store: where the clips' media come from.
        clips: the batch's clips.
        questions: per row, the user question.
        modalities: the modalities the model takes (``model.config.enabled_modalities()``).
        dedup: pass ``clip_ids`` to the processor.
        process: run the processor (False: texts and media only, for callers that process themselves).
        model: the model the inputs are for; with it, frozen towers whose features the store caches (after
            :meth:`ClipStore.features_for`) get those features in place of raw media (:func:`usable_features`).
        processor_kwargs: passed to the processor (``padding=False``, ``return_tensors=None`` ...).
    """
    if len(questions) != len(clips):
        raise ValueError(f"{len(questions)} questions for {len(clips)} clips")
    decoded = [store.get(c) for c in clips]
    present = [present_modalities(d, modalities) for d in decoded]
    texts = [prompt_text(processor, p, c.transcript, q) for p, c, q in zip(present, clips, questions)]
    batch = PromptBatch(texts=texts, present=present, decoded=decoded)
    if process:
        ids = [c.id for c in clips] if dedup else None
        cached = usable_features(store, model, [c.id for c in clips], present, modalities) if model is not None else {}
        raw = [[m for m in p if m not in cached] for p in present]
        batch.inputs = processor(texts, clip_ids=ids, encoder_features=cached or None, **media_kwargs(decoded, raw),
                                 **processor_kwargs)
    return batch


class SftCollator:
    """Rows ``{"clip": manifest row, "question": str, "target": completion}`` -> a training batch.

    The prompt is built here, once the clip's media are loaded, so its placeholders name exactly the modalities
    the clip turned out to have (a video whose face was never found gets no ``<face>``).

    Loss is on the assistant's tokens only: the prompt (system, user, media placeholders) is labelled -100. Prompt
    and target are tokenized apart and joined, so the boundary is exact; too-long rows lose the end of the target,
    never a placeholder.

    Cached encoder features: given ``model``, the store is checked against it (:meth:`ClipStore.features_for`) and,
    per batch and tower modality, when that tower is frozen (checked per batch, so a trainable policy applied after
    the collator is built counts) and every row with the modality has cached features for it, the batch carries
    ``<m>_features`` ``[u, l, d]`` over the batch's unique clips (first appearance among rows with ``m``, as
    the processor orders them) and ``<m>_index`` ``[r]`` instead of raw media. Video and face features of clips with
    different frame counts are brought to the longest by nearest-index repetition, as the processor does with frames
    (the towers encode frame by frame, so this equals encoding the repeated frames); audio features of different
    lengths (waveform encoders, whose live input is padded per batch) fall back to live encoding.

    Args:
        processor: the model's processor.
        store: where clips' media (and cached features) come from.
        modalities: the modalities the model takes.
        max_length: prompt + target tokens per row at most.
        model: the model being trained; None never uses cached features.
    """

    def __init__(self, processor: Any, store: ClipStore, modalities: Sequence[str], max_length: int = 1024,
                 model: Any = None) -> None:
        self.processor = processor
        self.store = store
        self.modalities = list(modalities)
        self.max_length = max_length
        tok = processor.tokenizer
        self.eos = tok.convert_tokens_to_ids(tok.eos_token)
        self.pad = tok.pad_token_id
        self.model = model if model is not None and store.features_for(model, processor) else None

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        clips = [row_to_clip(r["clip"], "") if isinstance(r["clip"], dict) else r["clip"] for r in rows]
        # unpadded input_ids per row (padded below, after the target is joined); cached towers as features
        enc = dict(build_prompt_inputs(self.processor, self.store, clips, [r["question"] for r in rows],
                                       self.modalities, model=self.model, padding=False, return_tensors=None).inputs)
        tok = self.processor.tokenizer
        seqs, labels = [], []
        for prompt_ids, row in zip(enc["input_ids"], rows):
            target = tok(row["target"], add_special_tokens=False)["input_ids"] + [self.eos]
            room = max(self.max_length - len(prompt_ids), 1)
            target = target[:room]
            seqs.append(list(prompt_ids) + target)
            labels.append([IGNORE_INDEX] * len(prompt_ids) + target)
        width = max(len(s) for s in seqs)
        batch = {
            "input_ids": torch.tensor([[self.pad] * (width - len(s)) + s for s in seqs]),
            "attention_mask": torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs]),
            "labels": torch.tensor([[IGNORE_INDEX] * (width - len(s)) + lab for s, lab in zip(seqs, labels)]),
        }
        for key, value in enc.items():
            if key not in ("input_ids", "attention_mask"):
                batch[key] = value
        return batch
