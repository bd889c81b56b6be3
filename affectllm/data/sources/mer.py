"""The MER family (Lian et al.): MER2023/2024/2025 discrete labels, MER-Caption+, OV-MERD+ and EMER.

All share one release shape: ``video/<name>.mp4`` (some ``.avi``), ``audio/<name>.wav``, a subtitle CSV
(``name, chinese, english``) and label CSVs keyed by ``name``. See ``data_cards/mer*.md``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from affectllm.data.sources._base import (
    AUDIO_EXTS,
    VIDEO_EXTS,
    LayoutError,
    LoadResult,
    MediaIndex,
    col,
    find,
    find_all,
    need_columns,
    read_csv,
    register,
    scale,
    split_labels,
)
from affectllm.types import Clip

MER_EMOTIONS: tuple[str, ...] = ("neutral", "angry", "happy", "sad", "worried", "surprise")  # MERTools index order
SUBTITLES: tuple[str, ...] = (
    "subtitle_chieng.csv",
    "transcription-engchi-polish.csv",
    "transcription-merge.csv",
    "transcription.csv",
    "*subtitle*.csv",
    "*transcription*.csv",
)


def _transcripts(root: Path, language: str) -> dict[str, str]:
    try:
        path = find(root, *SUBTITLES, what="subtitle CSV", dataset="mer")
    except LayoutError:
        return {}
    keys = (language, "sentence", "text") if language != "english" else ("english", "eng", "sentence", "text")
    return {r["name"]: text for _, r in read_csv(path) if "name" in r and (text := col(r, *keys))}


def _split_of(path: Path) -> str:
    match = re.search(r"test\d?|val|dev", path.name.lower())
    return match.group(0) if match else "train"


def _clip(name: str, media: tuple[MediaIndex, MediaIndex], texts: dict[str, str], source: str, **kw: Any) -> Clip:
    videos, audios = media
    return Clip(
        id=f"{source}/{name}",
        video=videos.get(name),
        audio=audios.get(name),
        transcript=texts.get(name),
        source=source,
        **kw,
    )


def _media(root: Path) -> tuple[MediaIndex, MediaIndex]:
    return MediaIndex([root], VIDEO_EXTS), MediaIndex([root], AUDIO_EXTS)


def _add(out: LoadResult, clip: Clip, path: Path, line: int) -> None:
    if clip.video or clip.audio or clip.transcript:
        out.clips.append(clip)
    else:
        out.warn(
            path,
            line,
            "name",
            f"no video, audio or subtitle for {clip.id.split('/', 1)[1]!r}; skipped",
            "check that video/ and audio/ were extracted",
            clip.id,
        )


def _npz_corpus(path: Path) -> list[tuple[str, str, dict[str, Any]]]:
    """(split, name, {"emo", "val"}) from MERTools' processed ``label-6way.npz``."""
    import numpy as np

    data = np.load(path, allow_pickle=True)
    out = []
    for key in data.files:
        split = key.replace("_corpus", "")
        for name, item in data[key].item().items():
            out.append((split, name, dict(item)))
    return out


def _discrete(root: Path, source: str, label_globs: tuple[str, ...], language: str) -> LoadResult:
    """Discrete emotion + valence (MER2023/2024/2025 track 1)."""
    files = [p for g in label_globs for p in find_all(root, g)]
    files = list(dict.fromkeys(p for p in files if "openset" not in p.name and "ov" not in p.stem.split("-")))
    out, media, texts = LoadResult(), _media(root), _transcripts(root, language)
    if not files:
        npz = find(root, *label_globs, "label-6way.npz", "*.npz", what="label CSV or label-6way.npz", dataset=source)
        for split, name, item in _npz_corpus(npz):
            emo = item.get("emo")
            label = MER_EMOTIONS[int(emo)] if isinstance(emo, (int, float)) or str(emo).isdigit() else str(emo)
            clip = _clip(
                name,
                media,
                texts,
                source,
                labels=[label.lower()],
                emotion=label.lower(),
                split=split,
                valence=scale(item.get("val"), -5, 5),
            )
            _add(out, clip, npz, 0)
        return out
    for path in files:
        rows = list(read_csv(path))
        need_columns(path, rows, "name", "discrete")
        for line, row in rows:
            label = (col(row, "discrete") or "").lower()
            clip = _clip(
                row["name"],
                media,
                texts,
                source,
                labels=[label] if label else None,
                emotion=label or None,
                split=_split_of(path),
                valence=scale(col(row, "valence"), -5, 5),
            )
            _add(out, clip, path, line)
    return out


@register("mer2023", card="mer")
def load_mer2023(root: str | Path, language: str = "english") -> LoadResult:
    """MER2023 (train + test1/2/3 where their labels are present): 6 discrete emotions and valence."""
    return _discrete(Path(root), "mer2023", ("*label*.csv",), language)


@register("mer2024", card="mer")
def load_mer2024(root: str | Path, language: str = "english") -> LoadResult:
    """MER2024 track 1 (``label-disdim.csv``): 6 discrete emotions and valence."""
    return _discrete(Path(root), "mer2024", ("label-disdim.csv", "*label*.csv"), language)


@register("mer2025", card="mer")
def load_mer2025(root: str | Path, language: str = "english") -> LoadResult:
    """MER2025 track 1 (``track1_train_disdim.csv``, and ``track1_test_dis.csv`` when released)."""
    return _discrete(Path(root), "mer2025", ("track1_*dis*.csv",), language)


def _open_vocab(
    root: Path, source: str, ov_globs: tuple[str, ...], desc_globs: tuple[str, ...], language: str
) -> LoadResult:
    """Open-vocabulary labels (``name, openset``) and/or descriptions (``name, reason``) merged by name."""
    ov_files = [p for g in ov_globs for p in find_all(root, g)]
    desc_files = [p for g in desc_globs for p in find_all(root, g)]
    if not ov_files and not desc_files:
        find(root, *ov_globs, *desc_globs, what="label CSV", dataset=source)
    labels: dict[str, list[str]] = {}
    reasons: dict[str, str] = {}
    where: dict[str, tuple[Path, int]] = {}
    for path in ov_files:
        for line, row in read_csv(path):
            if "name" in row:
                labels[row["name"]] = split_labels(col(row, "openset", "ov", "labels", "label"))
                where.setdefault(row["name"], (path, line))
    for path in desc_files:
        for line, row in read_csv(path):
            text = col(row, "reason", "description", language, "english", "caption")
            if "name" in row and text:
                reasons[row["name"]] = text
                where.setdefault(row["name"], (path, line))
    out, media, texts = LoadResult(), _media(root), _transcripts(root, language)
    for name, (path, line) in where.items():
        clip = _clip(
            name,
            media,
            texts,
            source,
            labels=labels.get(name) or None,
            caption=reasons.get(name),
            split=_split_of(path),
        )
        _add(out, clip, path, line)
    return out


@register("mer_caption_plus", card="mer_caption_plus")
def load_mer_caption_plus(root: str | Path, language: str = "english") -> LoadResult:
    """MER-Caption+ (MER2025 release): OV labels (track 2 CSV) and descriptions (track 3 CSV)."""
    return _open_vocab(
        Path(root), "mer_caption_plus", ("track2_*mercaptionplus*.csv",), ("track3_*mercaptionplus*.csv",), language
    )


@register("ovmerd_plus", card="ovmerd_plus")
def load_ovmerd_plus(root: str | Path, language: str = "english") -> LoadResult:
    """OV-MERD(+) (MER2025 release): OV labels (track 2 CSV) and descriptions (track 3 CSV)."""
    return _open_vocab(
        Path(root),
        "ovmerd_plus",
        ("track2_*ovmerd*.csv", "*ovmerd*label*.csv"),
        ("track3_*ovmerd*.csv", "*ovmerd*reason*.csv"),
        language,
    )


@register("emer", card="emer")
def load_emer(root: str | Path, language: str = "english") -> LoadResult:
    """EMER: descriptions (``name`` + ``reason``/``description``) and, where given, OV labels (``openset``)."""
    return _open_vocab(
        Path(root),
        "emer",
        ("*emer*openset*.csv", "*emer*ov*.csv"),
        ("*emer*.csv", "*reason*.csv", "*description*.csv"),
        language,
    )
