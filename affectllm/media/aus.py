"""Action-unit (AU) intensities from face-mesh geometry, and the per-frame feature vector of the face encoder.

Method (see docs/media.md for the full account and its limits):

1. **Head frame.** The 478 mesh points (frame pixels, z on the x scale) are expressed in a head-fixed frame:
   origin between the eyes (mean of the four eye corners), x from the subject's right eye to the left eye, y down
   along the forehead-top -> subnasale line (points 10 -> 2, about the same depth) made orthogonal to x,
   z = x × y; lengths in units of the inter-ocular distance (IOD, between eye centres). This removes position,
   scale and head rotation (as far as the mesh's depth estimate allows).
2. **Measures.** Eleven distances in that frame, each the mean of both sides where the face has two
   (:data:`MEASURES`): inner/outer brow height over the eye corners, inner-brow gap, eye opening, lower-lid and
   cheek height, nose-wing height, lip-corner height against the lip midline (so an open jaw is not a
   lip-corner drop), mouth width, inner-lip gap, chin drop.
3. **Baseline.** Each measure is compared with a neutral reference: the population reference (:data:`PRIOR`,
   the measures of the rest face of py-feat's AU -> mesh model, fitted by ``scripts/fit_au_reference.py``), the
   clip's own neutral, or a given neutral face. ``neutral="auto"`` takes the clip's most neutral frame only
   when the clip shows a neutral segment: that frame reads near-neutral against the population reference
   (AU sum at most :data:`NEUTRAL_ENERGY`) and the clip's expression changes from it (AU-sum range at least
   :data:`EXPRESSION_RANGE`); the clip's frame may then move the reference by at most :data:`PERSON_TOLERANCE`
   of each AU's span (the size of between-person differences). A clip expressive from its first frame to its
   last (a posed expression, a short reaction, a still image as a video) has no neutral segment and uses the
   population reference, so it reads as its still frame would; :attr:`AUResult.baseline_source` says which.
4. **Intensity.** Each AU is a signed, span-normalised displacement of one or two measures clipped to [0, 1]
   (:data:`AU_RULES`); AU25 (lips part) is absolute: lips apart are apart whatever the baseline.

The feature vector (:data:`FEATURE_DIM` floats per frame, layout in :data:`FEATURE_LAYOUT`): AU intensities,
measures minus baseline, head pose (yaw, pitch, roll, radians), a face-present flag, and :data:`FEATURE_LANDMARKS`
points in head-frame IOD units (x, y, z interleaved). A frame without a mesh is all zeros with the flag at 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..types import AU_FEATURE_DIM

# Written by scripts/fit_au_reference.py (``--write`` prints this line); see PRIOR below.
PRIOR_FIT: tuple[float, ...] = (0.261, 0.205, 0.445, 0.125, 0.045, 0.228, 0.591, -0.021, 0.823, 0.099, 0.973)
AU_CODES: tuple[str, ...] = ("AU1", "AU2", "AU4", "AU5", "AU6", "AU9", "AU12", "AU15", "AU20", "AU25", "AU26")
AU_NAMES: dict[str, str] = {
    "AU1": "inner brow raiser",
    "AU2": "outer brow raiser",
    "AU4": "brow lowerer",
    "AU5": "upper lid raiser",
    "AU6": "cheek raiser",
    "AU9": "nose wrinkler",
    "AU12": "lip corner puller",
    "AU15": "lip corner depressor",
    "AU20": "lip stretcher",
    "AU25": "lips part",
    "AU26": "jaw drop",
}
MEASURES: tuple[str, ...] = (
    "brow_inner",
    "brow_outer",
    "brow_gap",
    "eye_open",
    "lower_lid",
    "cheek",
    "nose_wing",
    "lip_corner",
    "mouth_width",
    "lip_gap",
    "jaw",
)

# Mesh indices as (subject's right, subject's left); a tuple of indices is averaged.
_EYE_OUTER, _EYE_INNER = (33, 263), (133, 362)
_UPPER_LID, _LOWER_LID = ((158, 159, 160), (385, 386, 387)), ((144, 145, 153), (373, 374, 380))
_BROW_INNER, _BROW_OUTER = ((107, 55), (336, 285)), ((70, 46), (300, 276))
_CHEEK, _NOSE_WING, _MOUTH_CORNER = (117, 346), ((98, 129), (327, 358)), (61, 291)
_FOREHEAD, _SUBNASALE, _LIP_UPPER_INNER, _LIP_LOWER_INNER, _CHIN = 10, 2, 13, 14, 152


def _pt(lm: np.ndarray, ix: int | tuple[int, ...]) -> np.ndarray:
    """Mean of one or more mesh points, ``[..., 3]``."""
    return lm[..., list(ix) if isinstance(ix, tuple) else [ix], :].mean(-2)


def head_frame(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Head-fixed frame of one face.

    Args:
        landmarks: ``[478, 3]`` mesh points (pixels, z on the x scale).

    Returns:
        ``(origin [3], rotation [3, 3] with the head's x, y, z axes as rows, iod)``.
    """
    right = (_pt(landmarks, _EYE_OUTER[0]) + _pt(landmarks, _EYE_INNER[0])) / 2
    left = (_pt(landmarks, _EYE_OUTER[1]) + _pt(landmarks, _EYE_INNER[1])) / 2
    origin = (right + left) / 2
    x = left - right
    iod = float(np.linalg.norm(x))
    x = x / max(iod, 1e-9)
    down = _pt(landmarks, _SUBNASALE) - _pt(landmarks, _FOREHEAD)
    y = down - (down @ x) * x
    y = y / max(float(np.linalg.norm(y)), 1e-9)
    return origin, np.stack([x, y, np.cross(x, y)]), iod


def normalize_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """Mesh points in the head frame, in IOD units: ``[478, 3]`` -> ``[478, 3]`` (y down, z into the face)."""
    origin, rot, iod = head_frame(landmarks)
    return (landmarks - origin) @ rot.T / max(iod, 1e-9)


def head_pose(landmarks: np.ndarray) -> np.ndarray:
    """Approximate (yaw, pitch, roll) in radians from the head frame's axes, ``[478, 3]`` -> ``[3]``."""
    _, rot, _ = head_frame(landmarks)
    x_axis, y_axis = rot[0], rot[1]
    roll = np.arctan2(x_axis[1], x_axis[0])
    yaw = np.arcsin(np.clip(x_axis[2], -1, 1))
    pitch = np.arcsin(np.clip(y_axis[2], -1, 1))
    return np.array([yaw, pitch, roll], dtype=np.float64)


def measures(landmarks: np.ndarray) -> np.ndarray:
    """The :data:`MEASURES` of one face in IOD units, ``[478, 3]`` -> ``[11]`` (y grows downwards)."""
    q = normalize_landmarks(landmarks)

    def y(ix: int | tuple[int, ...]) -> float:
        return float(_pt(q, ix)[1])

    def both(fn: object) -> float:
        return (fn(0) + fn(1)) / 2  # type: ignore[operator]

    corners_y = both(lambda s: (y(_EYE_OUTER[s]) + y(_EYE_INNER[s])) / 2)
    return np.array(
        [
            both(lambda s: y(_EYE_INNER[s]) - y(_BROW_INNER[s])),
            both(lambda s: y(_EYE_OUTER[s]) - y(_BROW_OUTER[s])),
            float(_pt(q, _BROW_INNER[1])[0] - _pt(q, _BROW_INNER[0])[0]),
            both(lambda s: y(_LOWER_LID[s]) - y(_UPPER_LID[s])),
            both(lambda s: y(_LOWER_LID[s])) - corners_y,
            both(lambda s: y(_CHEEK[s])) - corners_y,
            both(lambda s: y(_NOSE_WING[s])),
            both(lambda s: y(_MOUTH_CORNER[s])) - (y(_LIP_UPPER_INNER) + y(_LIP_LOWER_INNER)) / 2,
            float(_pt(q, _MOUTH_CORNER[1])[0] - _pt(q, _MOUTH_CORNER[0])[0]),
            y(_LIP_LOWER_INNER) - y(_LIP_UPPER_INNER),
            y(_CHIN) - y(_SUBNASALE),
        ]
    )


# Population reference: the MEASURES (IOD units) of the rest face (all AUs 0, frontal) of py-feat 2.1.5's AU -> mesh
# model au_to_mesh_pls_v4, printed by scripts/fit_au_reference.py (method, numbers and limits in docs/media.md).
PRIOR = np.array(PRIOR_FIT)
# Displacement of each measure (IOD units) that reads as full intensity; also the unit of PERSON_TOLERANCE.
MEASURE_SPAN = np.array([0.12, 0.12, 0.08, 0.07, 0.03, 0.07, 0.08, 0.15, 0.20, 0.08, 0.30])
# How far (in spans) a clip's most neutral frame may move the prior: about the between-person spread.
PERSON_TOLERANCE = 0.35
# A clip has a neutral segment when its calmest frame has an AU sum (AU25 left out: lips part in speech) of at most
# NEUTRAL_ENERGY against the population reference and its most expressive frame at least EXPRESSION_RANGE more.
# Both in summed intensity units; the near-neutral photograph (grace_hopper.jpg) sums to about 0.1.
NEUTRAL_ENERGY = 0.6
EXPRESSION_RANGE = 0.4
# A smile lifts the nose wings too (about 0.4 of the lip-corner lift on the photographs we checked); AU9 counts
# only the part of the nose-wing lift a smile does not explain.
SMILE_NOSE_SHARE = 0.4
# Lips count as parted (AU25) from this gap (IOD units); full intensity at one MEASURE_SPAN beyond it.
LIP_GAP_CLOSED = 0.02
AU_RULES: dict[str, str] = {
    "AU1": "inner-brow height up",
    "AU2": "outer-brow height up",
    "AU4": "mean of inner-brow height down and inner-brow gap narrowing",
    "AU5": "eye opening up",
    "AU6": "cheek height up (towards the eye)",
    "AU9": "nose-wing lift beyond what the lip-corner lift explains",
    "AU12": "0.7 lip-corner lift + 0.3 mouth widening",
    "AU15": "lip-corner drop (span 0.08)",
    "AU20": "mouth widening times (1 - lip-corner lift)",
    "AU25": "inner-lip gap over 0.02 IOD (absolute)",
    "AU26": "chin drop under the nose",
}
_M = {name: i for i, name in enumerate(MEASURES)}


def au_intensities(meas: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """AU intensities in [0, 1] from measures and a neutral baseline (rules in :data:`AU_RULES`).

    Args:
        meas: ``[t, 11]`` measures (:data:`MEASURES` order).
        baseline: ``[11]`` neutral measures.

    Returns:
        ``[t, 11]`` float32 intensities in :data:`AU_CODES` order.
    """
    delta = (meas - baseline) / MEASURE_SPAN

    def up(name: str) -> np.ndarray:
        return np.clip(delta[:, _M[name]], 0.0, 1.0)

    def down(name: str, span_scale: float = 1.0) -> np.ndarray:
        return np.clip(-delta[:, _M[name]] / span_scale, 0.0, 1.0)

    lift, widen = down("lip_corner"), up("mouth_width")
    nose = np.clip(
        (
            -delta[:, _M["nose_wing"]] * MEASURE_SPAN[_M["nose_wing"]]
            - SMILE_NOSE_SHARE * lift * MEASURE_SPAN[_M["lip_corner"]]
        )
        / MEASURE_SPAN[_M["nose_wing"]],
        0,
        1,
    )
    lips = np.clip((meas[:, _M["lip_gap"]] - LIP_GAP_CLOSED) / MEASURE_SPAN[_M["lip_gap"]], 0.0, 1.0)
    out = np.stack(
        [
            up("brow_inner"),
            up("brow_outer"),
            (down("brow_inner") + down("brow_gap")) / 2,
            up("eye_open"),
            down("cheek"),
            nose,
            0.7 * lift + 0.3 * widen,
            np.clip(delta[:, _M["lip_corner"]] * 0.15 / 0.08, 0, 1),
            widen * (1.0 - lift),
            lips,
            up("jaw"),
        ],
        axis=1,
    )
    return out.astype(np.float32)


@dataclass
class AUResult:
    """AU estimates of one clip.

    Attributes:
        intensities: ``[t, 11]`` float32 in [0, 1] (:data:`AU_CODES` order), NaN where the frame has no mesh.
        measures: ``[t, 11]`` raw measures (NaN where no mesh).
        baseline: ``[11]`` the neutral measures used.
        baseline_source: ``"prior"`` (the population reference), ``"clip"`` (the clip's most neutral frame,
            clamped) or ``"given"``.
        valid: ``[t]`` bool, the frame has a mesh.
        baseline_note: why that reference, e.g. ``"no neutral segment (AU-sum range 0.02 < 0.4)"``.
    """

    intensities: np.ndarray
    measures: np.ndarray
    baseline: np.ndarray
    baseline_source: str
    valid: np.ndarray
    baseline_note: str = ""

    def mean(self) -> dict[str, float]:
        """AU code -> mean intensity over the frames with a face (empty when none has one)."""
        if not self.valid.any():
            return {}
        avg = self.intensities[self.valid].mean(0)
        return {code: round(float(v), 4) for code, v in zip(AU_CODES, avg, strict=True)}


def _energy(meas: np.ndarray) -> np.ndarray:
    """``[t, 11]`` measures -> ``[t]`` AU sum against the population reference, lips-part left out."""
    inten = au_intensities(meas, PRIOR)
    return inten.sum(1) - inten[:, AU_CODES.index("AU25")]


def _baseline(meas: np.ndarray, neutral: np.ndarray | str | None, min_frames: int) -> tuple[np.ndarray, str, str]:
    """``(baseline [11], source, note)`` for a clip's valid-frame measures ``[t, 11]``."""
    if isinstance(neutral, np.ndarray):
        return measures(neutral), "given", "the given neutral face"
    if neutral != "auto":
        return PRIOR.copy(), "prior", "asked for the population reference"
    if len(meas) < min_frames:
        return PRIOR.copy(), "prior", f"{len(meas)} frame(s) with a face < {min_frames}"
    energy = _energy(meas)
    calm, spread = float(energy.min()), float(energy.max() - energy.min())
    if calm > NEUTRAL_ENERGY:
        return PRIOR.copy(), "prior", f"no neutral frame (calmest AU sum {calm:.2f} > {NEUTRAL_ENERGY})"
    if spread < EXPRESSION_RANGE:
        return PRIOR.copy(), "prior", f"no neutral segment (AU-sum range {spread:.2f} < {EXPRESSION_RANGE})"
    tol = PERSON_TOLERANCE * MEASURE_SPAN
    base = PRIOR + np.clip(meas[int(np.argmin(energy))] - PRIOR, -tol, tol)
    base[_M["lip_gap"]] = PRIOR[_M["lip_gap"]]
    return base, "clip", f"the clip's most neutral frame (AU sum {calm:.2f}, range {spread:.2f})"


def estimate_aus(
    landmarks: np.ndarray, neutral: np.ndarray | str | None = "auto", min_frames_for_neutral: int = 3
) -> AUResult:
    """Estimate AU intensities for every frame of a clip.

    Args:
        landmarks: ``[t, 478, 3]`` mesh points per frame (NaN rows where no face), e.g. ``FaceTrack.landmarks``.
        neutral: ``"auto"`` (the clip's most neutral frame, clamped to :data:`PERSON_TOLERANCE`, when at least
            ``min_frames_for_neutral`` frames have a face and the clip shows a neutral segment; else the
            population reference), a ``[478, 3]`` neutral face, or None (the population reference).
        min_frames_for_neutral: frames with a face needed before ``"auto"`` trusts the clip.

    Returns:
        An :class:`AUResult`.
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    valid = ~np.isnan(landmarks).any(axis=(1, 2))
    meas = np.full((len(landmarks), len(MEASURES)), np.nan)
    for i in np.flatnonzero(valid):
        meas[i] = measures(landmarks[i])
    baseline, source, note = _baseline(meas[valid], neutral, min_frames_for_neutral)
    inten = np.full((len(landmarks), len(AU_CODES)), np.nan, dtype=np.float32)
    if valid.any():
        inten[valid] = au_intensities(meas[valid], baseline)
    return AUResult(inten, meas, baseline, source, valid, note)


# fmt: off
_EYES = (7, 33, 133, 144, 145, 153, 154, 155, 157, 158, 159, 160, 161, 163, 173, 246,
         249, 263, 362, 373, 374, 380, 381, 382, 384, 385, 386, 387, 388, 390, 398, 466)
_BROWS = (46, 52, 53, 55, 63, 65, 66, 70, 105, 107, 276, 282, 283, 285, 293, 295, 296, 300, 334, 336)
_LIPS = (0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181, 185, 191,
         267, 269, 270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402, 405, 409, 415)
_OTHER = (468, 473, 1, 2, 4, 6, 98, 129, 168, 327, 358, 10, 50, 117, 152, 280, 346)
# fmt: on
FEATURE_LANDMARKS: tuple[int, ...] = _EYES + _BROWS + _LIPS + _OTHER
FEATURE_LAYOUT: dict[str, tuple[int, int]] = {}
_start = 0
for _name, _width in (
    ("aus", len(AU_CODES)),
    ("measures", len(MEASURES)),
    ("pose", 3),
    ("present", 1),
    ("landmarks", 3 * len(FEATURE_LANDMARKS)),
):
    FEATURE_LAYOUT[_name] = (_start, _start + _width)
    _start += _width
FEATURE_DIM: int = _start
assert FEATURE_DIM == AU_FEATURE_DIM, f"the AU vector is {FEATURE_DIM} wide, types.AU_FEATURE_DIM {AU_FEATURE_DIM}"


def au_features(landmarks: np.ndarray, result: AUResult | None = None) -> np.ndarray:
    """Per-frame feature vectors for the face/AU encoder.

    Layout (:data:`FEATURE_LAYOUT`, half-open column ranges): ``aus`` [0, 11) intensities; ``measures`` [11, 22)
    measure minus baseline in IOD units; ``pose`` [22, 25) yaw, pitch, roll in radians; ``present`` [25] 1.0 when
    the frame has a mesh; ``landmarks`` [26, FEATURE_DIM) the :data:`FEATURE_LANDMARKS` points in the head frame
    (IOD units), x, y, z per point. Frames without a mesh are all zeros (``present`` = 0).

    Args:
        landmarks: ``[t, 478, 3]`` mesh points (NaN rows where no face).
        result: the clip's :class:`AUResult` (computed with ``neutral="auto"`` when None).

    Returns:
        float32 ``[t, FEATURE_DIM]``.
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    result = result if result is not None else estimate_aus(landmarks)
    out = np.zeros((len(landmarks), FEATURE_DIM), dtype=np.float32)
    lay = FEATURE_LAYOUT
    for i in np.flatnonzero(result.valid):
        out[i, slice(*lay["aus"])] = result.intensities[i]
        out[i, slice(*lay["measures"])] = result.measures[i] - result.baseline
        out[i, slice(*lay["pose"])] = head_pose(landmarks[i])
        out[i, lay["present"][0]] = 1.0
        out[i, slice(*lay["landmarks"])] = normalize_landmarks(landmarks[i])[list(FEATURE_LANDMARKS)].reshape(-1)
    return out
