"""From manifest clips to model batches: a clip store (prep cache or live decoding) and the SFT collator."""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..types import Clip, DecodedClip
from .manifest import row_to_clip
from .prompts import messages

log = logging.getLogger(__name__)
MEDIA_ARGS = {"video": "videos", "audio": "audios", "face": "faces", "au": "au_features"}
IGNORE_INDEX = -100


class ClipStore:
    """Decoded media per clip id: read from a ``data prep`` folder when it has the clip, decoded live otherwise.

    Live decoding takes frames and audio only (face crops and AU features come from ``data prep``, which runs the
    face pipeline once per clip). Results are kept in a small LRU cache; a clip that fails to decode is logged and
    served without its media (text only) so a batch goes on.

    Args:
        prep_dir: a folder written by ``affectllm data prep`` (its ``prep.jsonl`` and ``arrays/``), or None.
        num_frames: frames sampled uniformly per clip when decoding live.
        cache_size: clips kept in memory.
    """

    def __init__(self, prep_dir: str | None = None, num_frames: int = 8, cache_size: int = 512) -> None:
        self.prep_dir = Path(prep_dir) if prep_dir else None
        self.num_frames = num_frames
        self.cache_size = cache_size
        self._cache: OrderedDict[str, DecodedClip] = OrderedDict()
        self._prep: dict[str, dict[str, Any]] = self._read_prep() if self.prep_dir else {}
        self.failures: dict[str, str] = {}

    def _read_prep(self) -> dict[str, dict[str, Any]]:
        path = self.prep_dir / "prep.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no prep.jsonl; run `affectllm data prep MANIFEST --out {self.prep_dir}`")
        rows = {}
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a torn last line from a killed prep run
                continue
            if row.get("arrays") and not row.get("error"):
                rows[str(row["id"])] = row
        return rows

    def get(self, clip: Clip) -> DecodedClip:
        """The decoded media of ``clip`` (modalities it lacks are None)."""
        if clip.id in self._cache:
            self._cache.move_to_end(clip.id)
            return self._cache[clip.id]
        decoded = self._load(clip)
        self._cache[clip.id] = decoded
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return decoded

    def _load(self, clip: Clip) -> DecodedClip:
        row = self._prep.get(clip.id)
        if row is not None:
            with np.load(self.prep_dir / row["arrays"]) as z:
                found = z["face_found"] if "face_found" in z else None
                has_face = found is not None and bool(np.any(found))
                return DecodedClip(
                    id=clip.id, frames=z["frames"] if "frames" in z else None,
                    audio=z["audio"] if "audio" in z else None,
                    faces=z["faces"] if has_face and "faces" in z else None,
                    au_features=z["au_features"] if has_face and "au_features" in z else None,
                    transcript=clip.transcript)
        if not (clip.video or clip.audio):
            return DecodedClip(id=clip.id, transcript=clip.transcript)
        from ..media.decode import DecodeConfig, MediaError, decode_clip
        from ..media.sampling import SamplingConfig

        cfg = DecodeConfig(sampling=SamplingConfig(num_frames=self.num_frames, repeat=True))
        try:
            return decode_clip(clip, cfg)
        except (MediaError, OSError) as err:
            self.failures[clip.id] = str(err)
            log.warning("clip %s: media not decodable, using its text only: %s", clip.id, err)
            return DecodedClip(id=clip.id, transcript=clip.transcript)


def present_modalities(decoded: DecodedClip, allowed: Sequence[str]) -> list[str]:
    """Modalities the clip carries and the model takes ("face" crops and "au" vectors count separately)."""
    has = {"video": decoded.frames is not None, "audio": decoded.audio is not None,
           "face": decoded.faces is not None, "au": decoded.au_features is not None}
    return [m for m in ("video", "audio", "face", "au") if has[m] and m in allowed]


def media_kwargs(decoded: Sequence[DecodedClip], present: Sequence[Sequence[str]]) -> dict[str, list]:
    """Processor keyword arguments (``videos=[...]`` etc.) for rows with the given present modalities."""
    attr = {"video": "frames", "audio": "audio", "face": "faces", "au": "au_features"}
    return {MEDIA_ARGS[m]: [getattr(d, attr[m]) if m in p else None for d, p in zip(decoded, present)]
            for m in MEDIA_ARGS}


def prompt_text(processor: Any, present: Sequence[str], transcript: str | None, question: str) -> str:
    """The chat-templated prompt (system + user, generation prompt added) for a clip with ``present`` media."""
    return processor.apply_chat_template(messages(present, transcript, question=question), add_generation_prompt=True,
                                         tokenize=False)


class SftCollator:
    """Rows ``{"clip": manifest row, "question": str, "target": completion}`` -> a training batch.

    The prompt is built here, once the clip's media are loaded, so its placeholders name exactly the modalities
    the clip turned out to have (a video whose face was never found gets no ``<face>``).

    Loss is on the assistant's tokens only: the prompt (system, user, media placeholders) is labelled -100. Prompt
    and target are tokenized apart and joined, so the boundary is exact; too-long rows lose the end of the target,
    never a placeholder.
    """

    def __init__(self, processor: Any, store: ClipStore, modalities: Sequence[str], max_length: int = 1024) -> None:
        self.processor = processor
        self.store = store
        self.modalities = list(modalities)
        self.max_length = max_length
        tok = processor.tokenizer
        self.eos = tok.convert_tokens_to_ids(tok.eos_token)
        self.pad = tok.pad_token_id

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        clips = [row_to_clip(r["clip"], "") if isinstance(r["clip"], dict) else r["clip"] for r in rows]
        decoded = [self.store.get(c) for c in clips]
        present = [present_modalities(d, self.modalities) for d in decoded]
        prompts = [prompt_text(self.processor, p, c.transcript, r["question"])
                   for r, p, c in zip(rows, present, clips)]
        enc = self.processor(prompts, clip_ids=[c.id for c in clips], padding=False, return_tensors=None,
                             **media_kwargs(decoded, present))
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
