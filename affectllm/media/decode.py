"""Decode clips: probe, refuse what is over the limits, sample frames, read audio at 16 kHz mono.

Video goes through decord by default and PyAV as the automatic fallback (decord is x86_64-only and its last
release is from 2021): a decoder error on one backend retries on the other, and :class:`DecodeConfig.backend`
picks which goes first. Both backends read only the frames the sampler asks for:

* decord builds its frame index on open and seeks per batch;
* the PyAV path demuxes once to learn every frame's timestamp and the keyframes, then walks the sampled frames in
  order and seeks only when a keyframe lies between the decoder's position and the next wanted frame (decoding
  forward is cheaper than seeking within a GOP). It tolerates a cut-off tail: what is readable is returned and
  the loss is reported in :attr:`DecodeInfo.warnings`.

Audio (the video's own track, or a separate file that takes precedence) is decoded with PyAV and resampled by
libswresample (``av.AudioResampler``) to float32 mono at ``sample_rate``. A video without an audio track gives
``audio=None``: a clip without audio, not an error.

Every error names the file and says what to do (:class:`MediaError` and its subclasses).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from ..types import Clip, DecodedClip
from .sampling import SamplingConfig, sample_indices

log = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("decord", "pyav")


class MediaError(Exception):
    """A media file could not be used; the message names the file and what to do."""


class MediaLimitError(MediaError):
    """A clip is over a configured limit (duration, frame size, file size)."""


class MediaDecodeError(MediaError):
    """No backend could decode a file."""


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
        max_duration_s: refuse clips longer than this.
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


def _require_file(path: str) -> None:
    if not os.path.isfile(path):
        raise MediaError(f"{path}: no such file; check the manifest path (paths are relative to the manifest)")


def probe(path: str | os.PathLike[str]) -> MediaInfo:
    """Read a media file's headers: duration, frame size and rate, streams.

    Args:
        path: a video or audio file.

    Returns:
        A :class:`MediaInfo`.

    Raises:
        MediaError: missing file, or a file no demuxer can open.
    """
    path = os.fspath(path)
    _require_file(path)
    info = MediaInfo(path=path, size_bytes=os.path.getsize(path))
    try:
        with av.open(path) as container:
            if container.duration:
                info.duration_s = container.duration / av.time_base
            if container.streams.video:
                _probe_video(container.streams.video[0], info)
            if container.streams.audio:
                a = container.streams.audio[0]
                info.has_audio = True
                info.audio_rate = a.codec_context.sample_rate
                info.audio_channels = a.codec_context.channels
    except av.error.FFmpegError as e:
        raise MediaDecodeError(
            f"{path}: cannot read the file's headers ({e}); check that it plays (ffprobe {path}) or re-encode it "
            f"(ffmpeg -i {path} -c:v libx264 -c:a aac fixed.mp4)"
        ) from e
    return info


def _probe_video(stream: av.VideoStream, info: MediaInfo) -> None:
    info.has_video = True
    info.width, info.height = stream.codec_context.width, stream.codec_context.height
    info.video_codec = stream.codec_context.name
    rate = stream.average_rate or stream.guessed_rate
    info.fps = float(rate) if rate else None
    if stream.duration and stream.time_base and not info.duration_s:
        info.duration_s = float(stream.duration * stream.time_base)
    if stream.frames:
        info.num_frames = int(stream.frames)
    elif info.duration_s and info.fps:
        info.num_frames = int(round(info.duration_s * info.fps))


def check_limits(info: MediaInfo, cfg: DecodeConfig) -> None:
    """Refuse a clip over the configured limits, before any decoding.

    Raises:
        MediaLimitError: naming the file, the measured value, the limit and the setting that raises it.
    """
    size_mb = info.size_bytes / 2**20
    if size_mb > cfg.max_file_mb:
        raise MediaLimitError(
            f"{info.path}: file is {size_mb:.0f} MB, over the limit of {cfg.max_file_mb:.0f} MB "
            "(DecodeConfig.max_file_mb); re-encode it smaller or raise the limit"
        )
    if info.duration_s is not None and info.duration_s > cfg.max_duration_s:
        raise MediaLimitError(
            f"{info.path}: clip is {info.duration_s:.1f} s long, over the limit of {cfg.max_duration_s:.0f} s "
            f"(DecodeConfig.max_duration_s); cut it (ffmpeg -ss START -t SECONDS) or raise the limit"
        )
    if info.width and info.height and info.width * info.height > cfg.max_pixels:
        raise MediaLimitError(
            f"{info.path}: frames are {info.width}x{info.height}, over the limit of {cfg.max_pixels} pixels "
            "(DecodeConfig.max_pixels); downscale it (ffmpeg -vf scale=-2:720) or raise the limit"
        )


def _target_size(width: int, height: int, max_side: int | None) -> tuple[int, int] | None:
    """(width, height) after capping the longer side, both even; None when no resize is needed."""
    if not max_side or max(width, height) <= max_side:
        return None
    scale = max_side / max(width, height)
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)


def _decord_video(path: str, cfg: DecodeConfig) -> VideoResult:
    import decord

    size = None
    if cfg.max_side:
        info = probe(path)
        size = _target_size(info.width or 0, info.height or 0, cfg.max_side)
    width, height = size or (-1, -1)
    reader = decord.VideoReader(path, width=width, height=height, num_threads=cfg.threads)
    total, fps = len(reader), float(reader.get_avg_fps())
    idx = sample_indices(total, fps, cfg.sampling)
    if len(idx) == 0:
        raise MediaDecodeError(f"{path}: the video stream has no frames")
    frames = reader.get_batch(idx.tolist()).asnumpy()
    times = reader.get_frame_timestamp(idx.tolist())[:, 0].astype(np.float64)
    return VideoResult(frames, times, idx, total, fps, "decord")


def _pyav_index(container: av.container.InputContainer, stream: av.VideoStream) -> tuple[np.ndarray, np.ndarray]:
    """Presentation timestamps of every frame (sorted) and of the keyframes, from one demux pass."""
    pts, keys = [], []
    for packet in container.demux(stream):
        if packet.pts is None:
            continue
        pts.append(packet.pts)
        if packet.is_keyframe:
            keys.append(packet.pts)
    return np.sort(np.asarray(pts, dtype=np.int64)), np.sort(np.asarray(keys or pts[:1], dtype=np.int64))


def _pyav_grab(
    container: av.container.InputContainer, stream: av.VideoStream, targets: np.ndarray, keys: np.ndarray
) -> tuple[dict[int, av.VideoFrame], str | None]:
    """Decode the frames at ``targets`` (sorted pts), seeking only when a keyframe lies ahead of the decoder."""
    wanted = set(targets.tolist())
    got: dict[int, av.VideoFrame] = {}
    position, packets = None, None
    for target in targets.tolist():
        key = int(keys[max(0, np.searchsorted(keys, target, side="right") - 1)])
        if packets is None or (position is not None and position < key):
            container.seek(key, stream=stream, backward=True, any_frame=False)
            packets, position = container.demux(stream), None
        while target not in got:
            try:
                decoded = stream.decode(next(packets))
            except StopIteration:
                return got, "the stream ended early"
            except av.error.FFmpegError as e:
                return got, f"damaged data after t={_seconds(position, stream):.2f} s ({e})"
            for frame in decoded:
                if frame.pts is None:
                    continue
                position = frame.pts
                if frame.pts in wanted or frame.pts >= target:
                    got.setdefault(frame.pts if frame.pts in wanted else target, frame)
    return got, None


def _seconds(pts: int | None, stream: av.VideoStream) -> float:
    return float((pts or 0) * stream.time_base) if stream.time_base else 0.0


def _pyav_video(path: str, cfg: DecodeConfig) -> VideoResult:
    with av.open(path) as container:
        if not container.streams.video:
            raise MediaDecodeError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = cfg.threads
        pts, keys = _pyav_index(container, stream)
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 25.0
        idx = sample_indices(len(pts), fps, cfg.sampling)
        if len(idx) == 0:
            raise MediaDecodeError(f"{path}: the video stream has no frames")
        got, problem = _pyav_grab(container, stream, np.unique(pts[idx]), keys)
        warnings = []
        kept = np.asarray([i for i in idx if int(pts[i]) in got], dtype=np.int64)
        if len(kept) < len(idx):
            warnings.append(f"{path}: {len(idx) - len(kept)} of {len(idx)} sampled frames unreadable: {problem}")
        if len(kept) == 0:
            raise MediaDecodeError(f"{path}: no sampled frame could be decoded ({problem})")
        size = _target_size(stream.codec_context.width, stream.codec_context.height, cfg.max_side)
        w, h = size or (None, None)
        frames = np.stack([got[int(pts[i])].to_ndarray(format="rgb24", width=w, height=h) for i in kept])
        start = stream.start_time or 0
        times = np.asarray([_seconds(int(pts[i]) - start, stream) for i in kept], dtype=np.float64)
        return VideoResult(frames, times, kept, len(pts), fps, "pyav", warnings)


_READERS = {"decord": _decord_video, "pyav": _pyav_video}


def _decord_available() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


def decode_video(path: str | os.PathLike[str], cfg: DecodeConfig | None = None) -> VideoResult:
    """Sample and decode frames of one video, falling back to the other backend on a decoder error.

    Args:
        path: a video file.
        cfg: decoding configuration (defaults: decord first, 8 uniform frames).

    Returns:
        A :class:`VideoResult` with frames ``[t, h, w, 3]`` uint8 RGB.

    Raises:
        MediaDecodeError: every backend tried failed; the message carries each backend's error.
    """
    cfg = cfg or DecodeConfig()
    path = os.fspath(path)
    _require_file(path)
    if cfg.backend not in BACKENDS:
        raise ValueError(f"unknown decode backend {cfg.backend!r}; choose one of {', '.join(BACKENDS)}")
    order = [cfg.backend] + ([b for b in BACKENDS if b != cfg.backend] if cfg.fallback else [])
    if not _decord_available():
        order = [b for b in order if b != "decord"] or ["pyav"]
    errors: list[str] = []
    for backend in order:
        try:
            result = _READERS[backend](path, cfg)
        except Exception as e:  # noqa: BLE001 - decoders raise many types (DECORDError, RuntimeError, FFmpegError)
            errors.append(f"{backend}: {type(e).__name__}: {str(e).strip()[:300]}")
            log.info("%s: %s failed (%s); trying the next backend", path, backend, e)
            continue
        result.warnings = [f"{path}: {err} (recovered with {backend})" for err in errors] + result.warnings
        return result
    raise MediaDecodeError(
        f"{path}: could not decode the video with {' or '.join(order)}: {'; '.join(errors)}. Check that the file "
        f"plays (ffprobe {path}) or re-encode it (ffmpeg -i {path} -c:v libx264 -c:a aac fixed.mp4)"
    )


def decode_audio(path: str | os.PathLike[str], sample_rate: int = 16000) -> np.ndarray | None:
    """Decode the first audio stream of a file and resample it to float32 mono.

    Args:
        path: an audio file, or a video whose own audio track is wanted.
        sample_rate: output rate in Hz.

    Returns:
        float32 waveform ``[n]`` in [-1, 1], or None when the file has no audio stream (or it holds no samples).

    Raises:
        MediaDecodeError: the audio stream exists but cannot be decoded.
    """
    path = os.fspath(path)
    _require_file(path)
    chunks: list[np.ndarray] = []
    try:
        with av.open(path) as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            for frame in container.decode(stream):
                chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
            chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    except av.error.FFmpegError as e:
        raise MediaDecodeError(
            f"{path}: cannot decode the audio ({e}); check it plays (ffprobe {path}) or convert it "
            f"(ffmpeg -i {path} -ac 1 -ar {sample_rate} fixed.wav)"
        ) from e
    if not chunks:
        return None
    wave = np.concatenate(chunks).astype(np.float32, copy=False)
    return wave if wave.size else None


def decode_clip_info(
    clip: Clip | str | os.PathLike[str], cfg: DecodeConfig | None = None
) -> tuple[DecodedClip, DecodeInfo]:
    """Probe, check limits and decode one clip's video frames and audio.

    The audio comes from ``clip.audio`` when given, otherwise from the video's own track.

    Args:
        clip: a :class:`~affectllm.types.Clip` (paths resolved) or a bare video path.
        cfg: decoding configuration.

    Returns:
        ``(decoded, info)``: the :class:`~affectllm.types.DecodedClip` (frames ``[t, h, w, 3]``, audio ``[n]``,
        ``frame_times`` ``[t]``; a missing modality is None) and the :class:`DecodeInfo`.

    Raises:
        MediaLimitError: a file is over the limits.
        MediaDecodeError: a file cannot be decoded.
    """
    cfg = cfg or DecodeConfig()
    if not isinstance(clip, Clip):
        clip = Clip(id=Path(os.fspath(clip)).stem, video=os.fspath(clip))
    out = DecodedClip(id=clip.id, sample_rate=cfg.sample_rate, transcript=clip.transcript)
    info = DecodeInfo()
    if clip.video:
        info.probe = probe(clip.video)
        check_limits(info.probe, cfg)
        if info.probe.has_video:
            video = decode_video(clip.video, cfg)
            out.frames, out.frame_times = video.frames, video.times
            info.backend, info.total_frames, info.warnings = video.backend, video.total_frames, video.warnings
    audio_path = clip.audio or (clip.video if info.probe is not None and info.probe.has_audio else None)
    if audio_path:
        if clip.audio:
            check_limits(probe(clip.audio), cfg)
        out.audio = decode_audio(audio_path, cfg.sample_rate)
    return out, info


def decode_clip(clip: Clip | str | os.PathLike[str], cfg: DecodeConfig | None = None) -> DecodedClip:
    """:func:`decode_clip_info` without the side information."""
    return decode_clip_info(clip, cfg)[0]
