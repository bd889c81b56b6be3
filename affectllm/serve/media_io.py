"""Media of a chat request -> files the decoder may open: ``file://`` under the media root, ``data:`` URLs, remote.

The server never opens a path a client names unless it lies under ``--media-root``, checked twice: on the path as
written (no ``..`` component, absolute paths elsewhere refused) and on the path with every symlink resolved (a link
inside the root that points out of it is refused too). The decoder then gets the resolved path, so a link swapped
after the check cannot redirect it. ``data:`` URLs and ``input_audio`` carry the bytes in the request: they are
written to the request's own temporary folder (deleted with the request). Remote ``http(s)`` URLs are refused unless
the server was started with ``--allow-remote-media``; then they are streamed with a size and a time limit.

Every refusal is an :class:`ApiError` with the HTTP status and OpenAI's error shape (see docs/serving.md).
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

# Suffixes the decoder recognises, by MIME type (PyAV probes the content; stills are told apart by suffix).
MIME_SUFFIX: dict[str, str] = {
    "video/mp4": ".mp4", "video/webm": ".webm", "video/quicktime": ".mov", "video/x-matroska": ".mkv",
    "video/x-msvideo": ".avi", "video/mpeg": ".mpg", "image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp",
    "image/bmp": ".bmp", "audio/wav": ".wav", "audio/x-wav": ".wav", "audio/wave": ".wav", "audio/mpeg": ".mp3",
    "audio/mp3": ".mp3", "audio/flac": ".flac", "audio/ogg": ".ogg", "audio/webm": ".webm", "audio/mp4": ".m4a",
    "audio/x-m4a": ".m4a",
}
# What a part of each kind may carry (an image part with a video inside is refused before decoding).
KIND_PREFIXES: dict[str, tuple[str, ...]] = {"video": ("video/", "image/"), "image": ("image/",), "audio": ("audio/",)}
DEFAULT_SUFFIX: dict[str, str] = {"video": ".mp4", "image": ".png", "audio": ".wav"}
AUDIO_FORMATS: dict[str, str] = {"wav": ".wav", "mp3": ".mp3", "flac": ".flac", "ogg": ".ogg", "m4a": ".m4a",
                                 "webm": ".webm"}
MEDIA_SUFFIXES: frozenset[str] = frozenset(MIME_SUFFIX.values())
REMOTE_CHUNK = 1 << 16


class ApiError(Exception):
    """An error answered in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

    Attributes:
        status: the HTTP status.
        message: what went wrong and what to do (never a stack trace or a server path).
        type: OpenAI's error type (``invalid_request_error``, ``authentication_error``...).
        param: the request field at fault (``messages[0].content[1]``), or None.
        code: a short machine-readable code, or None.
        headers: extra response headers (``Retry-After``).
    """

    TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
             404: "invalid_request_error", 413: "invalid_request_error", 415: "invalid_request_error",
             422: "invalid_request_error", 429: "rate_limit_error", 503: "service_unavailable"}

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = self.TYPES.get(status, "server_error")
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body of the response."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass
class MediaLimits:
    """Where media may come from and how big they may be.

    Attributes:
        media_root: the only folder ``file://`` URLs may point into (resolved); None refuses file URLs.
        max_bytes: largest remote download in bytes (request bodies are limited by the server before this).
        allow_remote: fetch ``http(s)`` URLs.
        remote_timeout_s: whole-download time limit of one remote URL.
    """

    media_root: Path | None = None
    max_bytes: int = 64 << 20
    allow_remote: bool = False
    remote_timeout_s: float = 10.0


def confine(path_text: str, root: Path | None, param: str) -> Path:
    """The resolved path of ``path_text`` when it is a file under ``root``; else an :class:`ApiError`.

    >>> import tempfile; root = Path(tempfile.mkdtemp()).resolve(); (root / "a.mp4").write_bytes(b"x")
    1
    >>> confine(str(root / "a.mp4"), root, "p") == root / "a.mp4"
    True
    >>> confine(str(root / ".." / "etc" / "passwd"), root, "p")
    Traceback (most recent call last):
    ...
    affectllm.serve.media_io.ApiError: p: '..' is not allowed in a media path
    """
    if root is None:
        raise ApiError(403, f"{param}: file URLs are off on this server (start it with --media-root DIR)", param,
                       "media_root_unset")
    written = Path(path_text)
    if ".." in written.parts:
        raise ApiError(403, f"{param}: '..' is not allowed in a media path", param, "path_outside_media_root")
    outside = ApiError(403, f"{param}: the path is outside the media root; give a file under --media-root", param,
                       "path_outside_media_root")
    if not written.is_absolute() or not written.is_relative_to(root):
        raise outside
    real = written.resolve()
    if not real.is_relative_to(root):
        raise outside  # a symlink under the root pointing out of it
    if not real.is_file():
        raise ApiError(400, f"{param}: no such file under the media root: {written.relative_to(root)}", param,
                       "media_not_found")
    return real


def _data_url(url: str, kind: str, dest: Path, param: str) -> Path:
    """Write a ``data:<mime>;base64,<bytes>`` URL to ``dest`` (suffix from the MIME type)."""
    header, sep, payload = url[5:].partition(",")
    if not sep or not header.endswith(";base64"):
        raise ApiError(400, f"{param}: a data URL must read data:<mime type>;base64,<data>", param, "bad_data_url")
    mime = header[: -len(";base64")].strip().lower()
    if mime and not mime.startswith(KIND_PREFIXES[kind]):
        raise ApiError(415, f"{param}: a {kind} part cannot carry {mime!r}", param, "unsupported_media_type")
    return _write_b64(payload, dest.with_suffix(MIME_SUFFIX.get(mime, DEFAULT_SUFFIX[kind])), param)


def _write_b64(payload: str, dest: Path, param: str) -> Path:
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{param}: the base64 data is malformed", param, "bad_base64") from None
    if not data:
        raise ApiError(400, f"{param}: the media data is empty", param, "empty_media")
    dest.write_bytes(data)
    return dest


def _remote(url: str, kind: str, dest: Path, limits: MediaLimits, param: str) -> Path:
    """Download ``url`` to ``dest`` within the size and time limits (no redirects: they could lead anywhere)."""
    import httpx

    suffix = Path(urlparse(url).path).suffix.lower()
    dest = dest.with_suffix(suffix if suffix in MEDIA_SUFFIXES else DEFAULT_SUFFIX[kind])
    deadline = time.monotonic() + limits.remote_timeout_s
    too_big = ApiError(413, f"{param}: the remote media is larger than {limits.max_bytes >> 20} MB", param,
                       "media_too_large")
    try:
        with httpx.stream("GET", url, timeout=limits.remote_timeout_s, follow_redirects=False) as resp:
            if resp.status_code != 200:
                raise ApiError(400, f"{param}: fetching the URL gave HTTP {resp.status_code}", param, "remote_fetch")
            if int(resp.headers.get("content-length") or 0) > limits.max_bytes:
                raise too_big
            size = 0
            with open(dest, "wb") as fh:
                for chunk in resp.iter_bytes(REMOTE_CHUNK):
                    size += len(chunk)
                    if size > limits.max_bytes:
                        raise too_big
                    if time.monotonic() > deadline:
                        raise ApiError(400, f"{param}: the download took longer than {limits.remote_timeout_s:g} s",
                                       param, "remote_timeout")
                    fh.write(chunk)
    except httpx.HTTPError as err:
        raise ApiError(400, f"{param}: the URL could not be fetched ({type(err).__name__})", param,
                       "remote_fetch") from None
    return dest


def resolve_url(url: str, kind: str, tmp: Path, limits: MediaLimits, param: str) -> Path:
    """A local file holding the media of one ``*_url`` part.

    Args:
        url: ``file://``, ``data:`` or (when allowed) ``http(s)://``.
        kind: ``"video"``, ``"image"`` or ``"audio"``.
        tmp: the request's temporary folder (bytes carried in the request land there).
        limits: where media may come from.
        param: the part's place in the request, for error messages.

    Raises:
        ApiError: 400 malformed, 403 outside the root or remote off, 413 too large, 415 wrong media type.
    """
    dest = tmp / f"{param.replace('.', '_').replace('[', '_').replace(']', '')}"
    scheme = urlparse(url).scheme.lower() if ":" in url else ""
    if scheme == "data":
        return _data_url(url, kind, dest, param)
    if scheme == "file":
        parsed = urlparse(url)
        if parsed.netloc not in ("", "localhost"):
            raise ApiError(400, f"{param}: a file URL names no host (file:///path)", param, "bad_file_url")
        return confine(unquote(parsed.path), limits.media_root, param)
    if scheme in ("http", "https"):
        if not limits.allow_remote:
            raise ApiError(403, f"{param}: remote media URLs are off on this server (start it with "
                           "--allow-remote-media, or send the bytes as a data: URL)", param, "remote_media_off")
        return _remote(url, kind, dest, limits, param)
    raise ApiError(400, f"{param}: the URL must be file://, data: or http(s)://", param, "bad_url")


def input_audio(data: str, fmt: str, tmp: Path, param: str) -> Path:
    """A local file holding an ``input_audio`` part (``{"data": base64, "format": "wav"}``)."""
    suffix = AUDIO_FORMATS.get(fmt.lower())
    if suffix is None:
        raise ApiError(415, f"{param}: audio format {fmt!r} is not one of {sorted(AUDIO_FORMATS)}", param,
                       "unsupported_media_type")
    return _write_b64(data, tmp / f"{param.replace('.', '_').replace('[', '_').replace(']', '')}{suffix}", param)


def list_media(root: Path, limit: int = 500) -> list[str]:
    """Media files under ``root`` (relative paths, sorted), skipping links that lead out of it."""
    found = []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in MEDIA_SUFFIXES and path.is_file() and path.resolve().is_relative_to(root):
            found.append(path.relative_to(root).as_posix())
            if len(found) >= limit:
                break
    return found
