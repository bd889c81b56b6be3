"""Faces and AUs (affectllm.media.faces, .aus, .pipeline) on real photographs that ship offline.

skimage's astronaut (Eileen Collins, a broad smile with teeth) and matplotlib's grace_hopper.jpg (a near-neutral
face, glasses) are the real faces; skimage's coffee cup and cat are the "no face" images.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.cbook
import numpy as np
import pytest
from skimage import data

from affectllm.media.aus import (
    AU_CODES,
    FEATURE_DIM,
    FEATURE_LANDMARKS,
    FEATURE_LAYOUT,
    PRIOR,
    au_features,
    estimate_aus,
    head_frame,
    measures,
)
from affectllm.media.decode import DecodeConfig
from affectllm.media.faces import Detection, FaceAnalyzer, FaceConfig, similarity_transform, track_largest
from affectllm.media.pipeline import analyze_clip
from tests.media_fixtures import write_video

AU = {code: i for i, code in enumerate(AU_CODES)}


def _hopper() -> np.ndarray:
    import cv2

    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def analyzer() -> FaceAnalyzer:
    with FaceAnalyzer(FaceConfig(crop_size=112)) as fa:
        yield fa


@pytest.fixture(scope="module")
def faces(analyzer: FaceAnalyzer) -> dict[str, object]:
    astro, hopper = data.astronaut(), _hopper()
    return {name: analyzer.track(img[None]) for name, img in [("astronaut", astro), ("hopper", hopper)]}


def test_real_face_found_with_sane_box_mesh_and_crop(analyzer: FaceAnalyzer, faces: dict) -> None:
    track = faces["astronaut"]
    assert track.status == "ok" and track.num_found == 1 and track.has_mesh.all()
    x0, y0, x1, y1 = track.boxes[0]
    assert 150 < x0 < x1 < 300 and 40 < y0 < y1 < 200, "the face is in the upper middle of the photograph"
    assert 60 < x1 - x0 < 160 and track.scores[0] > 0.7
    pts = track.landmarks[0]
    assert pts.shape == (478, 3) and not np.isnan(pts).any()
    inside = (pts[:, 0] > x0 - 20) & (pts[:, 0] < x1 + 20) & (pts[:, 1] > y0 - 40) & (pts[:, 1] < y1 + 20)
    assert inside.mean() > 0.95
    crop = track.crops[0]
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8 and crop.std() > 20
    again = analyzer.detect(crop)
    assert len(again) == 1, "the aligned crop is itself a face"
    centre = (again[0].box[:2] + again[0].box[2:]) / 2 / 112
    assert np.all(np.abs(centre - 0.5) < 0.15)
    left_eye, right_eye = again[0].keypoints[1], again[0].keypoints[0]
    assert abs(left_eye[1] - right_eye[1]) < 4, "eyes level in the aligned crop"


def test_aus_on_real_faces_are_in_range_and_tell_smile_from_neutral(faces: dict) -> None:
    astro = estimate_aus(faces["astronaut"].landmarks).mean()
    hopper = estimate_aus(faces["hopper"].landmarks).mean()
    assert set(astro) == set(AU_CODES)
    for values in (astro, hopper):
        assert all(0.0 <= v <= 1.0 for v in values.values())
    assert astro["AU12"] > 0.5 and astro["AU25"] > 0.5 and astro["AU6"] > 0.2
    assert hopper["AU12"] < 0.3 and hopper["AU25"] < 0.2
    assert astro["AU12"] > hopper["AU12"] + 0.4
    assert max(hopper.values()) < 0.35, "a near-neutral face has no strong AU"
    assert astro["AU4"] < 0.2 and astro["AU15"] < 0.2, "a smile is not a frown"


def test_aus_stable_under_flip_rotation_and_scale(analyzer: FaceAnalyzer, faces: dict) -> None:
    import cv2

    img = data.astronaut()
    rot = cv2.warpAffine(img, cv2.getRotationMatrix2D((256, 256), 15, 1.0), (512, 512), borderMode=cv2.BORDER_REFLECT)
    base = estimate_aus(faces["astronaut"].landmarks).intensities[0]
    for variant in (img[:, ::-1], rot, cv2.resize(img, (256, 256), interpolation=cv2.INTER_AREA)):
        track = analyzer.track(np.ascontiguousarray(variant)[None])
        got = estimate_aus(track.landmarks).intensities[0]
        assert np.abs(got - base).max() < 0.3
        assert abs(got[AU["AU12"]] - base[AU["AU12"]]) < 0.15


@pytest.mark.parametrize("image", ["coffee", "chelsea"])
def test_no_face_state(analyzer: FaceAnalyzer, image: str) -> None:
    track = analyzer.track(getattr(data, image)()[None])
    assert track.status == "no_face" and track.num_found == 0
    assert np.isnan(track.boxes).all() and not track.crops.any()
    result = estimate_aus(track.landmarks)
    assert result.mean() == {} and np.isnan(result.intensities).all()
    feats = au_features(track.landmarks, result)
    assert feats.shape == (1, FEATURE_DIM) and not feats.any()


def test_geometry_moves_the_right_aus(faces: dict) -> None:
    lm = faces["hopper"].landmarks[0].astype(np.float64)
    _, rot, iod = head_frame(lm)
    up, down = -rot[1] * iod, rot[1] * iod

    def moved(points: list[int], step: np.ndarray) -> np.ndarray:
        out = lm.copy()
        out[points] += step
        return out

    neutral = estimate_aus(lm[None], neutral=lm).intensities[0]
    assert np.all(neutral[[AU[c] for c in AU_CODES if c != "AU25"]] < 1e-6), "a face against itself is neutral"
    cases = {
        "AU12": moved([61, 291], 0.15 * up),
        "AU15": moved([61, 291], 0.08 * down),
        "AU1": moved([107, 55, 336, 285], 0.1 * up),
        "AU26": moved([152], 0.3 * down),
        "AU25": moved([14], 0.12 * down),
    }
    for code, face in cases.items():
        got = estimate_aus(face[None], neutral=lm).intensities[0]
        assert got[AU[code]] > 0.6, f"{code} should fire: {dict(zip(AU_CODES, got.round(2), strict=True))}"


def test_auto_neutral_uses_the_clip_but_keeps_a_sustained_smile(faces: dict) -> None:
    astro = faces["astronaut"].landmarks[0]
    clip = np.stack([astro] * 4)
    auto = estimate_aus(clip, neutral="auto")
    assert auto.baseline_source == "clip" and auto.valid.all()
    assert auto.mean()["AU12"] > 0.3, "a clip that smiles throughout still reads as smiling"
    assert np.all(np.abs(auto.baseline - PRIOR) <= 0.35 * 0.3 + 1e-9)
    short = estimate_aus(clip[:2], neutral="auto")
    assert short.baseline_source == "prior"


def test_feature_vector_layout(faces: dict) -> None:
    lm = np.concatenate([faces["astronaut"].landmarks, np.full((1, 478, 3), np.nan, np.float32)])
    feats = au_features(lm)
    assert feats.shape == (2, FEATURE_DIM) and feats.dtype == np.float32
    assert FEATURE_DIM == 26 + 3 * len(FEATURE_LANDMARKS) == list(FEATURE_LAYOUT.values())[-1][1]
    assert feats[0, FEATURE_LAYOUT["present"][0]] == 1.0 and not feats[1].any()
    aus = feats[0, slice(*FEATURE_LAYOUT["aus"])]
    np.testing.assert_allclose(aus, estimate_aus(lm).intensities[0], atol=1e-6)
    assert np.all(np.abs(feats[0, slice(*FEATURE_LAYOUT["pose"])]) < 0.5), "a frontal face, angles near zero"
    assert len(measures(lm[0])) == FEATURE_LAYOUT["measures"][1] - FEATURE_LAYOUT["measures"][0]


def test_similarity_transform_recovers_a_known_transform() -> None:
    src = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
    angle, scale, shift = 0.3, 2.5, np.array([4.0, -1.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    m = similarity_transform(src, src @ rot.T + shift)
    np.testing.assert_allclose(m, np.hstack([rot, shift[:, None]]), atol=1e-9)


def _det(x: float, y: float, side: float) -> Detection:
    return Detection(box=np.array([x, y, x + side, y + side]), score=0.9, keypoints=np.zeros((6, 2)))


def test_tracking_follows_the_largest_face() -> None:
    big, small = _det(100, 100, 80), _det(10, 10, 40)
    frames = [[small, big], [], [_det(12, 10, 40), _det(110, 105, 30)], [_det(300, 300, 50)]]
    chosen = track_largest(frames)
    assert chosen[0] is big and chosen[1] is None
    assert chosen[2].box[0] == 110, "followed by position, although it is now the smaller face"
    assert chosen[3].box[0] == 300, "re-acquired (the largest) when nothing is near"
    assert track_largest([[], []]) == [None, None]


def test_pipeline_on_a_face_video(analyzer: FaceAnalyzer, tmp_path: Path) -> None:
    video = write_video(tmp_path / "face.mp4", seconds=1.0, fps=10, size=(320, 320), image=data.astronaut())
    frames = analyze_clip(video, DecodeConfig(), analyzer)
    d = frames.decoded
    assert d.frames.shape == (8, 320, 320, 3) and frames.track.num_found == 8
    assert d.faces.shape == (8, 112, 112, 3) and d.au_features.shape == (8, FEATURE_DIM)
    assert frames.aus.baseline_source == "clip" and frames.aus.mean()["AU12"] > 0.3
    assert d.present() == ["video", "face", "au"]  # crops and AU vectors are separate modalities
