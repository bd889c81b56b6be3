"""The MER family (Lian et al.): MER2023/2024/2025 discrete labels, MER-Caption+, OV-MERD+ and EMER.

All share one release shape: ``video/<name>.mp4`` (some ``.avi``), ``audio/<name>.wav``, a subtitle CSV and label
CSVs keyed by ``name``. File names and columns follow MERTools and AffectGPT (``../shared/reviews/datasets.md``);
see ``data_cards/mer*.md`` for what is verified and what is not.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from affectllm.data.sources._base import (
    AUDIO_EXTS,
    VIDEO_EXTS,
    LoadResult,
    MediaIndex,
    _clip,
    col,
    find,
    find_all,
    layout_error,
    need_columns,
    read_csv,
    register,
    scale,
    split_labels,
)
from affectllm.types import Clip

MER_EMOTIONS: tuple[str, ...] = ("neutral", "angry", "happy", "sad", "worried", "surprise")  # MERTools index order
# MERTools stores "no valence" as -10 (test3 of MER2023, every processed test corpus).
NO_VALENCE = -10.0
_GENERIC = {"english": ("english", "eng"), "chinese": ("chinese", "chi", "sentence", "text")}
# Subtitle files in the order they are tried, with the columns that hold each language. MER2023's
# ``transcription.csv`` ``sentence`` is Chinese ASR; AffectGPT's ``subtitle_eng.csv`` ``sentence`` is English.
SUBTITLES: tuple[tuple[str, dict[str, tuple[str, ...]]], ...] = (
    ("subtitle_chieng.csv", {"english": ("english",), "chinese": ("chinese",)}),
    ("subtitle_eng.csv", {"english": ("sentence", "english"), "chinese": ()}),
    ("transcription-engchi-polish.csv", {"english": ("english",), "chinese": ("chinese",)}),
    ("transcription_merge.csv", _GENERIC),
    ("transcription-merge.csv", _GENERIC),
    ("transcription.csv", {"english": ("english",), "chinese": ("chinese", "sentence")}),
    ("*subtitle*.csv", _GENERIC),
    ("*transcription*.csv", _GENERIC),
)


def _transcripts(root: Path, language: str, out: LoadResult) -> dict[str, str]:
    """name -> subtitle in ``language``; a file without that language's column is a warning, never a fallback."""
    if language not in _GENERIC:
        raise ValueError(f"language={language!r}: use 'english' or 'chinese'")
    for pattern, columns in SUBTITLES:
        paths = find_all(root, pattern)
        if not paths:
            continue
        rows = list(read_csv(paths[0]))
        keys = columns[language]
        if rows and not any(k in rows[0][1] for k in keys):
            found = ", ".join(rows[0][1])
            other = "chinese" if language == "english" else "english"
            out.warn(
                paths[0],
                1,
                language,
                f"no {language} subtitle column (found: {found}); transcripts left empty",
                f"pass language={other} if that is the language this file holds",
            )
            return {}
        return {r["name"]: text for _, r in rows if "name" in r and (text := col(r, *keys))}
    return {}


def _split_of(path: Path) -> str:
    match = re.search(r"test\d?|val|dev", path.name.lower())
    return match.group(0) if match else "train"


def _media(root: Path) -> tuple[MediaIndex, MediaIndex]:
    return MediaIndex([root], VIDEO_EXTS), MediaIndex([root], AUDIO_EXTS)


def _mer_clip(name: str, media: tuple[MediaIndex, MediaIndex], texts: dict[str, str], source: str, **kw: Any) -> Clip:
    videos, audios = media
    kw.setdefault("transcript", texts.get(name))
    return _clip(source, name, video=videos.get(name), audio=audios.get(name), **kw)


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


def _valence(value: Any) -> float | None:
    """Valence in [-5, 5] as [-1, 1]; MERTools' ``-10`` sentinel is "no valence" (None)."""
    try:
        if float(value) == NO_VALENCE:
            return None
    except (TypeError, ValueError):
        return None
    return scale(value, -5, 5)


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


def _npz_label(emo: Any) -> str:
    return MER_EMOTIONS[int(emo)] if isinstance(emo, (int, float)) or str(emo).isdigit() else str(emo).lower()


def _placeholder_splits(items: list[tuple[str, str, dict[str, Any]]]) -> set[str]:
    """Test corpora whose every label is ``neutral``: the placeholders MERTools' preprocessing writes."""
    by_split: dict[str, set[str]] = {}
    for split, _, item in items:
        by_split.setdefault(split, set()).add(_npz_label(item.get("emo")))
    return {s for s, labels in by_split.items() if s != "train" and labels == {"neutral"}}


def _from_npz(root: Path, source: str, label_globs: tuple[str, ...], out: LoadResult, texts: dict[str, str]) -> None:
    npz = find(
        root, *label_globs, "label-6way.npz", "*.npz", what="label CSV or label-6way.npz", dataset=source, card="mer"
    )
    items = _npz_corpus(npz)
    placeholders = _placeholder_splits(items)
    for split in sorted(placeholders):
        out.warn(
            npz,
            0,
            "emo",
            f"{split}_corpus: every label is 'neutral', MERTools' placeholder for unreleased "
            "test labels; its clips are kept without labels",
            "use the organisers' label CSV for this split",
        )
    media = _media(root)
    for split, name, item in items:
        label = None if split in placeholders else _npz_label(item.get("emo"))
        clip = _mer_clip(
            name,
            media,
            texts,
            source,
            labels=[label] if label else None,
            split=split,
            valence=_valence(item.get("val")),
        )
        _add(out, clip, npz, 0)


def _discrete(root: Path, source: str, label_globs: tuple[str, ...], language: str) -> LoadResult:
    """Discrete emotion + valence (MER2023/2024/2025 track 1)."""
    files = [p for g in label_globs for p in find_all(root, g)]
    files = list(dict.fromkeys(p for p in files if "openset" not in p.name and "ov" not in p.stem.split("-")))
    out = LoadResult()
    texts = _transcripts(root, language, out)
    if not files:
        _from_npz(root, source, label_globs, out, texts)
        return out
    media = _media(root)
    for path in files:
        rows = list(read_csv(path))
        need_columns(path, rows, "name", "discrete")
        for line, row in rows:
            label = (col(row, "discrete") or "").lower()
            clip = _mer_clip(
                row["name"],
                media,
                texts,
                source,
                labels=[label] if label else None,
                split=_split_of(path),
                valence=_valence(col(row, "valence")),
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


def _merge_rows(
    out: LoadResult,
    root: Path,
    source: str,
    rows: dict[str, dict[str, Any]],
    where: dict[str, tuple[Path, int]],
    language: str,
) -> LoadResult:
    """One clip per name from the merged label/description/subtitle fields."""
    media, texts = _media(root), _transcripts(root, language, out)
    for name, (path, line) in where.items():
        fields = rows[name]
        clip = _mer_clip(
            name,
            media,
            texts,
            source,
            labels=fields.get("labels") or None,
            caption=fields.get("caption"),
            transcript=texts.get(name) or fields.get("transcript"),
            split=_split_of(path),
        )
        _add(out, clip, path, line)
    return out


def _open_vocab(
    root: Path, source: str, ov_globs: tuple[str, ...], desc_globs: tuple[str, ...], language: str
) -> LoadResult:
    """Open-vocabulary labels (``name, openset``) and/or descriptions (``name, reason``) merged by name."""
    ov_files = list(dict.fromkeys(p for g in ov_globs for p in find_all(root, g)))
    desc_files = list(dict.fromkeys(p for g in desc_globs for p in find_all(root, g)))
    if not ov_files and not desc_files:
        raise layout_error(source, root, "label CSV", (*ov_globs, *desc_globs))
    rows: dict[str, dict[str, Any]] = {}
    where: dict[str, tuple[Path, int]] = {}
    for path in ov_files:
        for line, row in read_csv(path):
            if "name" in row:
                rows.setdefault(row["name"], {})["labels"] = split_labels(col(row, "openset", "ov", "labels", "label"))
                where.setdefault(row["name"], (path, line))
    for path in desc_files:
        for line, row in read_csv(path):
            text = col(row, "reason", "description", language, "english", "caption")
            if "name" in row and text:
                rows.setdefault(row["name"], {})["caption"] = text
                where.setdefault(row["name"], (path, line))
    return _merge_rows(LoadResult(), root, source, rows, where, language)


@register("mer_caption_plus", card="mer_caption_plus")
def load_mer_caption_plus(root: str | Path, language: str = "english") -> LoadResult:
    """MER-Caption+ (MER2025 release): OV labels (track 2 CSV) and descriptions (track 3 CSV)."""
    return _open_vocab(
        Path(root), "mer_caption_plus", ("track2_*mercaptionplus*.csv",), ("track3_*mercaptionplus*.csv",), language
    )


@register("ovmerd_plus", card="ovmerd_plus")
def load_ovmerd_plus(root: str | Path, language: str = "english") -> LoadResult:
    """OV-MERD(+): the MER2025 release (track 2/3 CSVs) or AffectGPT's ``ovmerdplus-process/ovlabel.csv``."""
    return _open_vocab(
        Path(root), "ovmerd_plus", ("track2_*ovmerd*.csv", "ovlabel.csv"), ("track3_*ovmerd*.csv",), language
    )


EMER_V1 = {"english": "gt-eng.csv", "chinese": "gt-chi.csv"}
EMER_V2 = "final-EMER-reason.csv"


def _emer_v1(path: Path, rows: dict[str, dict[str, Any]], where: dict[str, tuple[Path, int]]) -> None:
    """AffectGPT ``EMER/dataset-v1/gt-*.csv``: ``names, emotions, subtitles, reasons`` (plural columns)."""
    table = list(read_csv(path))
    need_columns(path, table, "names", "reasons")
    for line, row in table:
        rows[row["names"]] = {
            "labels": split_labels(col(row, "emotions")),
            "caption": col(row, "reasons"),
            "transcript": col(row, "subtitles"),
        }
        where[row["names"]] = (path, line)


def _emer_v2(path: Path, language: str, rows: dict[str, dict[str, Any]], where: dict[str, tuple[Path, int]]) -> None:
    """AffectGPT ``EMER/dataset-v2/final-EMER-reason.csv``: ``name, chinese, english`` (the explanation)."""
    table = list(read_csv(path))
    need_columns(path, table, "name", language)
    for line, row in table:
        rows[row["name"]] = {"caption": col(row, language)}
        where[row["name"]] = (path, line)


@register("emer", card="emer")
def load_emer(root: str | Path, language: str = "english", version: str = "auto") -> LoadResult:
    """EMER as AffectGPT releases it: v1 ``gt-eng.csv``/``gt-chi.csv`` or v2 ``final-EMER-reason.csv``.

    Args:
        root: the folder with the CSVs (``dataset-v1/``, ``dataset-v2/`` or their parent) and the MER2023 media.
        language: ``english`` or ``chinese`` (v1: which ``gt-*.csv``; v2: which column).
        version: ``v1``, ``v2`` or ``auto`` (v1 where its file is present, else v2).
    """
    root = Path(root)
    if version not in ("auto", "v1", "v2") or language not in EMER_V1:
        raise ValueError(f"emer: version={version!r} language={language!r}; use v1/v2/auto and english/chinese")
    v1 = find_all(root, EMER_V1[language]) or find_all(root, f"dataset-v1/{EMER_V1[language]}")
    v2 = find_all(root, EMER_V2) or find_all(root, f"dataset-v2/{EMER_V2}")
    rows: dict[str, dict[str, Any]] = {}
    where: dict[str, tuple[Path, int]] = {}
    if v1 and version in ("auto", "v1"):
        _emer_v1(v1[0], rows, where)
    elif v2 and version in ("auto", "v2"):
        _emer_v2(v2[0], language, rows, where)
    else:
        wanted = {"v1": [EMER_V1[language]], "v2": [EMER_V2]}.get(version, [EMER_V1[language], EMER_V2])
        raise layout_error("emer", root, f"EMER {version} CSV", wanted)
    return _merge_rows(LoadResult(), root, "emer", rows, where, language)
