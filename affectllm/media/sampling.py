"""Frame sampling as pure index math: which frames of a ``total``-frame video to decode.

Every function returns a sorted ``int64`` numpy array of frame indices in ``[0, total)``. Nothing here opens a
file, so the strategies are cheap to test and the decoders only ever see a list of indices.

Strategies:

* :func:`uniform_indices`: ``n`` frames at the centres of ``n`` equal spans (the usual choice for clip models).
* :func:`fps_indices`: one frame every ``1 / fps`` seconds, capped at ``max_frames`` (spread evenly when capped).
* :func:`segment_indices`: TSN-style, ``k`` frames from each of ``num_segments`` equal segments, centred or
  jittered with a seeded generator (training augmentation).

A time window (a clip inside a longer recording) is sampled on its own frame range: :func:`window_range` finds the
frames whose timestamps fall in ``[start, end)`` and the strategies run on that range's length (the caller adds
the range's first index back).

A video with fewer frames than asked gives each of its frames once (``repeat=False``, the default: a repeated
frame is not new evidence) or exactly ``n`` indices with repeats (``repeat=True``, for models that need a fixed
``t``). A zero-frame video gives an empty array.

>>> uniform_indices(300, 8).tolist()
[18, 56, 93, 131, 168, 206, 243, 281]
>>> uniform_indices(3, 5).tolist()
[0, 1, 2]
>>> uniform_indices(3, 5, repeat=True).tolist()
[0, 0, 1, 2, 2]
>>> fps_indices(300, video_fps=30.0, fps=2.0, max_frames=32).tolist()[:4]
[0, 15, 30, 45]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STRATEGIES: tuple[str, ...] = ("uniform", "fps", "segment")
WINDOW_TOLERANCE_S = 1e-4
"""A frame stamped this close before a window edge counts as at the edge (float timestamps, e.g. ``30 / 30.0``)."""


def _empty() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


def _check(total: int, n: int, what: str = "n") -> None:
    if total < 0:
        raise ValueError(f"total frames must be >= 0, got {total}")
    if n < 1:
        raise ValueError(f"{what} must be >= 1, got {n}")


def uniform_indices(total: int, n: int, repeat: bool = False) -> np.ndarray:
    """Indices of ``n`` frames at the centres of ``n`` equal spans of the video.

    Args:
        total: number of frames in the video.
        n: number of frames wanted.
        repeat: when ``total < n``, return exactly ``n`` indices (frames repeat) instead of every frame once.

    Returns:
        Sorted int64 indices, shape ``[min(n, total)]`` (``[n]`` with ``repeat`` and ``total > 0``).
    """
    _check(total, n)
    if total == 0:
        return _empty()
    if total <= n and not repeat:
        return np.arange(total, dtype=np.int64)
    centres = (np.arange(n, dtype=np.float64) + 0.5) * total / n
    return np.clip(np.floor(centres), 0, total - 1).astype(np.int64)


def fps_indices(total: int, video_fps: float, fps: float, max_frames: int, repeat: bool = False) -> np.ndarray:
    """Indices of one frame every ``1 / fps`` seconds from the start, at most ``max_frames`` of them.

    When the fixed-rate grid has more than ``max_frames`` points, ``max_frames`` of them are taken evenly across
    the whole grid, so the samples still span the clip (the effective rate drops; the coverage does not).

    Args:
        total: number of frames in the video.
        video_fps: the video's frame rate (frames per second).
        fps: sampling rate wanted (frames per second).
        max_frames: cap on the number of indices.
        repeat: when the video has fewer frames than the grid, allow repeated indices (see module docs).

    Returns:
        Sorted int64 indices, shape ``[<= max_frames]``.
    """
    _check(total, max_frames, "max_frames")
    if video_fps <= 0 or fps <= 0:
        raise ValueError(f"video_fps and fps must be > 0, got video_fps={video_fps}, fps={fps}")
    if total == 0:
        return _empty()
    duration = total / video_fps
    count = max(1, int(np.floor(duration * fps + 1e-9)))
    grid = np.floor(np.arange(count, dtype=np.float64) * video_fps / fps + 1e-9).astype(np.int64)
    grid = np.clip(grid, 0, total - 1)
    if not repeat:
        grid = np.unique(grid)
    if len(grid) > max_frames:
        grid = grid[uniform_indices(len(grid), max_frames)]
    return grid


def segment_indices(
    total: int, num_segments: int, frames_per_segment: int = 1, rng: np.random.Generator | None = None
) -> np.ndarray:
    """TSN-style indices: ``frames_per_segment`` consecutive-span picks from each of ``num_segments`` segments.

    Each segment is split again into ``frames_per_segment`` equal spans; without ``rng`` the centre of each span
    is taken (deterministic, for evaluation), with ``rng`` a uniformly random frame within it (training jitter).

    Args:
        total: number of frames in the video.
        num_segments: number of equal segments.
        frames_per_segment: frames drawn per segment.
        rng: optional numpy generator for jittered sampling.

    Returns:
        Sorted int64 indices, shape ``[<= num_segments * frames_per_segment]`` (duplicates removed when the
        video is shorter than the number of picks).
    """
    _check(total, num_segments, "num_segments")
    _check(total, frames_per_segment, "frames_per_segment")
    if total == 0:
        return _empty()
    n = num_segments * frames_per_segment
    starts = np.arange(n, dtype=np.float64) * total / n
    widths = np.full(n, total / n)
    offsets = rng.random(n) * widths if rng is not None else widths / 2
    idx = np.clip(np.floor(starts + offsets), 0, total - 1).astype(np.int64)
    return np.unique(idx)


@dataclass
class SamplingConfig:
    """Which frames to take (see the module docs for the strategies).

    Attributes:
        strategy: ``"uniform"``, ``"fps"`` or ``"segment"``.
        num_frames: frames for ``uniform``; segments for ``segment``.
        fps: sampling rate for ``fps``.
        max_frames: cap for ``fps``.
        frames_per_segment: picks per segment for ``segment``.
        repeat: pad short videos to exactly ``num_frames`` by repeating frames (``uniform`` and ``fps``).
        seed: when set, ``segment`` jitters its picks with this seed (training); None keeps centres.
    """

    strategy: str = "uniform"
    num_frames: int = 8
    fps: float = 2.0
    max_frames: int = 32
    frames_per_segment: int = 1
    repeat: bool = False
    seed: int | None = None


def sample_indices(total: int, video_fps: float, cfg: SamplingConfig) -> np.ndarray:
    """Dispatch to the strategy named in ``cfg``.

    Args:
        total: number of frames in the video.
        video_fps: the video's frame rate (only ``fps`` uses it).
        cfg: the sampling configuration.

    Returns:
        Sorted int64 frame indices.
    """
    if cfg.strategy == "uniform":
        return uniform_indices(total, cfg.num_frames, repeat=cfg.repeat)
    if cfg.strategy == "fps":
        return fps_indices(total, video_fps, cfg.fps, cfg.max_frames, repeat=cfg.repeat)
    if cfg.strategy == "segment":
        rng = np.random.default_rng(cfg.seed) if cfg.seed is not None else None
        return segment_indices(total, cfg.num_frames, cfg.frames_per_segment, rng)
    raise ValueError(f"unknown sampling strategy {cfg.strategy!r}; choose one of {', '.join(STRATEGIES)}")


def window_range(times: np.ndarray, start: float = 0.0, end: float | None = None) -> tuple[int, int]:
    """The frames whose timestamps lie in ``[start, end)``: ``(first, stop)`` with ``stop`` exclusive.

    Args:
        times: each frame's time in seconds, sorted (presentation order).
        start: window start in seconds.
        end: window end in seconds (exclusive); None: to the last frame.

    Returns:
        ``(first, stop)`` indices into ``times``; ``first == stop`` when no frame lies in the window.

    >>> window_range(np.arange(10) / 5.0, 0.4, 1.0)
    (2, 5)
    """
    times = np.asarray(times, dtype=np.float64)
    first = int(np.searchsorted(times, start - WINDOW_TOLERANCE_S, side="left"))
    stop = len(times) if end is None else int(np.searchsorted(times, end - WINDOW_TOLERANCE_S, side="left"))
    return first, max(first, stop)
