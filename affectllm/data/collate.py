"""From manifest clips to model batches: a clip store (prep cache or live decoding) and the SFT collator.

With a prep folder that holds encoder features (``data prep --cache-features``, see :mod:`affectllm.data.cache`),
the store serves them after checking their fingerprint against the trained model, and the collator passes them as
cached encoder outputs (``video_features`` ...) in place of raw media for frozen towers.
"""

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
        prep_dir: a folder written by ``affectllm data prep`` (its ``prep.jsonl``, ``arrays/`` and, with
            ``--cache-features``, ``features/``), or None.
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
        self._fingerprint: str | None = None
        self._features: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()

    def features_for(self, model: Any, processor: Any) -> bool:
        """Serve cached encoder features made by ``model``'s encoders (checked by fingerprint).

        Args:
            model: the model being trained (PEFT-wrapped or not).
            processor: its processor (its media settings are part of the fingerprint).

        Returns:
            True when the prep folder has cached features (checked: the first clip's fingerprint matches now, every
            other clip's when it is read); False when it has none (live encoders).

        Raises:
            ValueError: the cache was made by other encoders or media settings (a stale cache).
        """
        rows = [r for r in self._prep.values() if r.get("features")]
        if not rows:
            return False
        from .cache import encoder_fingerprint

        self._fingerprint = encoder_fingerprint(model, processor)
        self._features.clear()
        self.features(str(rows[0]["id"]))
        return True

    def features(self, clip_id: str) -> dict[str, np.ndarray]:
        """Cached encoder features of a clip, ``{modality: [l, d]}``; empty when there are none or not enabled.

        Raises:
            ValueError: the clip's features were made by other encoders than the model passed to
                :meth:`features_for`.
        """
        row = self._prep.get(clip_id)
        if self._fingerprint is None or row is None or not row.get("features"):
            return {}
        if clip_id in self._features:
            self._features.move_to_end(clip_id)
            return self._features[clip_id]
        path = self.prep_dir / row["features"]
        if not path.is_file():  # features/ deleted to fall back to live encoders
            return {}
        from .cache import read_cached

        feats = read_cached(path, self._fingerprint)
        self._features[clip_id] = feats
        if len(self._features) > self.cache_size:
            self._features.popitem(last=False)
        return feats

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
    """Modalities the clip carries (:meth:`DecodedClip.present`) that the model takes."""
    return [m for m in decoded.present() if m in allowed]


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

    def cached_media(self, ids: Sequence[str], present: Sequence[Sequence[str]]) -> dict[str, list[Any]]:
        """Cached features usable for this batch: ``{modality: per row [l, d] or None}`` (see the class)."""
        if self.model is None:
            return {}
        from .cache import frozen_towers

        feats = [self.store.features(i) for i in ids]
        out = {}
        for m in frozen_towers(self.model):
            items = [f.get(m) if m in p else None for f, p in zip(feats, present)]
            rows = [i for i, p in enumerate(present) if m in p]
            if m not in self.modalities or not rows or any(items[i] is None for i in rows):
                continue
            if m == "audio" and len({items[i].shape for i in rows}) > 1:
                continue  # waveform encoders: lengths differ per clip, encode live
            out[m] = items
        return out

    def _process(self, prompts: list[str], ids: list[str], decoded: list[DecodedClip], present: list[list[str]],
                 cached: dict[str, list[Any]]) -> dict[str, Any]:
        """Processor output (unpadded ``input_ids`` per row, media tensors; cached towers as features)."""
        raw = [[m for m in p if m not in cached] for p in present]
        return dict(self.processor(prompts, clip_ids=ids, padding=False, return_tensors=None,
                                   encoder_features=cached or None, **media_kwargs(decoded, raw)))

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        clips = [row_to_clip(r["clip"], "") if isinstance(r["clip"], dict) else r["clip"] for r in rows]
        decoded = [self.store.get(c) for c in clips]
        present = [present_modalities(d, self.modalities) for d in decoded]
        prompts = [prompt_text(self.processor, p, c.transcript, r["question"])
                   for r, p, c in zip(rows, present, clips)]
        ids = [c.id for c in clips]
        enc = self._process(prompts, ids, decoded, present, self.cached_media(ids, present))
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
