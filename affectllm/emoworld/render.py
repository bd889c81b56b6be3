"""EmoWorld face video: a drawn face whose brows, lids, cheeks, nose and mouth follow AU intensity curves.

The face lives in "face units" (origin at the face centre, x right, y down, face half-width 1). Every AU moves or
darkens a named part, so each AU is visible in pixels on its own:

=====  ===========================  ==================================================================
AU     FACS name                    what moves in the drawing
=====  ===========================  ==================================================================
AU1    inner brow raiser            inner brow ends rise; central forehead lines darken
AU2    outer brow raiser            outer brow ends rise; lateral forehead lines darken
AU4    brow lowerer                 brows drop and pull together; vertical lines between the brows
AU5    upper lid raiser             upper lids open wider (white above the iris)
AU6    cheek raiser                 cheeks rise and redden, lower lids rise, crow's feet at the eye corners
AU7    lid tightener                lower lids rise, eyes narrow, a tension line under each eye
AU9    nose wrinkler                lines across the nose bridge, nostrils rise and flare
AU10   upper lip raiser             upper lip rises; nasolabial folds deepen
AU12   lip corner puller            mouth corners rise and widen
AU15   lip corner depressor         mouth corners drop
AU17   chin raiser                  lower lip pushed up; chin boss line darkens
AU20   lip stretcher                mouth stretches sideways
AU23   lip tightener                lips thin and pale, mouth narrows
AU25   lips part                    a dark gap between the lips
AU26   jaw drop                     the gap widens and the chin drops
=====  ===========================  ==================================================================

Frames are drawn with PIL at twice the size and box-downsampled (anti-aliasing), then encoded as H.264 mp4.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import av
import numpy as np
from PIL import Image, ImageDraw

AU_CODES: tuple[int, ...] = (1, 2, 4, 5, 6, 7, 9, 10, 12, 15, 17, 20, 23, 25, 26)
_IDX = {code: i for i, code in enumerate(AU_CODES)}
_SUPER = 2  # supersampling factor

SKIN = ((241, 204, 177), (224, 172, 138), (198, 134, 98), (160, 104, 72), (112, 72, 50))
HAIR = ((30, 24, 20), (80, 50, 30), (150, 110, 60), (200, 170, 110), (120, 120, 120))


@dataclass(frozen=True)
class Identity:
    """Per-clip appearance: who the face is, where it sits, how it moves, what is behind it."""

    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    background: tuple[int, int, int]
    face_scale: float  # face half-width as a share of the frame width
    aspect: float  # face half-height / half-width
    eye_gap: float
    brow_width: float
    head_motion: float  # 0 = still head
    motion_phase: tuple[float, float, float]
    clutter: tuple[tuple[int, float, float, float, tuple[int, int, int]], ...]  # (kind, x, y, size, colour)
    gain: float  # lighting


def sample_identity(rng: np.random.Generator, head_motion: float, clutter: float) -> Identity:
    """Draw a random face identity, background and motion pattern."""
    n_shapes = int(rng.binomial(10, min(max(clutter, 0.0), 1.0)))
    shapes = tuple(
        (
            int(rng.integers(0, 3)),
            float(rng.uniform(0, 1)),
            float(rng.uniform(0, 1)),
            float(rng.uniform(0.05, 0.25)),
            tuple(int(c) for c in rng.integers(30, 226, size=3)),
        )
        for _ in range(n_shapes)
    )
    return Identity(
        skin=SKIN[int(rng.integers(len(SKIN)))],
        hair=HAIR[int(rng.integers(len(HAIR)))],
        background=tuple(int(c) for c in rng.integers(60, 200, size=3)),
        face_scale=float(rng.uniform(0.25, 0.3)),
        aspect=float(rng.uniform(1.2, 1.35)),
        eye_gap=float(rng.uniform(0.34, 0.42)),
        brow_width=float(rng.uniform(0.05, 0.08)),
        head_motion=float(head_motion),
        motion_phase=tuple(float(p) for p in rng.uniform(0, 2 * np.pi, size=3)),
        clutter=shapes,
        gain=float(rng.uniform(0.85, 1.1)),
    )


def au_curves(peaks: np.ndarray, n_frames: int, fps: float, rng: np.random.Generator) -> np.ndarray:
    """Onset-apex-offset intensity curves for each AU.

    Args:
        peaks: apex intensity per AU in :data:`AU_CODES` order, ``[a]``, values in 0..1.
        n_frames: number of frames.
        fps: frame rate.
        rng: random generator (timing jitter).

    Returns:
        Intensities ``[n_frames, a]``; each active AU reaches its peak during the apex.
    """
    t = np.arange(n_frames) / fps
    dur = n_frames / fps
    onset, offset = rng.uniform(0.08, 0.3) * dur, rng.uniform(0.7, 0.95) * dur
    rise = rng.uniform(0.25, 0.5)
    curves = np.zeros((n_frames, len(peaks)), dtype=np.float32)
    for j, peak in enumerate(peaks):
        if peak <= 0:
            continue
        lag = rng.normal(0.0, 0.06)
        up = np.clip((t - onset - lag) / rise, 0.0, 1.0)
        down = np.clip((offset + lag - t) / rise + 1.0, 0.0, 1.0)
        env = np.minimum(up, down)
        curves[:, j] = peak * env * env * (3.0 - 2.0 * env)  # smoothstep
    return curves


def _mix(a: tuple[int, int, int], b: tuple[int, int, int], k: float) -> tuple[int, int, int]:
    k = min(max(k, 0.0), 1.0)
    return tuple(int(round(x * (1 - k) + y * k)) for x, y in zip(a, b, strict=True))


def _crease(skin: tuple[int, int, int]) -> tuple[int, int, int]:
    """Colour of a fully deepened wrinkle or fold on this skin."""
    return _mix(skin, (15, 8, 8), 0.8)


_U = np.linspace(-1.0, 1.0, 9)


def _arc(x0: float, x1: float, y_end: float, y_mid: float) -> np.ndarray:
    """Points of a parabola from (x0, y_end) through (mid, y_mid) to (x1, y_end)."""
    xs = (x0 + x1) / 2 + _U * ((x1 - x0) / 2)
    return np.stack([xs, y_end + (y_mid - y_end) * (1 - _U * _U)], axis=1)


@lru_cache(maxsize=8)
def _unit_circle(n: int) -> np.ndarray:
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([np.cos(a), np.sin(a)], axis=1)


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 28) -> np.ndarray:
    return _unit_circle(n) * (rx, ry) + (cx, cy)


class _Canvas:
    """Draws face-unit shapes through the head pose transform."""

    def __init__(self, draw: ImageDraw.ImageDraw, centre: tuple[float, float], scale: float, angle: float):
        self.draw, self.scale = draw, scale
        self.cos, self.sin = float(np.cos(angle)) * scale, float(np.sin(angle)) * scale
        self.cx, self.cy = centre

    def _px(self, pts: np.ndarray) -> list[tuple[float, float]]:
        # Element-wise (no matmul: BLAS kernels may round differently by memory alignment) and rounded to 1/1024
        # pixel, so the same clip rasterises to the same pixels in any process.
        x = np.round((self.cos * pts[:, 0] - self.sin * pts[:, 1] + self.cx) * 1024) / 1024
        y = np.round((self.sin * pts[:, 0] + self.cos * pts[:, 1] + self.cy) * 1024) / 1024
        return list(zip(x.tolist(), y.tolist(), strict=True))

    def poly(self, pts: np.ndarray, fill: tuple[int, int, int]) -> None:
        self.draw.polygon(self._px(pts), fill=fill)

    def line(self, pts: np.ndarray, fill: tuple[int, int, int], width: float) -> None:
        self.draw.line(self._px(pts), fill=fill, width=max(_SUPER, int(round(width * self.scale))), joint="curve")


def _draw_eyes(cv: _Canvas, ident: Identity, a: np.ndarray) -> None:
    au = {c: float(a[i]) for c, i in _IDX.items()}
    dark = _crease(ident.skin)
    for side in (-1.0, 1.0):
        cx, cy, hw = side * ident.eye_gap, -0.12, 0.17
        up = 0.075 * (1 + 0.9 * au[5] - 0.4 * au[7] - 0.25 * au[6] - 0.2 * au[4])
        low = 0.06 * (1 - 0.5 * au[6] - 0.6 * au[7] + 0.2 * au[5])
        cv.poly(_ellipse(cx, cy, hw, 0.16), (250, 250, 250))
        cv.poly(_ellipse(cx, cy, 0.065, 0.065), (50, 40, 35))
        top, bot = _arc(cx - hw, cx + hw, cy, cy - up), _arc(cx - hw, cx + hw, cy, cy + low)
        cv.poly(np.vstack([top, [[cx + hw + 0.02, cy - 0.2], [cx - hw - 0.02, cy - 0.2]]]), ident.skin)
        cv.poly(np.vstack([bot, [[cx + hw + 0.02, cy + 0.18], [cx - hw - 0.02, cy + 0.18]]]), ident.skin)
        cv.line(top, (35, 25, 25), 0.025)
        if au[7] > 0.05:
            cv.line(_arc(cx - 0.12, cx + 0.12, cy + low + 0.05, cy + low + 0.07), _mix(ident.skin, dark, au[7]), 0.02)
        if au[6] > 0.05:
            x0 = cx + side * (hw + 0.02)
            for dy in (-0.05, 0.0, 0.05):
                cv.line(np.array([[x0, cy], [x0 + side * 0.1, cy + dy * 1.6]]), _mix(ident.skin, dark, au[6]), 0.02)


def _draw_brows(cv: _Canvas, ident: Identity, a: np.ndarray) -> None:
    au = {c: float(a[i]) for c, i in _IDX.items()}
    dark = _crease(ident.skin)
    for side in (-1.0, 1.0):
        inner = [side * (0.14 - 0.05 * au[4]), -0.40 - 0.17 * au[1] + 0.11 * au[4]]
        mid = [side * 0.37, -0.47 - 0.08 * au[1] - 0.11 * au[2] + 0.08 * au[4]]
        outer = [side * 0.6, -0.38 - 0.16 * au[2] + 0.06 * au[4]]
        cv.line(np.array([inner, mid, outer]), _mix(ident.hair, (10, 5, 5), 0.75), ident.brow_width)
    if au[4] > 0.05:
        for x in (-0.045, 0.045):
            cv.line(np.array([[x, -0.42], [x, -0.29]]), _mix(ident.skin, dark, au[4]), 0.022)
    for y in (-0.66, -0.76):
        if au[1] > 0.05:
            cv.line(_arc(-0.22, 0.22, y, y - 0.03), _mix(ident.skin, dark, 0.9 * au[1]), 0.02)
        if au[2] > 0.05:
            for side in (-1.0, 1.0):
                cv.line(_arc(side * 0.25, side * 0.55, y + 0.03, y), _mix(ident.skin, dark, 0.9 * au[2]), 0.02)


def _draw_nose_cheeks(cv: _Canvas, ident: Identity, a: np.ndarray) -> None:
    au = {c: float(a[i]) for c, i in _IDX.items()}
    dark = _crease(ident.skin)
    for side in (-1.0, 1.0):
        cheek = _ellipse(side * 0.5, 0.24 - 0.1 * au[6], 0.17, 0.12)
        cv.poly(cheek, _mix(ident.skin, (225, 95, 95), 0.12 + 0.45 * au[6]))
    cv.line(np.array([[0.0, -0.12], [0.03, 0.2]]), _mix(ident.skin, dark, 0.35), 0.02)
    ny = 0.28 - 0.05 * au[9] - 0.03 * au[10]
    nw = 0.1 * (1 + 0.35 * au[9])
    for side in (-1.0, 1.0):
        cv.poly(_ellipse(side * nw, ny, 0.045, 0.025, 12), _mix(ident.skin, (30, 15, 15), 0.6))
    if au[9] > 0.05:
        for y in (-0.06, 0.0, 0.06):
            cv.line(np.array([[-0.08, y], [0.08, y]]), _mix(ident.skin, dark, au[9]), 0.02)
    fold = max(au[10], 0.7 * au[6], 0.6 * au[12], 0.5 * au[9])
    if fold > 0.05:
        for side in (-1.0, 1.0):
            pts = np.array([[side * (nw + 0.06), ny], [side * 0.32, 0.45], [side * 0.38, 0.66]])
            cv.line(pts, _mix(ident.skin, dark, fold), 0.022)


def _draw_mouth(cv: _Canvas, ident: Identity, a: np.ndarray) -> None:
    au = {c: float(a[i]) for c, i in _IDX.items()}
    my = 0.62
    mw = 0.33 + 0.08 * au[12] + 0.18 * au[20] - 0.1 * au[23]
    corner = my - 0.18 * au[12] + 0.16 * au[15] + 0.03 * au[20]
    gap = (0.015 + 0.08 * au[25] + 0.18 * au[26]) if max(au[25], au[26]) > 0.05 else 0.0
    thick = 0.055 * (1 - 0.8 * au[23])
    top_in, bot_in = my - gap / 2 - 0.05 * au[10], my + gap / 2 - 0.05 * au[17]
    lip = _mix((200, 60, 80), ident.skin, 0.15 + 0.55 * au[23])
    upper_out = _arc(-mw, mw, corner, top_in - thick - 0.05 * au[10])
    lower_out = _arc(-mw, mw, corner, bot_in + 1.2 * thick)
    cv.poly(np.vstack([upper_out, lower_out[::-1]]), lip)
    if gap > 0:
        inner_top = _arc(-mw * 0.92, mw * 0.92, corner, top_in)
        inner_bot = _arc(-mw * 0.92, mw * 0.92, corner, bot_in)
        cv.poly(np.vstack([inner_top, inner_bot[::-1]]), (60, 20, 25))
        if gap > 0.05:
            teeth = _arc(-mw * 0.6, mw * 0.6, top_in + 0.01, top_in + min(gap, 0.06) * 0.6)
            cv.poly(np.vstack([_arc(-mw * 0.6, mw * 0.6, top_in, top_in), teeth[::-1]]), (235, 235, 225))
    else:
        cv.line(_arc(-mw, mw, corner, my), (110, 45, 50), 0.02)
    _draw_mouth_creases(cv, ident, au, mw, corner)


def _draw_mouth_creases(cv: _Canvas, ident: Identity, au: dict[int, float], mw: float, corner: float) -> None:
    """Folds around the mouth: depressor lines (AU15), stretch lines (AU20), tightener bulge (AU23), chin (AU17)."""
    dark = _crease(ident.skin)
    for side in (-1.0, 1.0):
        if au[15] > 0.05:
            pts = np.array([[side * (mw + 0.01), corner], [side * (mw + 0.06), corner + 0.14]])
            cv.line(pts, _mix(ident.skin, dark, au[15]), 0.03)
        if au[20] > 0.05:
            pts = np.array([[side * (mw + 0.02), corner], [side * (mw + 0.12), corner + 0.03]])
            cv.line(pts, _mix(ident.skin, dark, au[20]), 0.03)
        if au[23] > 0.05:
            cv.line(
                np.array([[side * (mw + 0.01), corner - 0.05], [side * (mw + 0.01), corner + 0.05]]),
                _mix(ident.skin, dark, au[23]),
                0.03,
            )
    if au[17] > 0.05:
        lift = 0.1 * au[26]
        cv.line(_arc(-0.16, 0.16, 0.9 + lift, 0.84 + lift), _mix(ident.skin, dark, au[17]), 0.03)
        cv.line(np.array([[-0.04, 0.95 + lift], [0.04, 0.95 + lift]]), _mix(ident.skin, dark, au[17]), 0.03)


def _pose(ident: Identity, t: float, size: int) -> tuple[tuple[float, float], float]:
    """Head centre (pixels, supersampled) and roll angle at time ``t`` seconds."""
    p0, p1, p2 = ident.motion_phase
    m = ident.head_motion
    dx = m * 0.06 * size * np.sin(2 * np.pi * 0.35 * t + p0)
    dy = m * 0.04 * size * np.sin(2 * np.pi * 0.5 * t + p1)
    angle = m * 0.12 * np.sin(2 * np.pi * 0.3 * t + p2)
    return (size / 2 + dx, size * 0.52 + dy), float(angle)


def render_frame(ident: Identity, a: np.ndarray, t: float, size: int) -> np.ndarray:
    """Draw one frame.

    Args:
        ident: the clip's identity.
        a: AU intensities at this frame, ``[a]`` in :data:`AU_CODES` order.
        t: time in seconds (head motion).
        size: output frame side in pixels.

    Returns:
        uint8 RGB image ``[size, size, 3]``.
    """
    big = size * _SUPER
    img = Image.new("RGB", (big, big), ident.background)
    draw = ImageDraw.Draw(img)
    for kind, x, y, s, colour in ident.clutter:
        x = (x + 0.02 * t) % 1.0
        box = [x * big, y * big, (x + s) * big, (y + s * (0.6 if kind == 1 else 1.0)) * big]
        (draw.ellipse if kind == 0 else draw.rectangle)(box, fill=colour)
    centre, angle = _pose(ident, t, big)
    cv = _Canvas(draw, centre, ident.face_scale * big, angle)
    jaw = 0.12 * float(a[_IDX[26]])
    cv.poly(_ellipse(0.0, -0.35, 1.12, 1.0), ident.hair)
    cv.poly(np.array([[-0.45, 0.9], [0.45, 0.9], [0.5, 1.9], [-0.5, 1.9]]), _mix(ident.skin, (0, 0, 0), 0.15))
    for side in (-1.0, 1.0):
        cv.poly(_ellipse(side * 1.0, -0.05, 0.13, 0.22, 14), _mix(ident.skin, (0, 0, 0), 0.08))
    top = _ellipse(0.0, 0.0, 1.0, ident.aspect)
    bottom = _ellipse(0.0, jaw, 1.0, ident.aspect)
    cv.poly(np.where(top[:, 1:2] < 0, top, bottom), ident.skin)
    _draw_nose_cheeks(cv, ident, a)
    _draw_eyes(cv, ident, a)
    _draw_brows(cv, ident, a)
    _draw_mouth(cv, ident, a)
    return np.asarray(img.reduce(_SUPER), dtype=np.uint8)


def render_video(
    ident: Identity, curves: np.ndarray, fps: float, size: int, pixel_noise: float, rng: np.random.Generator
) -> np.ndarray:
    """Render all frames of a clip.

    Args:
        ident: the clip's identity.
        curves: AU intensities ``[t, a]``.
        fps: frame rate.
        size: frame side in pixels.
        pixel_noise: sensor noise standard deviation as a share of full scale.
        rng: random generator (sensor noise).

    Returns:
        uint8 RGB frames ``[t, size, size, 3]``.
    """
    frames = np.stack([render_frame(ident, curves[i], i / fps, size) for i in range(len(curves))])
    noisy = frames.astype(np.float32) * ident.gain
    if pixel_noise > 0:
        noisy += rng.standard_normal(size=frames.shape, dtype=np.float32) * np.float32(255.0 * pixel_noise)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def rgb_to_yuv420p(frame: np.ndarray) -> np.ndarray:
    """BT.601 limited-range planar YUV 4:2:0 of an RGB frame ``[h, w, 3]`` (even h, w), as ``[h * 3 // 2, w]``.

    Done here rather than by swscale inside the encoder, whose SIMD paths made the encoded bytes depend on the
    process's memory state (seen as a flaky byte comparison).
    """
    rgb = frame.astype(np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    cb = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    cr = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    h, w = y.shape

    def sub(c: np.ndarray) -> np.ndarray:
        return c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)).reshape(h // 4, w)

    planes = np.concatenate([y, sub(cb), sub(cr)], axis=0)
    return np.clip(np.rint(planes), 0, 255).astype(np.uint8)


def write_mp4(path: str, frames: np.ndarray, fps: int, qp: int = 18) -> None:
    """Encode RGB frames ``[t, h, w, 3]`` (h, w multiples of 4) as H.264 mp4 (yuv420p, one encoder thread).

    Constant quantizer, no lookahead, no macroblock tree, no weighted prediction, fixed B-frame pattern: with
    x264's defaults (CRF + lookahead) the same frames occasionally encoded to different bytes on tiny frames
    (reproduced in a loop), which would break byte-identical output for a seed.
    """
    with av.open(path, mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        stream.options = {
            "preset": "veryfast",
            "tune": "stillimage",
            "x264-params": f"qp={qp}:rc-lookahead=0:mbtree=0:weightp=0:b-adapt=0",
        }
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb_to_yuv420p(frame), format="yuv420p")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
