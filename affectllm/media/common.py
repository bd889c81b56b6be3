"""What the decoders share: errors, the decoding configuration, probe and result types, time windows, limits.

Split from :mod:`.decode` so that :mod:`.stills` (images and frame folders) and the video backends use the same
types without importing each other; :mod:`.decode` re-exports every public name here.
"""

from __future__ import annotations

import errno
import math
import os
import stat
from dataclasses import dataclass, field

import numpy as np

from ..types import Clip
from .sampling import SamplingConfig, sample_indices, window_range

WINDOW_SLACK_S = 0.05
"""A window may end this far past a file's probed duration without a warning (container durations are rounded)."""

MIN_AUDIO_S = 0.01
"""An ``audio`` file must give at least this many seconds of samples (a 0- or 1-sample wav is no recording)."""

Window = tuple[float, "float | None"]
"""A time window ``(start, end)`` in seconds, ``end`` exclusive; ``end=None`` runs to the end of the file."""


class MediaError(Exception):
    """A media file could not be used; the message names the file and what to do."""


class MediaLimitError(MediaError):
    """A clip is over a configured limit (duration, frame size, file size)."""


class MediaDecodeError(MediaError):
    """No backend could decode a file."""


class MediaWindowError(MediaError):
    """A clip's ``start``/``end`` window is malformed, empty, or lies after the end of its media."""


@dataclass
class DecodeConfig:
    """How to decode a clip, and the limits a clip must stay within.

    Attributes:
        backend: the backend tried first, ``"decord"`` or ``"pyav"``.
        fallback: retry on the other backend when the first one fails.
        sampling: which frames to take (see :mod:`affectllm.media.sampling`).
        sample_rate: audio rate after resampling (Hz, mono).
        max_side: when set, frames are resized (aspect kept) so the longer side is at most this many pixels.
        threads: decoder threads per backend (0: the library's default).
        max_duration_s: refuse clips longer than this (a windowed clip: the window's length).
        max_pixels: refuse videos whose ``width * height`` is larger.
        max_file_mb: refuse files larger than this.
    """

    backend: str = "decord"
    fallback: bool = True
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    sample_rate: int = 16000
    max_side: int | None = None
    threads: int = 0
    max_duration_s: float = 900.0
    max_pixels: int = 3840 * 2160
    max_file_mb: float = 4096.0


@dataclass
class MediaInfo:
    """What a probe learns from a file's headers (no frame is decoded)."""

    path: str
    size_bytes: int
    duration_s: float | None = None
    has_video: bool = False
    has_audio: bool = False
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    num_frames: int | None = None
    video_codec: str | None = None
    audio_rate: int | None = None
    audio_channels: int | None = None


@dataclass
class VideoResult:
    """Sampled frames of one video and how they were obtained.

    Attributes:
        frames: uint8 RGB ``[t, h, w, 3]``.
        times: seconds of each frame ``[t]``.
        indices: frame indices ``[t]`` in the video.
        total_frames: frames in the video as indexed by the backend.
        fps: average frame rate.
        backend: the backend that produced the frames.
        warnings: what went wrong but was recovered (a failed first backend, a cut-off tail).
    """

    frames: np.ndarray
    times: np.ndarray
    indices: np.ndarray
    total_frames: int
    fps: float
    backend: str
    warnings: list[str] = field(default_factory=list)


@dataclass
class DecodeInfo:
    """Side information of :func:`decode_clip_info`: the probe, the backend used, recovered problems."""

    probe: MediaInfo | None = None
    backend: str | None = None
    total_frames: int = 0
    warnings: list[str] = field(default_factory=list)


def path_problem(path: str, folder_ok: bool = False) -> str | None:
    """What keeps ``path`` from being read as a media file, in words; None when it is a non-empty regular file (or
    a folder, with ``folder_ok``). Never opens the path: opening a FIFO would block until a writer comes."""
    try:
        st = os.stat(path)
    except OSError as err:
        if err.errno == errno.ENAMETOOLONG:
            longest = max((len(part) for part in path.split(os.sep)), default=0)
            return f"file name too long ({longest} characters in one name; the file system allows 255)"
        if err.errno == errno.ELOOP:
            return "symlink loop (the link points back to itself)"
        if err.errno == errno.ENOENT:
            missing = "file not found (no such file or directory)"
            return "broken symlink (its target does not exist)" if os.path.islink(path) else missing
        return f"cannot be read ({err.strerror or err})"
    if stat.S_ISDIR(st.st_mode):
        return None if folder_ok else "a directory, not a file"
    if stat.S_ISFIFO(st.st_mode):
        return "a FIFO (named pipe), not a regular file"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file (a device or socket)"
    if st.st_size == 0:
        return "empty file (0 bytes)"
    return None


def require_path(path: str, folder_ok: bool = False) -> None:
    """Raise :class:`MediaError` naming the path and its :func:`path_problem`, if it has one."""
    problem = path_problem(path, folder_ok)
    if problem is not None:
        raise MediaError(f"{path[:300]}: {problem}; check the manifest path (paths are relative to the manifest)")


def clip_window(clip: Clip) -> Window | None:
    """The clip's time window from its manifest keys ``start``/``end`` (seconds, in ``clip.extra``).

    Either key may be missing (``start`` defaults to 0, ``end`` to the end of the file); both missing means the
    whole file.

    Raises:
        MediaWindowError: a value is not a number >= 0, or ``end <= start`` (an empty window); the message names
            the clip id and the values.
    """
    start, end = clip.extra.get("start"), clip.extra.get("end")
    if start is None and end is None:
        return None
    for name, value in (("start", start), ("end", end)):
        bad = value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)))
        if bad or (value is not None and (not math.isfinite(value) or value < 0)):
            raise MediaWindowError(
                f"clip {clip.id!r}: {name}={value!r} is not a number of seconds >= 0; fix the manifest row "
                "(affectllm data check MANIFEST lists every bad start/end)"
            )
    window = (float(start or 0.0), None if end is None else float(end))
    if window[1] is not None and window[1] <= window[0]:
        raise MediaWindowError(
            f"clip {clip.id!r}: empty time window start={start!r} s, end={end!r} s (end must be greater than start); "
            "fix the row's start/end"
        )
    return window


def clamp_window(window: Window | None, info: MediaInfo, clip_id: str, warnings: list[str]) -> Window | None:
    """Clamp a window to a file's probed duration, noting it in ``warnings`` (unknown duration: unchanged).

    Raises:
        MediaWindowError: the window starts at or after the end of the file.
    """
    if window is None or info.duration_s is None:
        return window
    start, end = window
    if start >= info.duration_s:
        raise MediaWindowError(
            f"clip {clip_id!r}: window [{start:g}, {end if end is None else f'{end:g}'}) s starts at or after the end "
            f"of {info.path} ({info.duration_s:.3f} s); start/end are seconds into the row's media files"
        )
    if end is not None and end > info.duration_s + WINDOW_SLACK_S:
        warnings.append(
            f"{info.path}: clip {clip_id!r} window end {end:g} s is past the file's duration "
            f"{info.duration_s:.3f} s; clamped to [{start:g}, {info.duration_s:.3f})"
        )
        end = info.duration_s
    return start, end


def pick_indices(
    total: int, fps: float, cfg: DecodeConfig, path: str, times: np.ndarray | None, window: Window | None
) -> np.ndarray:
    """Sampled frame indices, inside ``window`` (on the frames' ``times``) when one is given."""
    first, stop = (0, total) if window is None or times is None else window_range(times, *window)
    idx = first + sample_indices(stop - first, fps, cfg.sampling)
    if len(idx) == 0 and total == 0:
        raise MediaDecodeError(f"{path}: the video stream has no frames")
    if len(idx) == 0:
        end = "end" if window is None or window[1] is None else f"{window[1]:g}"
        raise MediaWindowError(
            f"{path}: no frame in the window [{window[0] if window else 0:g}, {end}) s "
            f"(the video has {total} frames up to {float(times[-1]) if times is not None else 0:.3f} s)"
        )
    return idx


def check_limits(info: MediaInfo, cfg: DecodeConfig, window: Window | None = None) -> None:
    """Refuse a clip over the configured limits, before any decoding.

    Args:
        info: the file's probe.
        cfg: the limits.
        window: the clip's time window: its length, not the file's, is held to ``max_duration_s``.

    Raises:
        MediaLimitError: naming the file, the measured value, the limit and the setting that raises it.
    """
    size_mb = info.size_bytes / 2**20
    if size_mb > cfg.max_file_mb:
        raise MediaLimitError(
            f"{info.path}: file is {size_mb:.0f} MB, over the limit of {cfg.max_file_mb:.0f} MB "
            "(DecodeConfig.max_file_mb); re-encode it smaller or raise the limit"
        )
    duration = info.duration_s
    if window is not None and (window[1] is not None or duration is not None):
        duration = min(x for x in (window[1], duration) if x is not None) - window[0]
    if duration is not None and duration > cfg.max_duration_s:
        raise MediaLimitError(
            f"{info.path}: clip is {duration:.1f} s long, over the limit of {cfg.max_duration_s:.0f} s "
            f"(DecodeConfig.max_duration_s); cut it (ffmpeg -ss START -t SECONDS) or raise the limit"
        )
    if info.width and info.height and info.width * info.height > cfg.max_pixels:
        raise MediaLimitError(
            f"{info.path}: frames are {info.width}x{info.height}, over the limit of {cfg.max_pixels} pixels "
            "(DecodeConfig.max_pixels); downscale it (ffmpeg -vf scale=-2:720) or raise the limit"
        )


def target_size(width: int, height: int, max_side: int | None) -> tuple[int, int] | None:
    """(width, height) after capping the longer side, both even; None when no resize is needed."""
    if not max_side or max(width, height) <= max_side:
        return None
    scale = max_side / max(width, height)
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)
