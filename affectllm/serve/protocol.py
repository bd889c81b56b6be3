"""OpenAI's chat-completion shapes as the server reads and writes them, with affectllm's extension fields.

Requests are validated with pydantic: a malformed body or content part is a 400, a well-formed field with a bad value
(``temperature`` 3, ``n`` 0, a window that ends before it starts) a 422, each naming the field. Extensions beside
OpenAI's fields: ``mm_processor_kwargs`` (vLLM's name) for the media knobs ``num_frames``, ``fps``, ``window``, and
``affect`` for ``transcript`` and ``timeline``. Responses carry the parsed answer in each choice's ``affect`` and
the clip's facts (AU timeline) in a top-level ``affect`` (see docs/serving.md).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .media_io import ApiError

# pydantic error types that mean "right shape, bad value" (422); every other validation error is a 400.
VALUE_ERRORS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal", "too_long",
                          "too_short", "value_error", "finite_number", "multiple_of"})
MAX_STOP = 4
MAX_STOP_CHARS = 256  # transformers' StopStringCriteria builds tables of vocabulary x stop length: bound the length
DEFAULT_MAX_TOKENS = 128


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Url(BaseModel):
    url: str
    detail: str | None = None


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class VideoPart(_Strict):
    type: Literal["video_url"]
    video_url: _Url


class ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: _Url


class AudioUrlPart(_Strict):
    type: Literal["audio_url"]
    audio_url: _Url


class _InputAudio(_Strict):
    data: str
    format: str


class InputAudioPart(_Strict):
    type: Literal["input_audio"]
    input_audio: _InputAudio


Part = Annotated[TextPart | VideoPart | ImagePart | AudioUrlPart | InputAudioPart, Field(discriminator="type")]


class Message(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[Part] | None = None
    name: str | None = None


class MediaKnobs(_Strict):
    """``mm_processor_kwargs``: frames per clip, a frame rate (frames every 1/fps s, at most ``num_frames``), and a
    time window ``[start, end]`` in seconds."""

    num_frames: int | None = Field(None, ge=1, le=64)
    fps: float | None = Field(None, gt=0, le=60)
    window: tuple[Annotated[float, Field(ge=0)], Annotated[float, Field(gt=0)]] | None = None

    @model_validator(mode="after")
    def _window_order(self) -> MediaKnobs:
        if self.window is not None and self.window[1] <= self.window[0]:
            raise ValueError("window must be [start, end] with end > start (seconds)")
        return self


class AffectOptions(_Strict):
    """``affect``: what the person says (the clip's transcript) and whether to return the AU timeline."""

    transcript: str | None = Field(None, max_length=20000)
    timeline: bool = False


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    """``POST /v1/chat/completions`` (OpenAI fields this server does not use, e.g. ``logprobs``, are ignored)."""

    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    seed: int | None = Field(None, ge=-(1 << 63), lt=1 << 64)  # torch.manual_seed's range: beyond it a 500
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=8)
    mm_processor_kwargs: MediaKnobs | None = None
    affect: AffectOptions | None = None


def parse_request(body: bytes) -> ChatRequest:
    """The validated request (see the module docs for 400 vs 422)."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ApiError(400, f"the body is not valid JSON ({err.msg if hasattr(err, 'msg') else err})") from None
    except RecursionError:  # "[[[[..." a few hundred kB deep: json recurses per level (was a 500)
        raise ApiError(400, "the body's JSON is nested too deeply") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    try:  # JSON's "\\ud800" escape gives a str that is no text: the tokenizer failed on it (a 500)
        json.dumps(data, ensure_ascii=False).encode()
    except UnicodeEncodeError as err:
        raise ApiError(400, f"the body holds a lone UTF-16 surrogate ({err.object[err.start:err.end]!r}); "
                       "send valid Unicode text") from None
    try:
        return ChatRequest.model_validate(data)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        param = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in first["loc"]).replace(".[", "[")
        status = 422 if first["type"] in VALUE_ERRORS else 400
        raise ApiError(status, f"{param}: {first['msg']}", param or None, first["type"]) from None


@dataclass
class MediaRef:
    """One media part: ``kind`` (video, image, audio), where it sits (``param``) and its ``url`` or audio data."""

    kind: str
    param: str
    url: str | None = None
    data: str | None = None
    format: str | None = None


@dataclass
class Conversation:
    """What the model is asked: the question (None: the model's training question), earlier turns, the media."""

    question: str | None
    history: list[dict[str, str]] | None
    visual: MediaRef | None
    audio: MediaRef | None


def _text(content: str | list | None) -> str:
    if isinstance(content, str) or content is None:
        return content or ""
    return "\n".join(p.text for p in content if isinstance(p, TextPart))


def _media(part: Any, param: str) -> MediaRef | None:
    if isinstance(part, VideoPart):
        return MediaRef("video", param, url=part.video_url.url)
    if isinstance(part, ImagePart):
        return MediaRef("image", param, url=part.image_url.url)
    if isinstance(part, AudioUrlPart):
        return MediaRef("audio", param, url=part.audio_url.url)
    if isinstance(part, InputAudioPart):
        return MediaRef("audio", param, data=part.input_audio.data, format=part.input_audio.format)
    return None


def conversation(req: ChatRequest) -> Conversation:
    """The turns and media of a request. System messages are not used (the model answers with the system prompt it
    was trained with); media may sit in any user message and enter the first user turn, as in training.

    Raises:
        ApiError: 400 when the last message is not the user's, media sit in an assistant turn, or there is more than
            one visual (video or image) or audio part.
    """
    turns: list[dict[str, str]] = []
    visual = audio = None
    for i, msg in enumerate(req.messages):
        for j, part in enumerate(msg.content if isinstance(msg.content, list) else []):
            ref = _media(part, f"messages[{i}].content[{j}]")
            if ref is None:
                continue
            if msg.role != "user":
                raise ApiError(400, f"{ref.param}: media parts belong in user messages", ref.param)
            slot = "audio" if ref.kind == "audio" else "visual"
            if (audio if slot == "audio" else visual) is not None:
                raise ApiError(400, f"{ref.param}: one clip per request: at most one video or image part and one "
                               "audio part", ref.param)
            audio, visual = (ref, visual) if slot == "audio" else (audio, ref)
        if msg.role in ("user", "assistant"):
            turns.append({"role": msg.role, "content": _text(msg.content)})
    if not turns or turns[-1]["role"] != "user":
        raise ApiError(400, "the last message must be the user's", "messages")
    if turns[0]["role"] != "user":
        raise ApiError(400, "the conversation must start with a user message", "messages")
    return Conversation(question=turns[-1]["content"].strip() or None, history=turns[:-1] or None,
                        visual=visual, audio=audio)


def generation_options(req: ChatRequest, max_tokens_limit: int) -> Any:
    """The :class:`~affectllm.serve.engine.GenerationOptions` of a request: greedy unless ``temperature`` > 0.

    Raises:
        ApiError: 422 for ``max_tokens`` over the server's limit, more than 4 stop strings or one over 256
            characters, or ``n`` > 1 without sampling (greedy decoding would give ``n`` copies of one answer).
    """
    from .engine import GenerationOptions

    max_new = req.max_completion_tokens or req.max_tokens or min(DEFAULT_MAX_TOKENS, max_tokens_limit)
    if max_new > max_tokens_limit:
        field = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
        raise ApiError(422, f"{field}: {max_new} is over this server's limit of {max_tokens_limit}", field)
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stop) > MAX_STOP:
        raise ApiError(422, f"stop: at most {MAX_STOP} stop strings, got {len(stop)}", "stop")
    if any(len(s) > MAX_STOP_CHARS for s in stop):
        raise ApiError(422, f"stop: a stop string is at most {MAX_STOP_CHARS} characters", "stop")
    sample = bool(req.temperature)
    if req.n > 1 and not sample:
        raise ApiError(422, "n: n > 1 needs sampling (temperature > 0); greedy decoding gives one answer", "n")
    try:
        return GenerationOptions(max_new_tokens=max_new, do_sample=sample, temperature=req.temperature or 1.0,
                                 top_p=req.top_p or 1.0, seed=req.seed, n=req.n, stop=[s for s in stop if s] or None)
    except ValueError as err:  # the engine's own checks of the decoding settings
        raise ApiError(422, str(err)) from None


def decode_settings(policy: Any, knobs: MediaKnobs | None) -> tuple[Any, Any, dict[str, float]]:
    """``(policy, DecodeConfig, clip extra)`` of a request's ``mm_processor_kwargs`` (the model's own without)."""
    from ..media.sampling import SamplingConfig

    if knobs is None:
        return policy, policy.decode_config(), {}
    if knobs.num_frames:
        policy = replace(policy, num_frames=knobs.num_frames)
    cfg = policy.decode_config()
    if knobs.fps:
        cfg = replace(cfg, sampling=SamplingConfig(strategy="fps", fps=knobs.fps, max_frames=policy.num_frames))
    extra = {"start": knobs.window[0], "end": knobs.window[1]} if knobs.window else {}
    return policy, cfg, extra


def parsed_answer(engine: Any, text: str, posterior: Any = None) -> dict[str, Any]:
    """A choice's ``affect`` field: labels, calibrated and raw confidence, AUs with their FACS names, reasoning
    (``posterior``: the clip's, from ``engine.posteriors``, when its confidence map reads the evidence)."""
    from ..parsing import parse_completion
    from ..taxonomy.facs import au_name

    row = engine.row("answer", [text], engine.fingerprint, posterior)
    return {"labels": row["labels"], "confidence": row["confidence"], "confidence_raw": row["confidence_raw"],
            "aus": [{"code": au, "name": au_name(au)} for au in row["aus"]], "explanation": row["explanation"],
            "format_ok": parse_completion(text).format_ok}


class Chunks:
    """Builds the objects of one completion: the non-streaming body and the streamed chunks, OpenAI's shapes."""

    def __init__(self, rid: str, model: str, fingerprint: str) -> None:
        self.rid, self.model, self.fingerprint, self.created = rid, model, fingerprint, int(time.time())

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.rid, "object": obj, "created": self.created, "model": self.model,
                "system_fingerprint": self.fingerprint}

    def chunk(self, choices: list[dict[str, Any]], **extra: Any) -> str:
        """One SSE event ``data: {...}`` of a ``chat.completion.chunk``."""
        body = {**self._head("chat.completion.chunk"), "choices": choices, **extra}
        return f"data: {json.dumps(body)}\n\n"

    @staticmethod
    def delta(index: int, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
        """One streamed choice."""
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish, **extra}

    def completion(self, choices: list[dict[str, Any]], usage: dict[str, int], affect: dict[str, Any]) -> dict:
        """The ``chat.completion`` body."""
        return {**self._head("chat.completion"), "choices": choices, "usage": usage, "affect": affect}


def usage(prompt: int, completion: int) -> dict[str, int]:
    """OpenAI's ``usage`` object."""
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
