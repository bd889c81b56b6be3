"""The one parser and writer of model text: ``parse_completion(text) -> Prediction`` (rewards, metrics, labeling,
chat) and ``format_completion(think, labels, confidence)`` (SFT targets), plus the gold labels of a clip.

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

AUs are read from ``<think>`` only (Facial-R1): a completion without it names no AU. A text that ends inside
``<answer>`` was cut at the length limit (``truncated_answer``): its labels are not read, since the last one may be
cut mid-word, so every reward and metric sees no answer.

>>> r = parse_completion("<think>AU6 active</think><answer>happy, exci")
>>> r.labels, r.errors
([], ['unclosed_answer', 'truncated_answer', 'missing_confidence'])

Error codes: ``missing_<tag>``, ``repeated_<tag>``, ``unclosed_<tag>``, ``truncated_answer``, ``empty_answer``,
``bad_order``, ``text_outside_tags``, ``confidence_percent``, ``confidence_word``, ``confidence_not_number``,
``confidence_out_of_range``, ``not_text``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from affectllm.taxonomy.facs import AU_NAMES
from affectllm.types import Clip, Prediction

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
# Full-width separators (，；、) are how released Chinese-sourced label lists (MER) write them.
_LABEL_SPLIT = re.compile(r"[,;/|\n\t，；、]+|\s+(?:and|or)\s+|\s*&\s*", re.IGNORECASE)
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
_PARENTHETICAL = re.compile(r"^\s*\([^()]{0,80}\)")
_ENDS_WITH_AU = re.compile(r"(?:[LRU]\s?)?AU\s?\d{1,3}[A-E]?\s*(?:\([^()]{0,80}\))?\s*$", re.IGNORECASE)
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
    while segments and _AU_LIST_TAIL.fullmatch(scope) and _ENDS_WITH_AU.search(segments[-1]):
        # "no AU4, AU9 or AU15": a comma inside a list of AUs keeps the negation in scope.
        scope = segments.pop() + "," + scope
    if _NEG_BEFORE.search(scope):
        return True
    after = text[end : end + 160]
    after = after[m.end() :] if (m := _PARENTHETICAL.match(after)) else after  # "AU12 (lip corner puller) is not"
    return bool(_NEG_AFTER.match(after[:40]))


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
    truncated = "unclosed_answer" in errors and _ANY_TAG.search(text, blocks["answer"][1] + 1) is None
    if truncated:
        errors.insert(errors.index("unclosed_answer") + 1, "truncated_answer")
    if answer is None and not _ANY_TAG.search(text) and len(text) <= 200:
        answer = text  # bare labels ("happy, sad"): read them, still not in format
    if answer is not None and not answer.strip():
        errors.append("empty_answer")
    confidence = parse_confidence(conf, errors) if conf is not None else None
    spans = [(m.start(), m.end()) for m in _ANY_TAG.finditer(text)]
    if _text_outside_tags(text, spans):
        errors.append("text_outside_tags")
    return Prediction(
        think=(think or "").strip(),
        answer=(answer or "").strip(),
        labels=[] if truncated else split_labels(answer or ""),
        confidence=confidence,
        aus=extract_aus(think or ""),
        format_ok=not errors,
        errors=errors,
        raw=text,
    )


def answer_end(text: str) -> int | None:
    """The character offset just past the first ``</answer>`` of ``text`` (None when the answer is never closed):
    where the confidence part of a completion starts.

    >>> answer_end("<think>x</think><answer>sad</answer><confidence>0.7</confidence>")
    36
    >>> answer_end("<answer>sad") is None
    True
    """
    found = _CLOSE["answer"].search(text)
    return found.end() if found else None


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


def format_completion(think: str, labels: Sequence[str], confidence: float | None) -> str:
    """The completion :func:`parse_completion` reads back: ``<think>…</think><answer>a, b</answer><confidence>0.80
    </confidence>`` (the confidence block is left out when None; a confidence is clipped to [0, 1], 2 decimals).

    The writer refuses what the parser would read differently, so an SFT target never teaches a format the rewards
    score otherwise: ``parse_completion(format_completion(t, labels, c))`` gives back the cleaned ``labels``
    (:func:`clean_label`, de-duplicated) and ``c`` to 2 decimals.

    >>> format_completion("AU6 raised.", ["Happy", "at ease"], 0.8)
    '<think>AU6 raised.</think><answer>Happy, at ease</answer><confidence>0.80</confidence>'

    Raises:
        ValueError: ``think`` holds a tag; no labels, more than ``MAX_LABELS``, or a label the parser would split,
            trim away or drop (``"love and hate"``, ``"a/b"``, ``"..."``); a non-finite confidence.
    """
    if _ANY_TAG.search(think):
        raise ValueError(f"think text holds a completion tag; remove it: {think[:80]!r}")
    if not labels or len(labels) > MAX_LABELS:
        raise ValueError(f"a completion needs 1 to {MAX_LABELS} labels, got {len(labels)}")
    for label in labels:
        if split_labels(label) != [clean_label(label)]:
            raise ValueError(f"label {label!r} would not read back as one label (it holds a separator such as , ; / "
                             f"| & 'and' 'or', is empty or longer than {MAX_LABEL_CHARS} characters); rewrite it")
    if confidence is not None and not math.isfinite(confidence):
        raise ValueError(f"confidence must be a finite number, got {confidence!r}")
    conf = "" if confidence is None else f"<confidence>{min(max(confidence, 0.0), 1.0):.2f}</confidence>"
    return f"<think>{think.strip()}</think><answer>{', '.join(labels)}</answer>{conf}"


def stated_confidence(pred: Prediction) -> float | None:
    """The confidence a calibration reward or metric may use: a plain number in [0, 1] next to a readable answer.

    One rule for the calibration reward, the post-hoc fit and ECE/Brier/AUROC: a missing or unreadable confidence,
    a percentage (``"80%"``, ``"80"``: not the format the model is taught) and an answer without labels (empty or
    cut at the length limit) give None. The reward scores None as a format failure (below every valid answer, so
    hiding the confidence never pays); evaluation counts it as confidence 0 (none was stated) and reports the share
    of such samples.

    >>> stated_confidence(parse_completion("<answer>sad</answer><confidence>0.7</confidence>"))
    0.7
    >>> stated_confidence(parse_completion("<answer>sad</answer><confidence>70%</confidence>")) is None
    True
    """
    if pred.confidence is None or not pred.labels or "confidence_percent" in pred.errors:
        return None
    return pred.confidence


def gold_labels(item: Clip | Mapping[str, Any]) -> list[str]:
    """The gold labels of a clip, or of a row of columns (``labels``, ``emotion``): ``labels`` when it has any, else
    the single ``emotion``, else ``[]``. Inputs are trusted (the manifest reader and ``metric ew`` validate them).

    >>> gold_labels({"labels": [], "emotion": "sad"}), gold_labels(Clip(id="c", labels=["happy", "excited"]))
    (['sad'], ['happy', 'excited'])
    """
    if isinstance(item, Mapping):
        labels, emotion = item.get("labels"), item.get("emotion")
    else:
        labels, emotion = item.labels, item.emotion
    if labels:
        return list(labels)
    return [emotion] if emotion else []


def parse_label_field(value: Any) -> list[str]:
    """A ``labels`` value of a label file as the MER tools read it (the boundary reader of ``metric ew`` and the
    evaluation harness; inside, labels are lists): a list stays a list; ``""``/NaN/None is ``[]``; a string loses
    one leading ``[`` and one trailing ``]`` and is split on ``'``, ``"`` and ``,`` (stripped, empties dropped).

    It is not :func:`split_labels` on purpose: MER-UniBench splits on quotes and commas only, and ``metric ew``
    reproduces its numbers exactly.

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
