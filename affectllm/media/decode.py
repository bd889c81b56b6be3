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

A clip may be a time window ``[start, end)`` (seconds) of longer media: the manifest's ``start``/``end`` keys
(``clip.extra``, see :func:`clip_window`). Frames are sampled only inside the window (the sampling strategies run on
the window's frame range) and the audio is cut to it, exact to the output sample; a window past the end of a file
is clamped with a warning. Still images and folders of frames are read with Pillow (:mod:`.stills`).

Every error names the file and says what to do (:class:`MediaError` and its subclasses).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import av
import numpy as np

from ..types import Clip, DecodedClip
from . import stills
from .common import (
    MIN_AUDIO_S,
    WINDOW_SLACK_S,
    DecodeConfig,
    DecodeInfo,
    MediaDecodeError,
    MediaError,
    MediaInfo,
    MediaLimitError,
    MediaWindowError,
    VideoResult,
    Window,
    check_limits,
    clamp_window,
    clip_window,
    pick_indices,
    require_path,
    target_size,
)

__all__ = [
    "BACKENDS",
    "WINDOW_SLACK_S",
    "DecodeConfig",
    "DecodeInfo",
    "MediaDecodeError",
    "MediaError",
    "MediaInfo",
    "MediaLimitError",
    "MediaWindowError",
    "VideoResult",
    "Window",
    "check_limits",
    "clamp_window",
    "clip_window",
    "decode_audio",
    "decode_clip",
    "decode_clip_info",
    "decode_video",
    "probe",
]

log = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("decord", "pyav")
_CLOCK = re.compile(r"\[\d\d:\d\d:\d\d\] ")


def probe(path: str | os.PathLike[str], frame_rate: float | None = None) -> MediaInfo:
    """Read a media file's headers: duration, frame size and rate, streams.

    Args:
        path: a video or audio file, a still image, or a folder of frames (see :mod:`.stills`).
        frame_rate: frame rate of a folder of frames (default :data:`.stills.DEFAULT_FOLDER_FPS`).

    Returns:
        A :class:`MediaInfo`.

    Raises:
        MediaError: missing file, or a file no demuxer can open.
    """
    path = os.fspath(path)
    require_path(path, folder_ok=True)
    if stills.is_stills(path):
        return stills.probe_stills(path, frame_rate)
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


def _decord_video(path: str, cfg: DecodeConfig, window: Window | None = None) -> VideoResult:
    import decord

    size = None
    if cfg.max_side:
        info = probe(path)
        size = target_size(info.width or 0, info.height or 0, cfg.max_side)
    width, height = size or (-1, -1)
    reader = decord.VideoReader(path, width=width, height=height, num_threads=cfg.threads)
    total, fps = len(reader), float(reader.get_avg_fps())
    times = reader.get_frame_timestamp(list(range(total)))[:, 0] if window is not None and total else None
    idx = pick_indices(total, fps, cfg, path, times, window)
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


def _pyav_video(path: str, cfg: DecodeConfig, window: Window | None = None) -> VideoResult:
    with av.open(path) as container:
        if not container.streams.video:
            raise MediaDecodeError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = cfg.threads
        pts, keys = _pyav_index(container, stream)
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 25.0
        start = stream.start_time or 0
        times = (pts - start).astype(np.float64) * float(stream.time_base or 0)
        idx = pick_indices(len(pts), fps, cfg, path, times, window)
        got, problem = _pyav_grab(container, stream, np.unique(pts[idx]), keys)
        warnings = []
        kept = np.asarray([i for i in idx if int(pts[i]) in got], dtype=np.int64)
        if len(kept) < len(idx):
            warnings.append(f"{path}: {len(idx) - len(kept)} of {len(idx)} sampled frames unreadable: {problem}")
        if len(kept) == 0:
            raise MediaDecodeError(f"{path}: no sampled frame could be decoded ({problem})")
        size = target_size(stream.codec_context.width, stream.codec_context.height, cfg.max_side)
        w, h = size or (None, None)
        frames = np.stack([got[int(pts[i])].to_ndarray(format="rgb24", width=w, height=h) for i in kept])
        return VideoResult(frames, times[kept], kept, len(pts), fps, "pyav", warnings)


_READERS = {"decord": _decord_video, "pyav": _pyav_video}


def _decord_available() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


def decode_video(
    path: str | os.PathLike[str],
    cfg: DecodeConfig | None = None,
    window: Window | None = None,
    frame_rate: float | None = None,
) -> VideoResult:
    """Sample and decode frames of one video, falling back to the other backend on a decoder error.

    Args:
        path: a video file, a still image or a folder of frames (read with Pillow, see :mod:`.stills`).
        cfg: decoding configuration (defaults: decord first, 8 uniform frames).
        window: ``(start, end)`` seconds: sample only the frames stamped in ``[start, end)`` (indices and times
            stay those of the whole file); a window past the end is cut at the last frame.
        frame_rate: frame rate of a folder of frames (default 25); ignored for video files.

    Returns:
        A :class:`VideoResult` with frames ``[t, h, w, 3]`` uint8 RGB.

    Raises:
        MediaDecodeError: every backend tried failed; the message carries each backend's error (a window holding
            no frame is such an error).
    """
    cfg = cfg or DecodeConfig()
    path = os.fspath(path)
    require_path(path, folder_ok=True)
    if stills.is_stills(path):
        return stills.decode_stills(path, cfg, window, frame_rate)
    if cfg.backend not in BACKENDS:
        raise ValueError(f"unknown decode backend {cfg.backend!r}; choose one of {', '.join(BACKENDS)}")
    order = [cfg.backend] + ([b for b in BACKENDS if b != cfg.backend] if cfg.fallback else [])
    if not _decord_available():
        order = [b for b in order if b != "decord"] or ["pyav"]
    errors: list[str] = []
    for backend in order:
        try:
            result = _READERS[backend](path, cfg, window)  # every reader takes (path, cfg, window=None)
        except Exception as e:  # noqa: BLE001 - decoders raise many types (DECORDError, RuntimeError, FFmpegError)
            # decord stamps its messages with the wall clock ("[00:43:40] "): dropped, so rows are reproducible
            errors.append(f"{backend}: {type(e).__name__}: {_CLOCK.sub('', str(e)).strip()[:300]}")
            log.info("%s: %s failed (%s); trying the next backend", path, backend, e)
            continue
        result.warnings = [f"{path}: {err} (recovered with {backend})" for err in errors] + result.warnings
        return result
    raise MediaDecodeError(
        f"{path}: could not decode the video with {' or '.join(order)}: {'; '.join(errors)}. Check that the file "
        f"plays (ffprobe {path}) or re-encode it (ffmpeg -i {path} -c:v libx264 -c:a aac fixed.mp4)"
    )


def decode_audio(
    path: str | os.PathLike[str], sample_rate: int = 16000, window: Window | None = None
) -> np.ndarray | None:
    """Decode the first audio stream of a file and resample it to float32 mono.

    With a window, the resampled stream is cut to output samples ``[round(start * rate), round(end * rate))``
    (time 0 is the first decoded sample), so the cut is exact to the sample and equal to the same slice of the
    whole file's decode; decoding stops once ``end`` is reached.

    Args:
        path: an audio file, or a video whose own audio track is wanted.
        sample_rate: output rate in Hz.
        window: ``(start, end)`` seconds to keep (``end`` exclusive, None: to the end of the file).

    Returns:
        float32 waveform ``[n]`` in [-1, 1], or None when the file has no audio stream (or it, or the window,
        holds no samples).

    Raises:
        MediaDecodeError: the audio stream exists but cannot be decoded.
    """
    path = os.fspath(path)
    require_path(path)
    chunks: list[np.ndarray] = []
    first, stop = (0, None) if window is None else (round(window[0] * sample_rate), window[1])
    stop = None if stop is None else round(stop * sample_rate)
    try:
        with av.open(path) as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            done = 0
            for frame in container.decode(stream):
                new = [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
                chunks.extend(new)
                done += sum(c.size for c in new)
                if stop is not None and done >= stop:
                    break
            else:
                chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    except av.error.FFmpegError as e:
        raise MediaDecodeError(
            f"{path}: cannot decode the audio ({e}); check it plays (ffprobe {path}) or convert it "
            f"(ffmpeg -i {path} -ac 1 -ar {sample_rate} fixed.wav)"
        ) from e
    if not chunks:
        return None
    wave = np.concatenate(chunks).astype(np.float32, copy=False)[first:stop]
    return wave if wave.size else None


def decode_clip_info(
    clip: Clip | str | os.PathLike[str], cfg: DecodeConfig | None = None
) -> tuple[DecodedClip, DecodeInfo]:
    """Probe, check limits and decode one clip's video frames and audio.

    The audio comes from ``clip.audio`` when given, otherwise from the video's own track. The clip's window
    (:func:`clip_window`) applies to every media file of the row, which share one timeline: frames are sampled
    inside it and the audio (``clip.audio`` or the video's own track) is cut to it; each file's window is clamped
    to that file's duration with a warning in ``info.warnings``. A folder of frames runs at ``clip.extra["fps"]``
    (default 25).

    Args:
        clip: a :class:`~affectllm.types.Clip` (paths resolved) or a bare video path.
        cfg: decoding configuration.

    Returns:
        ``(decoded, info)``: the :class:`~affectllm.types.DecodedClip` (frames ``[t, h, w, 3]``, audio ``[n]``,
        ``frame_times`` ``[t]`` in seconds into the file; a missing modality is None) and the :class:`DecodeInfo`.

    Raises:
        MediaLimitError: a file is over the limits.
        MediaDecodeError: a file cannot be decoded.
        MediaWindowError: the window is malformed or empty, or starts after the end of a file.
    """
    cfg = cfg or DecodeConfig()
    if not isinstance(clip, Clip):
        clip = Clip(id=Path(os.fspath(clip)).stem, video=os.fspath(clip))
    out = DecodedClip(id=clip.id, sample_rate=cfg.sample_rate, transcript=clip.transcript)
    info = DecodeInfo()
    window = clip_window(clip)
    rate = clip.extra.get("fps")
    rate = float(rate) if isinstance(rate, (int, float)) and not isinstance(rate, bool) and rate > 0 else None
    video_window = window
    if clip.video:
        info.probe = probe(clip.video, rate)
        _require_stream(info.probe, "video")
        check_limits(info.probe, cfg, window)
        video_window = clamp_window(window, info.probe, clip.id, info.warnings)
        video = decode_video(clip.video, cfg, video_window, rate)
        out.frames, out.frame_times = video.frames, video.times
        info.backend, info.total_frames = video.backend, video.total_frames
        info.warnings += video.warnings
    if clip.audio:
        audio_probe = probe(clip.audio)
        _require_stream(audio_probe, "audio")
        check_limits(audio_probe, cfg, window)
        audio_window = clamp_window(window, audio_probe, clip.id, info.warnings)
        out.audio = decode_audio(clip.audio, cfg.sample_rate, audio_window)
        if out.audio is None or out.audio.size < cfg.sample_rate * MIN_AUDIO_S:
            got = 0 if out.audio is None else out.audio.size
            raise MediaDecodeError(
                f"{clip.audio}: no audio samples to use ({got} at {cfg.sample_rate} Hz, under {MIN_AUDIO_S * 1000:g} "
                "ms); give a longer recording or drop the row's 'audio'"
            )
    elif info.probe is not None and info.probe.has_audio:
        out.audio = _own_audio(clip.video, cfg.sample_rate, video_window, info.warnings)
    return out, info


def _require_stream(media: MediaInfo, kind: str) -> None:
    """Refuse a file given as ``kind`` that has no such stream (audio in ``video``, a video in ``audio``)."""
    if (media.has_video if kind == "video" else media.has_audio):
        return
    found = ", ".join(k for k, has in (("video", media.has_video), ("audio", media.has_audio)) if has) or "none"
    raise MediaDecodeError(
        f"{media.path}: no {kind} stream (streams: {found}); give the file under the field of the stream it has, or "
        f"a file with {kind}"
    )


def _own_audio(path: str, sample_rate: int, window: Window | None, warnings: list[str]) -> np.ndarray | None:
    """A video's own audio track; a track that cannot be decoded (a cut file) costs the audio, not the frames."""
    try:
        return decode_audio(path, sample_rate, window)
    except MediaDecodeError as err:
        warnings.append(f"{err}; the clip keeps its video without audio")
        return None


def decode_clip(clip: Clip | str | os.PathLike[str], cfg: DecodeConfig | None = None) -> DecodedClip:
    """:func:`decode_clip_info` without the side information."""
    return decode_clip_info(clip, cfg)[0]
