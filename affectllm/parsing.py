"""The one parser of model text: ``parse_completion(text) -> Prediction`` (rewards, metrics, labeling and chat).

The completion format (DESIGN.md §3) is::

    <think>cues, AUs, reasoning</think><answer>label, label</answer><confidence>0.82</confidence>

The parser never raises on model text. It tolerates missing, unclosed, repeated and re-ordered parts, reads what it
can and lists why the text is not in format (``Prediction.errors``, short stable codes below).

>>> p = parse_completion("<think>AU06 and AU12 active, no AU4.</think><answer>Happy, joyful.</answer>"
...                      "<confidence>0.8</confidence>")
>>> p.labels, p.aus, p.confidence, p.format_ok
(['happy', 'joyful'], ['AU6', 'AU12'], 0.8, True)
>>> q = parse_completion("<answer>sad</answer><confidence>90%</confidence>")
>>> q.labels, q.confidence, q.format_ok, q.errors
(['sad'], 0.9, False, ['missing_think', 'confidence_percent'])

Error codes: ``missing_<tag>``, ``repeated_<tag>``, ``unclosed_<tag>``, ``empty_answer``, ``bad_order``,
``text_outside_tags``, ``confidence_percent``, ``confidence_word``, ``confidence_not_number``,
``confidence_out_of_range``, ``not_text``.
"""

from __future__ import annotations

import math
import re
from typing import Any

from affectllm.taxonomy.facs import AU_NAMES
from affectllm.types import Prediction

TAGS: tuple[str, ...] = ("think", "answer", "confidence")
CONFIDENCE_ERRORS: frozenset[str] = frozenset(
    {
        "missing_confidence",
        "repeated_confidence",
        "unclosed_confidence",
        "confidence_percent",
        "confidence_word",
        "confidence_not_number",
        "confidence_out_of_range",
    }
)
MAX_LABELS = 32
MAX_LABEL_CHARS = 64
_OPEN = {t: re.compile(rf"<\s*{t}\s*>", re.IGNORECASE) for t in TAGS}
_CLOSE = {t: re.compile(rf"<\s*/\s*{t}\s*>", re.IGNORECASE) for t in TAGS}
_ANY_TAG = re.compile(r"<\s*/?\s*(?:think|answer|confidence)\s*>", re.IGNORECASE)
_LABEL_SPLIT = re.compile(r"[,;/|\n\t]+|\s+(?:and|or)\s+|\s*&\s*", re.IGNORECASE)
_LABEL_TRIM = " \t\r\n.!?:'\"`*_()[]{}<>-–—•·"
_LIST_MARKER = re.compile(r"^\s*(?:\(?\d{1,2}[.)]|[-*•·])\s+")
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?$", re.IGNORECASE)
_CONF_WORDS = {"very low", "low", "medium", "moderate", "high", "very high", "certain", "uncertain", "unsure"}
_AU = re.compile(r"(?<![A-Za-z0-9])(?:[LRU]\s?)?AU\s?0*(\d{1,2})[A-E]?(?![0-9])", re.IGNORECASE)
_CLAUSE_START = re.compile(r"[.;:!?\n]|\b(?:but|while|whereas|however|although|yet)\b", re.IGNORECASE)
_NEG_BEFORE = re.compile(
    r"\b(?:no|not|without|absent|absence|lack|lacking|lacks|never|neither|nor|none|missing|minus)\b|n't\b",
    re.IGNORECASE,
)
_NEG_AFTER = re.compile(
    r"^\W*(?:(?:is|was|are|were|seems|appears)\s+)?(?:absent|missing|inactive|not\b|isn't|wasn't|aren't)",
    re.IGNORECASE,
)
_AU_LIST_TAIL = re.compile(r"(?:\s|,|\bor\b|\band\b|\bnor\b|(?:[LRU]\s?)?AU\s?\d{1,3}[A-E]?)*", re.IGNORECASE)
_WS = re.compile(r"\s+")


def _find_block(text: str, tag: str, errors: list[str]) -> tuple[str | None, int]:
    """Content of the first ``<tag>…</tag>`` block and its start index (None, -1 when absent)."""
    opens = list(_OPEN[tag].finditer(text))
    if not opens:
        return None, -1
    if len(opens) > 1:
        errors.append(f"repeated_{tag}")
    start = opens[0].end()
    close = _CLOSE[tag].search(text, start)
    if close is None:
        errors.append(f"unclosed_{tag}")
        nxt = _ANY_TAG.search(text, start)
        return text[start : nxt.start() if nxt else len(text)], opens[0].start()
    return text[start : close.start()], opens[0].start()


def clean_label(label: str) -> str:
    """Lower-case, trim punctuation/quotes/numbering, collapse inner white space (``" 1. Happy!" -> "happy"``)."""
    return _WS.sub(" ", _LIST_MARKER.sub("", label).strip(_LABEL_TRIM).lower())


def split_labels(answer: str) -> list[str]:
    """Labels of an answer: split on ``, ; / |`` newlines, ``and``/``or``; cleaned; de-duplicated in order."""
    out: dict[str, None] = {}
    for part in _LABEL_SPLIT.split(answer):
        label = clean_label(part)
        if label and len(label) <= MAX_LABEL_CHARS:
            out[label] = None
            if len(out) >= MAX_LABELS:
                break
    return list(out)


def parse_confidence(raw: str, errors: list[str]) -> float | None:
    """A confidence in [0, 1] from ``0.82``, ``82%`` or a whole ``82`` (both flagged as percentages); else None."""
    text = raw.strip().lower()
    percent = text.endswith("%")
    text = text.rstrip("%").strip()
    if not _NUMBER.match(text):
        errors.append("confidence_word" if text in _CONF_WORDS else "confidence_not_number")
        return None
    value = float(text)
    if not math.isfinite(value):
        errors.append("confidence_not_number")
        return None
    if percent or (1.0 < value <= 100.0 and value.is_integer()):
        errors.append("confidence_percent")
        value /= 100.0
    if not 0.0 <= value <= 1.0:
        errors.append("confidence_out_of_range")
        return None
    return value


def _negated(text: str, start: int, end: int) -> bool:
    """Whether the AU mention at ``text[start:end]`` is negated ("no AU12", "AU12 is absent")."""
    window = text[max(0, start - 80) : start]
    segments = _CLAUSE_START.split(window)[-1].split(",")
    scope = segments.pop()
    while segments and _AU_LIST_TAIL.fullmatch(scope):
        # "no AU4, AU9 or AU15": a comma inside a list of AUs keeps the negation in scope.
        scope = segments.pop() + "," + scope
    if _NEG_BEFORE.search(scope):
        return True
    return bool(_NEG_AFTER.match(text[end : end + 40]))


def extract_aus(text: str) -> list[str]:
    """AU codes asserted in ``text`` (``"AU04"`` == ``"AU4"``), negated mentions excluded, sorted by number.

    >>> extract_aus("Cheeks raised (AU06), lip corners pulled (AU 12); no AU4, AU15 absent.")
    ['AU6', 'AU12']
    """
    found: set[int] = set()
    for match in _AU.finditer(text):
        number = int(match.group(1))
        if f"AU{number}" in AU_NAMES and not _negated(text, match.start(), match.end()):
            found.add(number)
    return [f"AU{n}" for n in sorted(found)]


def parse_completion(text: Any) -> Prediction:
    """Parse one completion (a string, or a chat message / message list whose last content is the text).

    Args:
        text: model output; anything that is not text yields an empty, not-ok prediction (``not_text``).

    Returns:
        A :class:`~affectllm.types.Prediction`: ``labels`` cleaned (lower-case, de-duplicated; not yet mapped to a
        wheel), ``confidence`` in [0, 1] or None, ``aus`` asserted in ``<think>``, ``format_ok`` and ``errors``.
    """
    text = completion_text(text)
    if text is None:
        return Prediction(errors=["not_text"])
    errors: list[str] = []
    blocks = {tag: _find_block(text, tag, errors) for tag in TAGS}
    for tag in TAGS:
        if blocks[tag][0] is None:
            errors.append(f"missing_{tag}")
    starts = [blocks[t][1] for t in TAGS if blocks[t][0] is not None]
    if starts != sorted(starts):
        errors.append("bad_order")
    think, answer, conf = (blocks[t][0] for t in TAGS)
    if answer is None and not _ANY_TAG.search(text) and len(text) <= 200:
        answer = text  # bare labels ("happy, sad"): read them, still not in format
    if answer is not None and not answer.strip():
        errors.append("empty_answer")
    confidence = parse_confidence(conf, errors) if conf is not None else None
    spans = [(m.start(), m.end()) for m in _ANY_TAG.finditer(text)]
    if _text_outside_tags(text, spans):
        errors.append("text_outside_tags")
    au_source = think if think is not None else _ANY_TAG.sub(" ", text.replace(answer or "\0", " "))
    return Prediction(
        think=(think or "").strip(),
        answer=(answer or "").strip(),
        labels=split_labels(answer or ""),
        confidence=confidence,
        aus=extract_aus(au_source),
        format_ok=not errors,
        errors=errors,
        raw=text,
    )


def _text_outside_tags(text: str, tag_spans: list[tuple[int, int]]) -> bool:
    """True when non-space text sits outside every ``<tag>…</tag>`` pair (between or around the blocks)."""
    depth, outside, pos = 0, [], 0
    for start, end in tag_spans:
        if depth == 0:
            outside.append(text[pos:start])
        depth += -1 if text[start:end].replace(" ", "")[1] == "/" else 1
        depth = max(depth, 0)
        pos = end
    if depth == 0:
        outside.append(text[pos:])
    return bool("".join(outside).strip())


def completion_text(completion: Any) -> str | None:
    """The text of a TRL completion: a string, a message dict, or a list of messages (last assistant content)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return completion_text(completion.get("content"))
    if isinstance(completion, (list, tuple)) and completion:
        if all(isinstance(part, dict) and part.get("type") == "text" for part in completion):
            return "".join(str(part.get("text", "")) for part in completion)
        for message in reversed(completion):
            if isinstance(message, dict) and message.get("role", "assistant") == "assistant":
                return completion_text(message.get("content"))
        return completion_text(completion[-1])
    return None


def parse_label_field(value: Any) -> list[str]:
    """A ``labels`` value as the MER tools read it: a list stays a list; ``""``/NaN/None is ``[]``; a string loses
    one leading ``[`` and one trailing ``]`` and is split on ``'``, ``"`` and ``,`` (stripped, empties dropped).

    >>> parse_label_field("[happy, 'sad']"), parse_label_field("happy, sad"), parse_label_field(float("nan"))
    (['happy', 'sad'], ['happy', 'sad'], [])
    """
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    text = str(value)
    if text.startswith("["):
        text = text[1:]
    if text.endswith("]"):
        text = text[:-1]
    return [part.strip() for part in re.split(r"['\",]", text) if part.strip()]
