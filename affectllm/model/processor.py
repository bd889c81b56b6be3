"""`AffectLlmProcessor`: tokenizer + chat template + media processing with placeholder expansion.

A prompt names each medium of its clip once (``<video>``, ``<audio>``, ``<face>``, ``<au>``); the processor expands
each placeholder to the number of LLM tokens the model gives that modality, adds ``<fusion>`` after the audio block
when the model pre-fuses audio and video, and turns raw media into the model's tensors. A clip without a modality
simply has no placeholder for it: no tokens, no zeros.

Rows that share a clip (a GRPO group) can pass ``clip_ids``: each unique clip is then processed and encoded once and
``<modality>_index`` maps rows to clips.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature, ProcessorMixin

from ..types import DEFAULT_MEDIA_TOKENS, MODALITIES
from .configuration import FEATURE_INPUT_NAMES, MASK_INPUT_NAMES, MEDIA_INPUT_NAMES, MEDIA_TOKENS

SPECIAL_TOKENS: dict[str, str] = {"bos": "<|im_start|>", "eos": "<|im_end|>", "pad": "<|pad|>"}
# ChatML; content is a string that may contain media placeholders.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>'"
    " + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SAMPLE_RATE = 16000
WORDS_MAX_TOKENS = 512
"""Transcript tokens the words tower reads at most (the prompt carries at most about 1000; the rest is cut)."""


def media_prefix(present: Sequence[str]) -> str:
    """The placeholders for a clip's present modalities, in canonical order (``"<video><audio>"``)."""
    return "".join(MEDIA_TOKENS[m] for m in MODALITIES if m in present)


def _resample_time(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Bring per-clip sequences ``[t_i, ...]`` to a common length (the longest) by nearest-index repetition."""
    t = max(len(a) for a in arrays)
    return [a if len(a) == t else a[np.round(np.linspace(0, len(a) - 1, t)).astype(int)] for a in arrays]


class AffectLlmProcessor(ProcessorMixin):
    """Processor of :class:`AffectLlmForConditionalGeneration`.

    Args:
        image_processor: frames -> normalised pixels for the video tower.
        face_image_processor: face crops -> normalised pixels for the face tower.
        feature_extractor: 16 kHz waveforms -> audio encoder input (Whisper log-mel, or waveform for HuBERT-style).
        tokenizer: the LLM's tokenizer, with the media placeholders added as special tokens.
        media_tokens: LLM tokens per modality (must equal the model config's ``media_tokens``; default
            :data:`affectllm.types.DEFAULT_MEDIA_TOKENS`, as the config's).
        modalities: the modalities the model takes (``config.enabled_modalities()``; default all of
            :data:`affectllm.types.MODALITIES`).
    """

    def __init__(self, image_processor=None, face_image_processor=None, feature_extractor=None, tokenizer=None,
                 media_tokens: dict[str, int] | None = None, modalities: list[str] | None = None,
                 chat_template: str | None = None, **kwargs: Any) -> None:
        self.media_tokens = {**DEFAULT_MEDIA_TOKENS, **(media_tokens or {})}
        self.modalities = list(modalities or MODALITIES)
        super().__init__(image_processor, face_image_processor, feature_extractor, tokenizer,
                         chat_template=chat_template or getattr(tokenizer, "chat_template", None) or CHAT_TEMPLATE)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", *MEDIA_INPUT_NAMES.values(), *MASK_INPUT_NAMES.values(),
                *(f"{m}_index" for m in MEDIA_INPUT_NAMES)]

    def media_token_ids(self) -> dict[str, int]:
        """Token id of each placeholder in the tokenizer."""
        return {m: self.tokenizer.convert_tokens_to_ids(t) for m, t in MEDIA_TOKENS.items()}

    def _check_rows(self, texts: list[str], media: dict[str, list]) -> None:
        for i, text in enumerate(texts):
            for m, items in media.items():
                n = text.count(MEDIA_TOKENS[m])
                has = items[i] is not None
                if n > 1:
                    raise ValueError(f"row {i}: {MEDIA_TOKENS[m]} appears {n} times; one clip per row")
                if n == 1 and not has:
                    raise ValueError(f"row {i}: text has {MEDIA_TOKENS[m]} but no {m} input was given for it")
                if has and n == 0:
                    raise ValueError(f"row {i}: {m} input given but the text has no {MEDIA_TOKENS[m]} placeholder")
                if has and m not in self.modalities:
                    raise ValueError(f"row {i}: this model takes no {m} (it takes {', '.join(self.modalities)})")
            if MEDIA_TOKENS["fusion"] in text:
                raise ValueError(f"row {i}: {MEDIA_TOKENS['fusion']} is added by the processor; remove it")

    def _expand(self, text: str) -> str:
        for m in MODALITIES:
            text = text.replace(MEDIA_TOKENS[m], MEDIA_TOKENS[m] * self.media_tokens[m])
        if "fusion" in self.modalities and MEDIA_TOKENS["video"] in text and MEDIA_TOKENS["audio"] in text:
            block = MEDIA_TOKENS["audio"] * self.media_tokens["audio"]
            text = text.replace(block, block + MEDIA_TOKENS["fusion"] * self.media_tokens["fusion"], 1)
        return text

    @staticmethod
    def _unique(items: list, clip_ids: Sequence[str] | None) -> tuple[list, list[int] | None]:
        """Present items -> (unique items, index per present row or None when every row is its own clip)."""
        rows = [i for i, x in enumerate(items) if x is not None]
        if clip_ids is None:
            return [items[i] for i in rows], None
        first: dict[str, int] = {}
        unique, index = [], []
        for i in rows:
            key = str(clip_ids[i])
            if key not in first:
                first[key] = len(unique)
                unique.append(items[i])
            index.append(first[key])
        return unique, index

    def _frames(self, processor: Any, clips: list[np.ndarray]) -> torch.Tensor:
        """Clips of frames ``[t, h, w, 3]`` uint8 -> ``[u, t, 3, s, s]``."""
        clips = _resample_time([np.asarray(c) for c in clips])
        out = [processor(images=list(c), return_tensors="pt")["pixel_values"] for c in clips]
        return torch.stack(out)

    def _audio(self, waves: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """Waveforms ``[n_i]`` -> the audio tower's input: Whisper log-mel ``[u, mel, frames]`` at the extractor's
        fixed length, or waveforms ``[u, n]`` right-padded to the longest with their padding mask ``[u, n]``."""
        waves = [np.asarray(w, dtype=np.float32) for w in waves]
        if self._is_whisper():
            feats = self.feature_extractor(waves, sampling_rate=SAMPLE_RATE, return_tensors="pt",
                                           padding="max_length")
            return {MEDIA_INPUT_NAMES["audio"]: feats["input_features"]}
        # The mask also makes the extractor normalise each clip over its own samples only.
        feats = self.feature_extractor(waves, sampling_rate=SAMPLE_RATE, return_tensors="pt", padding=True,
                                       return_attention_mask=True)
        return {MEDIA_INPUT_NAMES["audio"]: feats["input_values"],
                MASK_INPUT_NAMES["audio"]: feats["attention_mask"].long()}

    @staticmethod
    def _features(modality: str, unique: list[np.ndarray]) -> torch.Tensor:
        """Cached tower outputs ``[l, d]`` of unique clips -> ``[u, l, d]``."""
        arrays = [np.asarray(f, dtype=np.float32) for f in unique]
        if len({a.shape for a in arrays}) > 1:
            if modality == "audio":
                raise ValueError(f"audio encoder features of different lengths {sorted({a.shape for a in arrays})}; "
                                 "encode this batch live")
            arrays = _resample_time(arrays)  # per-frame outputs: same rule as frames
        return torch.from_numpy(np.stack(arrays))

    def _words(self, transcripts: list[str]) -> dict[str, torch.Tensor]:
        """Transcripts -> the words tower's token ids ``[u, n]``, right-padded, and their mask ``[u, n]``; text
        that looks like a placeholder stays text (``split_special_tokens``)."""
        enc = self.tokenizer([str(t).strip() for t in transcripts], add_special_tokens=False, padding=True,
                             padding_side="right", truncation=True, max_length=WORDS_MAX_TOKENS,
                             split_special_tokens=True, return_tensors="pt")
        return {MEDIA_INPUT_NAMES["words"]: enc["input_ids"], MASK_INPUT_NAMES["words"]: enc["attention_mask"]}

    def _is_whisper(self) -> bool:
        return "input_features" in getattr(self.feature_extractor, "model_input_names", [])

    @staticmethod
    def _media_per_row(b: int, raw: dict[str, list | None], cached: dict[str, list]) -> dict[str, list]:
        """``{modality: per row, its media or cached tower output or None}``, checked for length and overlap."""
        media = {m: (list(x) if x is not None else [None] * b) for m, x in raw.items()}
        for m, feats in cached.items():
            if m not in FEATURE_INPUT_NAMES:
                raise ValueError(f"encoder_features: {m!r} has no cacheable tower "
                                 f"(one of {', '.join(FEATURE_INPUT_NAMES)})")
            if any(f is not None for f in media[m]):
                raise ValueError(f"{m}: pass raw media or encoder_features, not both")
            media[m] = feats
        for m, items in media.items():
            if len(items) != b:
                raise ValueError(f"{m}: {len(items)} items for {b} prompts; pass None for rows without {m}")
        return media

    def __call__(self, text: str | list[str], videos: list | None = None, audios: list | None = None,
                 faces: list | None = None, au_features: list | None = None, words: list | None = None,
                 clip_ids: Sequence[str] | None = None,
                 padding: bool | str = True, return_tensors: str = "pt",
                 encoder_features: dict[str, list] | None = None, **tokenizer_kwargs: Any) -> BatchFeature:
        """Tokenize prompts and process their media.

        Args:
            text: one prompt or a batch; each names its clip's media with placeholders.
            videos: per row, frames ``[t, h, w, 3]`` uint8 or None.
            audios: per row, a 16 kHz mono waveform ``[n]`` or None.
            faces: per row, face crops ``[t, s, s, 3]`` uint8 or None.
            au_features: per row, per-frame AU/landmark vectors ``[t, f]`` or None.
            words: per row, the transcript the words tower reads, or None (models with a words tower).
            clip_ids: per row, an id; rows with the same id share (and encode once) one clip.
            encoder_features: ``{"video"|"audio"|"face": per row, that tower's cached output [l, d] or None}``, in
                place of the raw media of that modality (the feature cache of ``data prep``); video/face outputs
                of different frame counts are brought to a common count like frames, audio ones must match.

        Returns:
            ``input_ids``, ``attention_mask`` ``[b, s]`` and, per present modality, its media tensor over unique clips
            (``video_features`` etc. for cached modalities; ``audio_attention_mask`` with padded waveforms) plus
            ``<modality>_index`` when ``clip_ids`` is given.
        """
        texts = [text] if isinstance(text, str) else list(text)
        raw = {"video": videos, "audio": audios, "face": faces, "au": au_features, "words": words}
        cached = {m: list(v) for m, v in (encoder_features or {}).items()}
        media = self._media_per_row(len(texts), raw, cached)
        self._check_rows(texts, media)
        # Left padding always: decoder-only generation continues from the last position of every row.
        tokenizer_kwargs.setdefault("padding_side", "left")
        data: dict[str, Any] = dict(self.tokenizer([self._expand(t) for t in texts], padding=padding,
                                                   return_tensors=return_tensors, add_special_tokens=False,
                                                   **tokenizer_kwargs))
        for m, items in media.items():
            unique, index = self._unique(items, clip_ids)
            if not unique:
                continue
            if m in cached:
                data[FEATURE_INPUT_NAMES[m]] = self._features(m, unique)
            elif m == "video":
                data[MEDIA_INPUT_NAMES[m]] = self._frames(self.image_processor, unique)
            elif m == "face":
                data[MEDIA_INPUT_NAMES[m]] = self._frames(self.face_image_processor, unique)
            elif m == "audio":
                data.update(self._audio(unique))
            elif m == "words":
                data.update(self._words(unique))
            else:
                data[MEDIA_INPUT_NAMES[m]] = torch.tensor(np.stack(_resample_time(
                    [np.asarray(a, dtype=np.float32) for a in unique])))
            if index is not None:
                data[f"{m}_index"] = torch.tensor(index, dtype=torch.long)
        return BatchFeature(data=data)
