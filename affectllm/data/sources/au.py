"""Frame-level FACS corpora, DISFA and BP4D, cut into fixed windows with the AUs active in each.

Both label every frame; a manifest row is a clip, so a subject's video is cut into ``window`` seconds and an AU
counts as active in a window when it is on in at least ``min_share`` of the window's labelled frames (DISFA: on =
intensity >= ``threshold``, 2 by the usual protocol; BP4D: occurrence 1, 9 = not coded). The whole video stays in
``video``; each row's ``extra`` carries ``start``/``end`` seconds and per-AU mean intensity (0..1) or share.
"""

from __future__ import annotations

import re
from pathlib import Path

from affectllm.data.sources._base import VIDEO_EXTS, LoadResult, _clip, find, find_all, read_text, register

DISFA_FPS = 20.0
BP4D_FPS = 25.0
# The release's camera folders (CLM-framework's DISFA scripts): the right one has no "s".
DISFA_CAMERAS: dict[str, str] = {"Left": "Videos_LeftCamera", "Right": "Video_RightCamera"}
BP4D_TASKS: dict[str, str] = {
    "T1": "happiness",
    "T2": "sadness",
    "T3": "surprise",
    "T4": "embarrassment",
    "T5": "fear",
    "T6": "pain",
    "T7": "anger",
    "T8": "disgust",
}

_DISFA_FILE = re.compile(r"_au(\d+)\.txt$", re.IGNORECASE)
Frames = dict[int, dict[str, float]]  # frame number -> {"AU6": value}; a missing AU = not coded


def au_windows(
    frames: Frames, fps: float, window: float, threshold: float, min_share: float, max_value: float
) -> list[tuple[float, float, list[str], dict[str, float]]]:
    """Cut frame-level AU values into windows: ``(start_s, end_s, active_aus, mean_value_0_1)`` each.

    >>> au_windows({1: {"AU6": 3}, 2: {"AU6": 0}, 3: {"AU6": 4}}, fps=1, window=2, threshold=2, min_share=0.5,
    ...            max_value=5)
    [(0.0, 2.0, ['AU6'], {'AU6': 0.3}), (2.0, 3.0, ['AU6'], {'AU6': 0.8})]
    """
    size = max(1, round(window * fps))
    numbers = sorted(frames)
    out = []
    for i in range(0, len(numbers), size):
        chunk = numbers[i : i + size]
        codes = sorted({c for n in chunk for c in frames[n]}, key=lambda c: int(c[2:]))
        active, mean = [], {}
        for code in codes:
            values = [frames[n][code] for n in chunk if code in frames[n]]
            if sum(v >= threshold for v in values) >= min_share * len(values):
                active.append(code)
            mean[code] = round(sum(values) / len(values) / max_value, 4)
        out.append(((chunk[0] - 1) / fps, chunk[-1] / fps, active, mean))
    return out


def _disfa_frames(folder: Path) -> Frames:
    frames: Frames = {}
    for path in sorted(folder.glob("*_au*.txt")):
        match = _DISFA_FILE.search(path.name)
        if match is None:
            continue
        code = f"AU{int(match.group(1))}"
        for line in read_text(path).splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
                frames.setdefault(int(parts[0]), {})[code] = float(parts[1])
    return frames


def _subject_split(subject: str, test_subjects: tuple[str, ...] | None) -> str | None:
    return None if not test_subjects else ("test" if subject in test_subjects else "train")


@register("disfa", card="disfa_bp4d")
def load_disfa(
    root: str | Path,
    window: float = 2.0,
    threshold: float = 2.0,
    min_share: float = 0.5,
    camera: str = "Left",
    test_subjects: tuple[str, ...] | None = None,
) -> LoadResult:
    """DISFA: ``ActionUnit_Labels/SN001/SN001_au1.txt`` (``frame,intensity`` 0-5) + the camera's videos,
    ``Videos_LeftCamera/LeftVideoSN001_comp.avi`` or ``Video_RightCamera/RightVideoSN001_comp.avi``."""
    root = Path(root)
    camera = camera.capitalize()
    if camera not in DISFA_CAMERAS:
        raise ValueError(f"disfa: camera={camera!r}; use Left or Right")
    folder_name = DISFA_CAMERAS[camera]
    labels = find(root, "ActionUnit_Labels", what="ActionUnit_Labels folder", dataset="disfa_bp4d")
    out = LoadResult()
    for folder in sorted(p for p in labels.iterdir() if p.is_dir()):
        subject = folder.name
        frames = _disfa_frames(folder)
        if not frames:
            out.warn(folder, 0, "aus", f"{subject}: no SN*_au*.txt files with 'frame,intensity' lines; skipped")
            continue
        videos = find_all(root, f"{folder_name}/{camera}Video{subject}*")
        video = str(videos[0]) if videos else str(root / folder_name / f"{camera}Video{subject}_comp.avi")
        for k, (start, end, active, mean) in enumerate(au_windows(frames, DISFA_FPS, window, threshold, min_share, 5)):
            extra = {"subject": subject, "start": start, "end": end, "au_intensity": mean}
            out.clips.append(_clip("disfa", f"{subject}/{k:04d}", video=video, aus=active,
                                   split=_subject_split(subject, test_subjects), extra=extra))
    return out


def _bp4d_frames(path: Path) -> Frames:
    lines = [ln.split(",") for ln in read_text(path).splitlines() if ln.strip()]
    header = [c.strip() for c in lines[0]]
    codes = {i: f"AU{int(float(c))}" for i, c in enumerate(header) if i > 0 and c.replace(".", "").isdigit()}
    frames: Frames = {}
    for cells in lines[1:]:
        if not cells[0].strip().isdigit():
            continue
        values = {codes[i]: float(v) for i, v in enumerate(cells) if i in codes and v.strip() in ("0", "1")}
        frames[int(cells[0])] = values
    return frames


def _bp4d_video(root: Path, subject: str, task: str) -> str:
    folder = find_all(root, f"Sequences/{subject}/{task}") or [root / "Sequences" / subject / task]
    for ext in VIDEO_EXTS:
        if folder[0].with_suffix(ext).exists():
            return str(folder[0].with_suffix(ext))
    return str(folder[0])


@register("bp4d", card="disfa_bp4d")
def load_bp4d(
    root: str | Path, window: float = 2.0, min_share: float = 0.5, test_subjects: tuple[str, ...] | None = None
) -> LoadResult:
    """BP4D-Spontaneous: ``AUCoding/AU_OCC/F001_T1.csv`` (frame x AU occurrence, 9 = not coded) + ``Sequences``."""
    root = Path(root)
    files = find_all(root, "AUCoding/AU_OCC/*.csv") or find_all(root, "AU_OCC/*.csv")
    if not files:
        find(root, "AUCoding/AU_OCC", what="AUCoding/AU_OCC folder", dataset="disfa_bp4d")
    out = LoadResult()
    for path in files:
        match = re.match(r"^([FM]\d{3})_(T\d)$", path.stem)
        if match is None:
            out.warn(path, 0, "file", "name is not <subject>_<task>.csv; skipped")
            continue
        subject, task = match.groups()
        video = _bp4d_video(root, subject, task)
        for k, (start, end, active, share) in enumerate(
            au_windows(_bp4d_frames(path), BP4D_FPS, window, 1.0, min_share, 1)
        ):
            extra = {"subject": subject, "task": task, "task_emotion": BP4D_TASKS.get(task), "start": start,
                     "end": end, "au_share": share}
            out.clips.append(_clip("bp4d", f"{subject}_{task}/{k:04d}", video=video, aus=active,
                                   split=_subject_split(subject, test_subjects), extra=extra))
    return out
