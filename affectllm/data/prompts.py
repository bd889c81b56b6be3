"""Prompt templates and SFT targets in the completion format of DESIGN.md §3.

Every target, whatever the task, is a full completion ``<think>…</think><answer>…</answer><confidence>…
</confidence>`` so that stage 2 starts from a model that already writes the format. The task mix follows AffectGPT:
describe-and-reason from the caption, an open-vocabulary label sentence, a single label, and an AU description;
``brief`` (AU codes + labels in one short sentence) suits small models that cannot learn long captions.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from ..config import SFT_TASKS, SftOptions
from ..jsonl import iter_jsonl
from ..parsing import format_completion, gold_labels
from ..taxonomy.facs import au_name
from ..types import FUSION_PLACEHOLDER, MODALITY_TABLE, Clip

# Short on purpose: the constant system prompt is paid on every row of every step (the long one was 226 of ~300
# tokens a row and doubled the tiny model's step time); SFT teaches the format, the prompt only names it.
SYSTEM_PROMPT = "Reason in <think></think>, give emotion labels in <answer></answer>, confidence 0-1 in <confidence>."

QUESTIONS: dict[str, str] = {
    "describe": "Describe the emotional cues in the face, the voice and the words, reason about them, "
                "and say which emotions the person feels.",
    "ov_labels": "Which emotions does the person feel? List every label that applies.",
    "single": "Which single emotion best describes the person?",
    "au": "Which facial Action Units are active, and what emotions do they suggest?",
    "brief": "Name the active facial Action Units and the emotions the person feels, briefly.",
}
TASKS: tuple[str, ...] = tuple(QUESTIONS)
DEFAULT_MIX: dict[str, float] = SftOptions().mix
assert TASKS == SFT_TASKS, "QUESTIONS and config.SFT_TASKS name the same tasks"


# A placeholder the transcript happens to contain would be read as media by the processor (a count mismatch that
# stops the batch): it is written with angle quotes instead, which the tokenizer reads as text.
_ESCAPES: dict[str, str] = {
    tag: f"\u2039{tag[1:-1]}\u203a" for tag in (*(m.placeholder for m in MODALITY_TABLE), FUSION_PLACEHOLDER)
}


def escape_placeholders(text: str) -> str:
    """``text`` with every media placeholder (``<video>``, ``<audio>``, ``<face>``, ``<au>``, ``<fusion>``) escaped.

    >>> escape_placeholders("I said <video> twice")
    'I said ‹video› twice'
    """
    for tag, escaped in _ESCAPES.items():
        text = text.replace(tag, escaped)
    return text


MAX_TRANSCRIPT_CHARS = 4000
"""Characters of a transcript a prompt carries (about 1000 tokens; the rest is cut with a note): a 5 MB transcript
must not become a 1.7 GB batch."""


def cut_transcript(text: str, limit: int = MAX_TRANSCRIPT_CHARS) -> str:
    """``text`` cut to ``limit`` characters, with a note saying how much was left out.

    >>> cut_transcript("a b c d", 3)
    'a b [... 4 more characters cut]'
    """
    if len(text) <= limit:
        return text
    return f"{text[:limit].rstrip()} [... {len(text) - limit} more characters cut]"


def user_content(present: Sequence[str], transcript: str | None, question: str) -> str:
    """The user turn: media placeholders of the present modalities, the transcript (placeholders escaped, cut to
    :data:`MAX_TRANSCRIPT_CHARS`), the question."""
    prefix = "".join(m.placeholder for m in MODALITY_TABLE if m.name in present)
    text = escape_placeholders(cut_transcript(transcript.strip())) if transcript else ""
    said = f'The person says: "{text}"\n' if text else ""
    return f"{prefix}\n{said}{question}" if prefix else f"{said}{question}"


def messages(present: Sequence[str], transcript: str | None, task: str = "describe",
             question: str | None = None) -> list[dict[str, str]]:
    """Conversational prompt (system + user) for a clip with the given modalities."""
    if question is None and task not in QUESTIONS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": user_content(present, transcript, question or QUESTIONS[task])}]


def au_phrase(aus: Sequence[str]) -> str:
    """``"AU6 cheek raiser, AU12 lip corner puller"`` (codes without a FACS name stay bare)."""
    return ", ".join(f"{a} {au_name(a)}" if au_name(a) else a for a in aus)


def sft_target(clip: Clip, task: str, confidence: float = 0.8) -> str | None:
    """The SFT completion for ``clip`` under ``task``, or None when the clip lacks what the task needs.

    Raises:
        ValueError: a label the parser would not read back as written
            (see :func:`~affectllm.parsing.format_completion`).
    """
    labels = gold_labels(clip)
    if not labels:
        return None
    if task == "describe":
        if not clip.caption:
            return None
        return format_completion(clip.caption, labels, confidence)
    if task == "ov_labels":
        cues = f"The cues point to {', '.join(labels)}."
        return format_completion(cues, labels, confidence)
    if task == "single":
        single = clip.emotion or labels[0]
        return format_completion(f"The strongest cue points to {single}.", [single], confidence)
    if task == "brief":
        cues = f"{', '.join(clip.aus)}. " if clip.aus else ""  # codes only: short enough for a tiny model
        return format_completion(f"{cues}The cues point to {', '.join(labels)}.", labels, confidence)
    if task == "au":
        if not clip.aus:
            return None
        return format_completion(f"Active facial Action Units: {au_phrase(clip.aus)}.", labels, confidence)
    raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")


def read_confidences(path: str | None) -> dict[str, float]:
    """``{clip id: confidence}`` from a JSONL of ``{"id", "confidence"}`` rows (empty when ``path`` is None).

    Raises:
        ValueError: a row without an id or with a confidence outside 0..1 (names the file and line).
    """
    if path is None:
        return {}
    out: dict[str, float] = {}
    for number, row, error in iter_jsonl(path):
        if error is not None:
            raise ValueError(f"{path}:{number}: {error.message} ({error.hint})")
        value = row.get("confidence") if isinstance(row, dict) else None
        if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0 or "id" not in row:
            raise ValueError(f"{path}:{number}: expected {{\"id\": ..., \"confidence\": 0..1}}, got {row!r}; "
                             "rewrite the file (the encoders stage writes confidence.jsonl)")
        out[str(row["id"])] = float(value)
    return out


# Targets stay inside [0.1, 0.9]: written with two decimals, a confidence of 1.0 is the tokens "1", ".", "00" and
# 0.0 is "0", ".", "00"; with many 1.0 targets the model learnt "00" after the point and, unsure of the first
# digit, wrote 0.00 for a third of the test clips (measured: issue 11 demo, 56 of 160). Inside the range the first
# token is always "0" and the decimal token carries the level.
TARGET_RANGE = (0.1, 0.9)


def target_confidence(clip_id: str, table: Mapping[str, float], default: float) -> float:
    """The confidence an SFT target of ``clip_id`` says: its ``table`` entry rounded to 0.1 (ten levels are what a
    tiny LLM can learn to tell apart and a calibration map can still sort) and kept in :data:`TARGET_RANGE`, else
    ``default``."""
    if clip_id not in table:
        return default
    low, high = TARGET_RANGE
    return min(max(round(table[clip_id], 1), low), high)


def choose_task(clip: Clip, mix: Mapping[str, float], rng: random.Random, confidence: float = 0.8) -> tuple[str, str]:
    """Draw a task for ``clip`` from ``mix`` among those it supports; return (task, target).

    Raises:
        ValueError: the clip supports no task of the mix (it has no labels), or a label would not read back.
    """
    try:
        usable = {t: w for t, w in mix.items() if w > 0 and sft_target(clip, t, confidence) is not None}
    except ValueError as err:
        raise ValueError(f"clip {clip.id}: {err}") from err
    if not usable:
        raise ValueError(f"clip {clip.id}: no usable SFT task (needs labels or emotion; caption for describe)")
    task = rng.choices(list(usable), weights=list(usable.values()))[0]
    return task, sft_target(clip, task, confidence) or ""

