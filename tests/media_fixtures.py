"""Small media files written by the tests themselves (PyAV encodes; nothing is downloaded).

Used by the media, prep and bench code: ``write_video`` (optionally with an audio track, a fixed keyframe
interval, or a still image panned across the frame), ``write_wav`` and ``write_corrupt``.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def tone(seconds: float, sample_rate: int, channels: int = 1, hz: float = 440.0) -> np.ndarray:
    """A sine tone, float32 ``[channels, n]`` in [-0.5, 0.5]."""
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    wave = (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)
    return np.repeat(wave[None], channels, axis=0)


def pattern_frames(count: int, height: int, width: int) -> list[np.ndarray]:
    """``count`` distinct RGB frames ``[h, w, 3]``: a moving bar whose position encodes the frame number."""
    base = np.zeros((height, width, 3), np.uint8)
    base[..., 2] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    frames = []
    for i in range(count):
        f = base.copy()
        x = (i * 7) % max(1, width - 8)
        f[:, x : x + 8, 0] = 255
        f[: min(height, 16), :, 1] = (i * 3) % 256
        frames.append(f)
    return frames


def panned_frames(image: np.ndarray, count: int, height: int, width: int) -> list[np.ndarray]:
    """``count`` RGB frames ``[h, w, 3]`` of ``image`` resized to cover the frame and slowly panned."""
    import cv2

    scale = max(height / image.shape[0], width / image.shape[1]) * 1.1
    big = cv2.resize(image, (int(image.shape[1] * scale), int(image.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    span_y, span_x = big.shape[0] - height, big.shape[1] - width
    frames = []
    for i in range(count):
        a = i / max(1, count - 1)
        y, x = int(span_y * a), int(span_x * (1 - a))
        frames.append(np.ascontiguousarray(big[y : y + height, x : x + width]))
    return frames


def write_video(
    path: str | Path,
    seconds: float = 2.0,
    fps: int = 30,
    size: tuple[int, int] = (96, 128),
    audio: bool = False,
    sample_rate: int = 44100,
    channels: int = 2,
    gop: int | None = None,
    image: np.ndarray | None = None,
    distinct: int | None = None,
    preset: str = "ultrafast",
    faststart: bool = False,
    hz: float = 440.0,
) -> Path:
    """Encode an H.264 mp4 (yuv420p) with an optional AAC audio track (a 440 Hz tone).

    Args:
        path: output file.
        seconds: duration.
        fps: frame rate.
        size: ``(height, width)``; both even.
        audio: add an audio track.
        sample_rate: audio sample rate.
        channels: audio channels (1 or 2).
        gop: keyframe interval in frames (None: the encoder's default).
        image: a still RGB image to pan across the frames (e.g. a face); None draws a moving pattern.
        distinct: how many distinct frames to render and cycle through (speeds up long clips).
        preset: x264 preset.
        faststart: put the index (moov atom) before the data, as streaming encoders do.
        hz: audio tone frequency.

    Returns:
        The path written.
    """
    path = Path(path)
    height, width = size
    n = int(round(seconds * fps))
    k = min(n, distinct or n)
    frames = panned_frames(image, k, height, width) if image is not None else pattern_frames(k, height, width)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        opts = {"preset": preset, "tune": "zerolatency"} if preset == "ultrafast" else {"preset": preset}
        if gop:
            opts.update({"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"})
        vs.options = opts
        if audio:
            as_ = out.add_stream("aac", rate=sample_rate)
            as_.layout = "stereo" if channels == 2 else "mono"
        for i in range(n):
            out.mux(vs.encode(av.VideoFrame.from_ndarray(frames[i % k], format="rgb24")))
        out.mux(vs.encode(None))
        if audio:
            _encode_audio(out, as_, tone(seconds, sample_rate, channels, hz))
    return path


def _encode_audio(out: av.container.OutputContainer, stream: av.AudioStream, wave: np.ndarray) -> None:
    layout = "stereo" if wave.shape[0] == 2 else "mono"
    chunk = 1024
    for start in range(0, wave.shape[1], chunk):
        piece = np.ascontiguousarray(wave[:, start : start + chunk])
        frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout=layout)
        frame.sample_rate = stream.rate
        frame.pts = start
        frame.time_base = Fraction(1, stream.rate)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def write_wav(
    path: str | Path, seconds: float = 1.0, sample_rate: int = 44100, channels: int = 2, hz: float = 440.0
) -> Path:
    """Write a 16-bit PCM wav of a sine tone."""
    path = Path(path)
    wave = tone(seconds, sample_rate, channels, hz)
    pcm = (wave.T * 32767).astype(np.int16).reshape(1, -1)
    with av.open(str(path), "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=sample_rate)
        stream.layout = "stereo" if channels == 2 else "mono"
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout=stream.layout.name)
        frame.sample_rate = sample_rate
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def write_corrupt(path: str | Path, nbytes: int = 4096, seed: int = 0) -> Path:
    """Write random bytes under a video name (no container either backend can read)."""
    path = Path(path)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8).tobytes())
    return path


def write_truncated(src: str | Path, path: str | Path, keep: float = 0.5) -> Path:
    """Copy the first ``keep`` share of ``src``'s bytes to ``path`` (a clip cut off mid-stream)."""
    data = Path(src).read_bytes()
    path = Path(path)
    path.write_bytes(data[: int(len(data) * keep)])
    return path
