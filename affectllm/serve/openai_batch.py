"""The OpenAI Batch JSONL shape, so a labeling job moves between affectllm and vLLM's ``run-batch``.

A request line (what ``vllm run-batch -i`` reads, and ``affectllm label --input-format openai-batch``)::

    {"custom_id": "clip-1", "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": "M", "max_completion_tokens": 128, "messages": [
        {"role": "system", "content": "..."},
        {"role": "user", "content": [{"type": "video_url", "video_url": {"url": "file:///data/clip-1.mp4"}},
                                     {"type": "audio_url", "audio_url": {"url": "file:///data/clip-1.wav"}},
                                     {"type": "text", "text": "The person says: \\"...\\""},
                                     {"type": "text", "text": "Which emotions does the person feel?"}]}]}}

A response line (what ``vllm run-batch -o`` writes, and ``--output-format openai-batch``)::

    {"id": "batch_req_...", "custom_id": "clip-1", "error": null,
     "response": {"status_code": 200, "request_id": "...", "body": {"object": "chat.completion", "model": "M",
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "<think>..."},
                               "finish_reason": "stop"}], "affectllm": {label-output row}}}}

Relative paths in ``file://`` URLs or bare paths are resolved against the request file's folder. The text part that
starts like the training prompt's transcript line becomes the clip's transcript, the other text parts its question.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from ..data.prompts import SYSTEM_PROMPT, user_content
from ..jsonl import iter_jsonl, write_jsonl
from ..types import Clip

_SAID = re.compile(r'^The person says: "(.*)"\s*$', re.DOTALL)
MEDIA_PARTS = {"video_url": "video", "audio_url": "audio"}


def _path(url: str, base: Path) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in ("", "file"):
        raise ValueError(f"{url!r}: only local files (file:// or a path) can be read; download it first")
    path = Path(unquote(parsed.path if parsed.scheme else url)).expanduser()
    return str(path if path.is_absolute() else base / path)


def request_to_clip(request: dict[str, Any], base: Path) -> tuple[Clip, str | None]:
    """A :class:`Clip` (media, transcript) and the question of one request line.

    Raises:
        ValueError: no ``custom_id``, no user message, or a content part that cannot be read (names the field).
    """
    if not isinstance(request, dict) or not isinstance(request.get("custom_id"), (str, int)):
        raise ValueError("a request needs a string 'custom_id'")
    users = [m for m in request.get("body", {}).get("messages", []) if m.get("role") == "user"]
    if not users:
        raise ValueError("body.messages has no user message")
    content = users[-1].get("content")
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
    clip = Clip(id=str(request["custom_id"]))
    texts: list[str] = []
    for part in parts:
        kind = part.get("type")
        if kind in MEDIA_PARTS:
            setattr(clip, MEDIA_PARTS[kind], _path(part[kind]["url"], base))
        elif kind == "text":
            said = _SAID.match(part.get("text", ""))
            if said:
                clip.transcript = said.group(1)
            elif part.get("text", "").strip():
                texts.append(part["text"].strip())
        else:
            raise ValueError(f"content part type {kind!r} is not supported (video_url, audio_url, text)")
    return clip, "\n".join(texts) or None


def read_requests(path: str | os.PathLike[str]) -> tuple[list[Clip], dict[str, str], list[str]]:
    """Clips (in file order), per-clip questions and problems (``file:line: why``) of a Batch request file."""
    base = Path(path).resolve().parent
    clips: list[Clip] = []
    questions: dict[str, str] = {}
    problems: list[str] = []
    seen: set[str] = set()
    for number, value, error in iter_jsonl(path):
        if error is not None:
            problems.append(f"{path}:{number}: {error.message}; {error.hint}")
            continue
        try:
            clip, question = request_to_clip(value, base)
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            problems.append(f"{path}:{number}: {err}")
            continue
        if clip.id in seen:
            problems.append(f"{path}:{number}: custom_id {clip.id!r} repeated")
            continue
        seen.add(clip.id)
        clips.append(clip)
        if question:
            questions[clip.id] = question
    return clips, questions, problems


def clip_to_request(clip: Clip, question: str, model: str, max_tokens: int = 128) -> dict[str, Any]:
    """The Batch request line of a clip (system prompt and question of the training prompts)."""
    parts: list[dict[str, Any]] = [{"type": kind, kind: {"url": Path(getattr(clip, attr)).resolve().as_uri()}}
                                   for kind, attr in MEDIA_PARTS.items() if getattr(clip, attr)]
    if clip.transcript:
        parts.append({"type": "text", "text": user_content([], clip.transcript, "").strip()})
    parts.append({"type": "text", "text": question})
    return {"custom_id": clip.id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "max_completion_tokens": max_tokens,
                     "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": parts}]}}


def write_requests(clips: Sequence[Clip], question: str, model: str, path: str | os.PathLike[str],
                   max_tokens: int = 128) -> int:
    """Write a Batch request file for ``clips`` (atomically); returns the number of lines."""
    return write_jsonl((clip_to_request(c, question, model, max_tokens) for c in clips), path)


def row_to_response(row: dict[str, Any]) -> dict[str, Any]:
    """The Batch response line of a label-output row (the row itself under ``body.affectllm``)."""
    digest = hashlib.sha256(f"{row['fingerprint']}:{row['id']}".encode()).hexdigest()[:24]
    if row.get("error"):
        return {"id": f"batch_req_{digest}", "custom_id": row["id"], "response": None,
                "error": {"code": "media_error", "message": row["error"]}}
    body = {"id": f"chatcmpl-{digest}", "object": "chat.completion", "model": row["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": row["raw"]},
                         "finish_reason": "stop"}], "affectllm": row}
    return {"id": f"batch_req_{digest}", "custom_id": row["id"], "error": None,
            "response": {"status_code": 200, "request_id": digest, "body": body}}


def write_responses(rows: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> int:
    """Write label-output rows as a Batch response file (atomically); returns the number of lines."""
    return write_jsonl((row_to_response(r) for r in rows), path)


def response_to_row(response: dict[str, Any], conf_map: Any = None) -> dict[str, Any]:
    """A label-output row from a Batch response line (vLLM's ``run-batch`` output, or ours).

    Lines this module wrote carry their row (``body.affectllm``) and return it as is; others are parsed with the one
    parser, with ``conf_map`` (a :class:`~affectllm.evaluation.posthoc.ConfidenceMap`) applied when given, the
    body's ``model`` as ``model`` and ``"openai-batch"`` as the fingerprint (no affectllm engine made them).
    """
    from ..parsing import parse_completion

    body = (response.get("response") or {}).get("body") or {}
    if isinstance(body.get("affectllm"), dict):
        return body["affectllm"]
    error = response.get("error")
    row = {"id": str(response["custom_id"]), "labels": [], "confidence": None, "confidence_raw": None,
           "explanation": "", "aus": [], "raw": "", "error": None, "model": body.get("model", ""),
           "fingerprint": "openai-batch"}
    if error or not body.get("choices"):
        row["error"] = (error or {}).get("message") or "no completion in the response"
        return row
    text = body["choices"][0]["message"]["content"] or ""
    pred = parse_completion(text)
    # a map of the evidence needs the clip's media, which a response does not carry: the stated number stays
    conf = conf_map.apply(pred.confidence) if conf_map is not None and not conf_map.reads_evidence else pred.confidence
    row.update(labels=pred.labels, confidence=conf, confidence_raw=pred.confidence, explanation=pred.think,
               aus=pred.aus, raw=text)
    return row


def read_responses(path: str | os.PathLike[str], conf_map: Any = None) -> tuple[list[dict[str, Any]], list[str]]:
    """Label-output rows of a Batch response file (:func:`response_to_row`) and problems (``file:line: why``)."""
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    for number, value, error in iter_jsonl(path):
        if error is not None:
            problems.append(f"{path}:{number}: {error.message}; {error.hint}")
            continue
        try:
            rows.append(response_to_row(value, conf_map))
        except (KeyError, TypeError, AttributeError, IndexError) as err:
            problems.append(f"{path}:{number}: not a Batch response line ({type(err).__name__}: {err})")
    return rows, problems
