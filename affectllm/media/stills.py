"""Still images and folders of frames, read with Pillow, as one-frame and many-frame videos.

* An image file (:data:`IMAGE_EXTS`, e.g. FEA-20K's faces) is a video of one frame at t = 0. The sampler treats it
  like any video shorter than asked: the frame once by default, ``n`` copies with ``SamplingConfig.repeat`` (for a
  consumer that needs a fixed ``t``). A time window has no meaning on it and is ignored, with a warning.
* A folder of frames (FERV39K, BP4D) is a video whose frame ``i`` is the ``i``-th image file in natural name order
  (``2.jpg`` before ``10.jpg``; hidden and non-image files are skipped), stamped ``i / fps`` seconds, ``fps`` from
  the manifest's ``fps`` key or :data:`DEFAULT_FOLDER_FPS`. The usual sampling strategies and time windows apply;
  only the sampled files are read. A frame of another size than the first sampled one is resized to it.

:func:`affectllm.media.decode.probe` and :func:`~affectllm.media.decode.decode_video` dispatch here for such paths.
"""

from __future__ import annotations

import os
import re

import numpy as np

from .common import (
    DecodeConfig,
    MediaDecodeError,
    MediaError,
    MediaInfo,
    MediaLimitError,
    VideoResult,
    Window,
    pick_indices,
    target_size,
)
from .sampling import sample_indices

IMAGE_EXTS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
DEFAULT_FOLDER_FPS = 25.0
"""Frame rate of a folder of frames when the manifest row has no ``fps`` (BP4D's rate; FERV39K states none)."""

_DIGITS = re.compile(r"(\d+)")


def is_image(path: str | os.PathLike[str]) -> bool:
    """True for an existing file with an image extension (:data:`IMAGE_EXTS`, any case)."""
    return os.path.isfile(path) and os.path.splitext(os.fspath(path))[1].lower() in IMAGE_EXTS


def is_stills(path: str | os.PathLike[str]) -> bool:
    """True for a still image or a folder (both are read here rather than by a video decoder)."""
    return os.path.isdir(path) or is_image(path)


def natural_key(name: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key putting ``frame2`` before ``frame10`` (digit runs compare as numbers).

    >>> sorted(["f10.jpg", "f2.jpg", "f1.jpg"], key=natural_key)
    ['f1.jpg', 'f2.jpg', 'f10.jpg']
    """
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t.lower()) for t in _DIGITS.split(name) if t)


def frame_files(folder: str | os.PathLike[str]) -> list[str]:
    """The image files of a folder (not recursive, hidden files skipped), in natural name order."""
    names = [n for n in os.listdir(folder) if not n.startswith(".") and os.path.splitext(n)[1].lower() in IMAGE_EXTS]
    return [os.path.join(folder, n) for n in sorted(names, key=natural_key)]


def _open_error(path: str, err: Exception) -> MediaDecodeError:
    return MediaDecodeError(
        f"{path}: cannot read the image ({type(err).__name__}: {err}); check the file opens in an image viewer "
        "or re-save it (e.g. ffmpeg -i IN.png OUT.jpg)"
    )


def _bomb_error(path: str, err: Exception) -> MediaLimitError:
    return MediaLimitError(
        f"{path}: the image declares more pixels than Pillow will open ({err}); over the limit of frame size "
        "(DecodeConfig.max_pixels): downscale it (ffmpeg -i IN.png -vf scale=-2:720 OUT.png) or replace it"
    )


def _folder(path: str, frame_rate: float | None) -> tuple[list[str], float]:
    files = frame_files(path)
    if not files:
        raise MediaError(
            f"{path}: a directory with no image files ({', '.join(IMAGE_EXTS)}); point 'video' at a video file, an "
            "image or a folder of frames"
        )
    return files, float(frame_rate or DEFAULT_FOLDER_FPS)


def probe_stills(path: str, frame_rate: float | None = None) -> MediaInfo:
    """Probe an image (one frame, no duration) or a folder of frames (``num_frames / fps`` seconds).

    Only the first image's header is read. ``size_bytes`` of a folder is the sum of its frames.

    Raises:
        MediaError: an empty folder, or an image Pillow cannot open.
    """
    from PIL import Image

    files, fps = ([path], float(frame_rate or DEFAULT_FOLDER_FPS)) if is_image(path) else _folder(path, frame_rate)
    try:
        with Image.open(files[0]) as img:
            (width, height), fmt = img.size, (img.format or "image").lower()
    except Image.DecompressionBombError as err:  # not an OSError: a tiny file whose header declares a huge frame
        raise _bomb_error(files[0], err) from err
    except OSError as err:
        raise _open_error(files[0], err) from err
    folder = len(files) > 1 or os.path.isdir(path)
    return MediaInfo(
        path=path,
        size_bytes=sum(os.path.getsize(f) for f in files),
        duration_s=len(files) / fps if folder else None,
        has_video=True,
        width=width,
        height=height,
        fps=fps if folder else None,
        num_frames=len(files),
        video_codec=f"frames/{fmt}" if folder else fmt,
    )


def _read_rgb(path: str, size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
            if size is not None and rgb.size != size:
                rgb = rgb.resize(size, Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)
    except Image.DecompressionBombError as err:
        raise _bomb_error(path, err) from err
    except OSError as err:
        raise _open_error(path, err) from err


def decode_stills(
    path: str, cfg: DecodeConfig, window: Window | None = None, frame_rate: float | None = None
) -> VideoResult:
    """Sampled frames of an image or a folder of frames, as a :class:`VideoResult` (``backend="pillow"``).

    Args:
        path: an image file or a folder of frames.
        cfg: decoding configuration (sampling, ``max_side``).
        window: ``(start, end)`` seconds; a folder samples only frames stamped inside it, an image ignores it.
        frame_rate: the folder's frame rate (default :data:`DEFAULT_FOLDER_FPS`).

    Raises:
        MediaError: an empty folder, an unreadable image, or a window holding no frame.
    """
    warnings: list[str] = []
    if is_image(path):
        files, fps = [path], float(frame_rate or DEFAULT_FOLDER_FPS)
        idx = sample_indices(1, fps, cfg.sampling)
        if window is not None:
            warnings.append(f"{path}: a still image has no timeline; the window {window} s is ignored")
    else:
        files, fps = _folder(path, frame_rate)
        idx = pick_indices(len(files), fps, cfg, path, np.arange(len(files)) / fps, window)
    first = _read_rgb(files[int(idx[0])], None)
    height, width = first.shape[:2]
    size = target_size(width, height, cfg.max_side) or (width, height)
    cache = {int(idx[0]): _read_rgb(files[int(idx[0])], size) if size != (width, height) else first}
    for i in np.unique(idx).tolist():
        if i not in cache:
            cache[i] = _read_rgb(files[i], size)
    frames = np.stack([cache[int(i)] for i in idx])
    return VideoResult(frames, idx / fps, idx, len(files), fps, "pillow", warnings)
