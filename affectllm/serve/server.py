"""``affectllm serve``: an OpenAI-compatible HTTP API and a web page over one loaded model, safe by default.

FastAPI app (:func:`create_app`) served by uvicorn (:func:`serve_main`). A chat request goes: bearer-token check ->
body read with a size limit (413 while reading) -> validation (400/422, :mod:`.protocol`) -> a slot in the bounded
queue (429 with ``Retry-After`` when full) -> media resolved under the media root (:mod:`.media_io`) -> decoded in a
worker process with a time and memory limit (:mod:`.worker`, 415 when it fails) -> generated in a batch with the
requests that arrived together (:mod:`.batching`) -> the text, streamed as OpenAI's SSE chunks or whole, beside the
parsed answer. The model loads in a background thread after the port opens: ``/health`` answers at once,
``/health/ready`` and the API answer 503 until the model is ready. Every error is OpenAI's JSON error shape; a stack
trace goes to the server log only. Endpoints, fields and errors: docs/serving.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from ..types import Clip
from . import protocol
from .media_io import ApiError, MediaLimits, input_audio, list_media, resolve_url
from .worker import DecodeCache, WorkerError, WorkerPool, decode_clip

log = logging.getLogger(__name__)
WEB_DIR = Path(__file__).parent / "web"
PUBLIC_PATHS = ("/", "/favicon.ico")  # the page itself holds no data; everything it fetches needs the key
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class ServerConfig:
    """Settings of ``affectllm serve`` (each is a command-line flag, see docs/serving.md)."""

    model: str
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    media_root: str | None = None
    max_upload_mb: float = 64.0
    allow_remote_media: bool = False
    remote_timeout_s: float = 10.0
    max_batch_size: int = 8
    max_wait_ms: float = 10.0
    max_queue: int = 64
    decode_workers: int = 2
    decode_timeout_s: float = 60.0
    decode_memory_mb: int = 4096
    decode_cache: int = 16
    max_tokens_limit: int = 1024
    device: str | None = None
    num_frames: int | None = None
    served_model_name: str | None = None

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_upload_mb * (1 << 20))


class State:
    """What the app holds: the engine, batcher and decode workers once loaded, and the queue's slot count."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        root = Path(config.media_root).resolve() if config.media_root else None
        self.limits = MediaLimits(root, config.max_body_bytes, config.allow_remote_media, config.remote_timeout_s)
        self.engine: Any = None
        self.batcher: Any = None
        self.pool: Any = None
        self.load_error: str | None = None
        self.in_flight = 0
        self._lock = threading.Lock()
        self.cache = DecodeCache(config.decode_cache)
        self._can_track: bool | None = None

    def can_track(self) -> bool:
        """Whether the face tracker (mediapipe) is installed, for AU timelines of models without face inputs."""
        if self._can_track is None:
            from .media_policy import faces_available

            self._can_track = faces_available()
        return self._can_track

    @property
    def ready(self) -> bool:
        return self.batcher is not None and self.pool is not None

    @property
    def model_name(self) -> str:
        return self.config.served_model_name or Path(self.config.model).resolve().name

    def load(self, engine: Any = None) -> None:
        """Load the engine (unless given), start the decode workers and the batcher; errors are kept for /health."""
        from .batching import Batcher
        from .engine import Engine

        cfg = self.config
        try:
            self.engine = engine or Engine.load(cfg.model, device=cfg.device, num_frames=cfg.num_frames)
            self.pool = WorkerPool(cfg.decode_workers, cfg.decode_timeout_s, cfg.decode_memory_mb)
            self.batcher = Batcher(self.engine, cfg.max_batch_size, cfg.max_wait_ms / 1000)
        except Exception as err:  # noqa: BLE001 - reported by /health/ready and the log, the process stays up
            log.exception("the model could not be loaded")
            self.load_error = f"{type(err).__name__}: {err}"

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
        if self.pool is not None:
            self.pool.close()

    def require_ready(self) -> None:
        if not self.ready:
            why = "failed to load (see the server log)" if self.load_error else "is still loading; retry shortly"
            raise ApiError(503, f"the model {why}", code="not_ready", headers={"Retry-After": "5"})

    def admit(self) -> None:
        """Take a slot of the bounded queue, or raise 429 with a ``Retry-After`` from the last batch's time."""
        with self._lock:
            if self.in_flight >= self.config.max_queue:
                wait = max(1, math.ceil(self.batcher.last_batch_s if self.batcher else 1))
                raise ApiError(429, f"the server is busy ({self.in_flight} requests in progress); retry after "
                               f"{wait} s", code="queue_full", headers={"Retry-After": str(wait)})
            self.in_flight += 1

    def release(self) -> None:
        with self._lock:
            self.in_flight -= 1


def error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


class AuthMiddleware:
    """Bearer-token check on every request but the page's own files (ASGI, so streamed responses pass through)."""

    def __init__(self, app: Any, api_key: str | None) -> None:
        self.app, self.key = app, (api_key or "").encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and self.key and path not in PUBLIC_PATHS and not path.startswith("/web/"):
            header = dict(scope["headers"]).get(b"authorization", b"")
            scheme, _, token = header.partition(b" ")
            if not header:
                err = ApiError(401, "no API key: send the header Authorization: Bearer <key>", code="missing_api_key")
            elif scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
                err = ApiError(401, "incorrect API key", code="invalid_api_key")
            else:
                err = None
            if err is not None:
                err.headers["WWW-Authenticate"] = "Bearer"
                await error_response(err)(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes (the declared length
    first, then while reading a chunked body), so an oversize upload is never read to its end."""
    too_big = ApiError(413, f"the request body is larger than the {limit / (1 << 20):g} MB limit (--max-upload-mb); "
                       "send a smaller clip or a file:// URL under the media root", code="request_too_large")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    parts, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        parts.append(chunk)
    return b"".join(parts)


def _resolve(state: State, conv: protocol.Conversation, tmp: Path) -> tuple[str | None, str | None]:
    """Local paths of the visual and audio parts (blocking: may download)."""
    paths: list[str | None] = []
    for ref in (conv.visual, conv.audio):
        if ref is None:
            paths.append(None)
        elif ref.url is not None:
            paths.append(str(resolve_url(ref.url, ref.kind, tmp, state.limits, ref.param)))
        else:
            paths.append(str(input_audio(ref.data or "", ref.format or "", tmp, ref.param)))
    return paths[0], paths[1]


async def _decode(state: State, req: protocol.ChatRequest, conv: protocol.Conversation) -> tuple[Any, Any, Any]:
    """``(clip, decoded, timeline)``: media resolved into a temporary folder, decoded in a worker, folder removed."""
    tmp = Path(tempfile.mkdtemp(prefix="affectllm-serve-"))
    try:
        video, audio = await run_in_threadpool(_resolve, state, conv, tmp)
        policy, cfg, extra = protocol.decode_settings(state.engine.media, req.mm_processor_kwargs)
        if req.affect is not None and req.affect.timeline and not policy.faces and video and state.can_track():
            policy = replace(policy, faces=True)  # the page asked for the AU timeline: track the face anyway
        transcript = req.affect.transcript if req.affect else None
        clip = Clip(id=f"req-{uuid.uuid4().hex}", video=video, audio=audio, transcript=transcript, extra=extra)
        key = await run_in_threadpool(DecodeCache.key, (video, audio), policy.describe(), cfg, extra)
        if (hit := state.cache.get(key)) is not None:
            decoded, timeline = replace(hit[0], id=clip.id, transcript=transcript), hit[1]
        else:
            try:
                decoded, timeline = await run_in_threadpool(state.pool.call, decode_clip, policy, cfg, clip)
            except WorkerError as err:
                param = (conv.visual or conv.audio).param if (conv.visual or conv.audio) else None
                message = str(err).replace(str(tmp) + "/", "")  # the client's part, not the server's temp path
                raise ApiError(415, f"the media could not be decoded: {message}", param,
                               f"decode_{err.kind}") from None
            state.cache.put(key, (decoded, timeline))
        if not (req.affect and req.affect.timeline):
            timeline = None
        return clip, decoded, timeline
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _timeline_json(timeline: Any) -> dict[str, Any] | None:
    return None if timeline is None else {"times": timeline.times, "aus": timeline.aus, "names": timeline.names}


async def chat_completions(state: State, request: Request) -> Any:
    """``POST /v1/chat/completions`` (see the module docs for the steps)."""
    from .batching import Job

    state.require_ready()
    req = protocol.parse_request(await read_body(request, state.config.max_body_bytes))
    if req.model != state.model_name:
        raise ApiError(404, f"the model {req.model!r} does not exist; this server serves {state.model_name!r} "
                       "(GET /v1/models)", "model", "model_not_found")
    gen = protocol.generation_options(req, state.config.max_tokens_limit)
    conv = protocol.conversation(req)
    state.admit()
    state.batcher.expect()
    try:
        clip, decoded, timeline = await _decode(state, req, conv)
        job = Job(clip=clip, decoded=decoded, question=state.engine.question(conv.question), gen=gen,
                  history=conv.history, stream=req.stream, loop=asyncio.get_running_loop())
    except BaseException:
        state.batcher.expect(-1)
        state.release()
        raise
    state.batcher.submit(job)
    chunks = protocol.Chunks(f"chatcmpl-{uuid.uuid4().hex}", state.model_name, state.engine.fingerprint)
    affect = {"modalities": [m for m in decoded.present() if m in state.engine.modalities],
              "timeline": _timeline_json(timeline)}
    if req.stream:
        usage = bool(req.stream_options and req.stream_options.include_usage)
        return StreamingResponse(_sse(state, job, chunks, affect, usage), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    try:
        while (event := await job.events.get())[0] == "delta":
            pass
    finally:
        state.release()
    if event[0] == "error":
        raise ApiError(500, event[1], code="generation_failed")
    _, prompt_tokens, choices = event
    post = await asyncio.to_thread(_posterior, state, job)
    answers = [protocol.parsed_answer(state.engine, c.text, post) for c in choices]
    body = chunks.completion([{"index": i, "message": {"role": "assistant", "content": c.text}, "logprobs": None,
                               "finish_reason": c.finish_reason, "affect": a}
                              for i, (c, a) in enumerate(zip(choices, answers))],
                             protocol.usage(prompt_tokens, sum(c.tokens for c in choices)), affect)
    return JSONResponse(body)


def _posterior(state: State, job: Any) -> Any:
    """The job's clip's emotion log-posterior when the engine's confidence reads the evidence (else None)."""
    post = state.engine.posteriors([job.clip], [job.decoded])
    return post[0] if post else None


async def _sse(state: State, job: Any, chunks: protocol.Chunks, affect: dict, usage: bool) -> AsyncIterator[str]:
    """The SSE events of a streamed completion: a role chunk per choice (the first carries the clip's ``affect``),
    content deltas, a finishing chunk per choice with its parsed answer, the usage chunk if asked, ``[DONE]``."""
    try:
        for i in range(job.gen.n):  # one choice per chunk, as OpenAI sends them
            extra = {"affect": affect} if i == 0 else {}
            yield chunks.chunk([chunks.delta(i, {"role": "assistant", "content": ""})], **extra)
        while True:
            event = await job.events.get()
            if event[0] == "delta":
                yield chunks.chunk([chunks.delta(event[1], {"content": event[2]})])
                continue
            if event[0] == "error":
                yield f"data: {json.dumps(ApiError(500, event[1], code='generation_failed').body())}\n\n"
                return
            _, prompt_tokens, choices = event
            post = await asyncio.to_thread(_posterior, state, job)
            for i, c in enumerate(choices):
                answer = protocol.parsed_answer(state.engine, c.text, post)
                yield chunks.chunk([chunks.delta(i, {}, c.finish_reason, affect=answer)])
            if usage:
                yield chunks.chunk([], usage=protocol.usage(prompt_tokens, sum(c.tokens for c in choices)))
            yield "data: [DONE]\n\n"
            return
    finally:
        state.release()


def _routes(app: FastAPI, state: State) -> None:
    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "ready": state.ready}

    @app.get("/health/ready")
    async def ready() -> dict[str, Any]:
        state.require_ready()
        return {"status": "ready", "model": state.model_name, "in_flight": state.in_flight,
                "pending": state.batcher.pending()}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(state)]}

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str) -> dict[str, Any]:
        if model_id != state.model_name:
            raise ApiError(404, f"the model {model_id!r} does not exist", "model", "model_not_found")
        return _model_card(state)

    @app.get("/v1/affect/media")
    async def media() -> dict[str, Any]:
        root = state.limits.media_root
        files = await run_in_threadpool(list_media, root) if root else []
        return {"object": "list", "data": [{"id": f, "url": (root / f).as_uri()} for f in files]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        return await chat_completions(state, request)


def _model_card(state: State) -> dict[str, Any]:
    return {"id": state.model_name, "object": "model", "created": int(time.time()), "owned_by": "affectllm"}


def create_app(config: ServerConfig, engine: Any = None) -> FastAPI:
    """The app; the model loads in a background thread when it starts (``engine`` skips loading, for tests)."""
    from contextlib import asynccontextmanager

    state = State(config)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=state.load, args=(engine,), daemon=True, name="affectllm-load").start()
        yield
        await run_in_threadpool(state.close)

    app = FastAPI(title="affectllm", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.affect = state
    app.add_exception_handler(ApiError, lambda _, err: error_response(err))
    app.add_exception_handler(HTTPException, lambda _, err: error_response(
        ApiError(err.status_code, "no such endpoint" if err.status_code == 404 else str(err.detail))))
    app.add_exception_handler(Exception, _internal_error)
    app.add_middleware(AuthMiddleware, api_key=config.api_key)
    app.mount("/web", StaticFiles(directory=WEB_DIR), name="web")
    _routes(app, state)
    return app


def _internal_error(_: Request, err: Exception) -> JSONResponse:
    log.error("internal error", exc_info=err)
    return JSONResponse(ApiError(500, "internal server error (see the server log)").body(), status_code=500)


@contextlib.contextmanager
def serve_in_thread(config: ServerConfig, engine: Any = None, ready_s: float = 120.0,
                    wait: bool = True) -> Iterator[tuple[str, State]]:
    """A server in a thread of this process on ``config.host`` and a free port (the socket is bound here, so no
    other process can take it), for tests and benchmarks; yields ``(base_url, state)`` once ready (once the port
    answers when not ``wait``), stops on exit.

    Raises:
        TimeoutError: not ready within ``ready_s`` seconds.
    """
    import httpx
    import uvicorn

    sock = socket.socket()
    sock.bind((config.host, 0))
    config = replace(config, port=sock.getsockname()[1])
    app = create_app(config, engine=engine)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="affectllm-serve")
    thread.start()
    base = f"http://{config.host}:{config.port}"
    auth = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    try:
        deadline = time.monotonic() + ready_s
        while not server.started or (wait and (not app.state.affect.ready or httpx.get(
                f"{base}/health/ready", headers=auth).status_code != 200)):
            if time.monotonic() > deadline or (wait and app.state.affect.load_error):
                raise TimeoutError(f"the server was not ready within {ready_s:g} s: {app.state.affect.load_error}")
            time.sleep(0.1)
        yield base, app.state.affect
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def serve_main(config: ServerConfig) -> int:
    """Run the server until interrupted."""
    import uvicorn

    if config.host not in LOOPBACK and not config.api_key:
        log.warning("serving on %s without --api-key: anyone who can reach port %d can use the model",
                    config.host, config.port)
    if config.media_root and not Path(config.media_root).is_dir():
        raise FileNotFoundError(f"--media-root {config.media_root}: no such folder")
    uvicorn.run(create_app(config), host=config.host, port=config.port, log_level="info")
    return 0
