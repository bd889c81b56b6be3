"""In-the-wild facial expression sets: MAFW, DFEW, FERV39K, and the FEA-20K image annotations."""

from __future__ import annotations

import re
from pathlib import Path

from affectllm.data.manifest import iter_jsonl, normalize_au
from affectllm.data.sources._base import (
    AUDIO_EXTS,
    VIDEO_EXTS,
    LoadResult,
    MediaIndex,
    find,
    find_all,
    need_columns,
    read_csv,
    register,
)
from affectllm.types import Clip

DFEW_LABELS: dict[str, str] = {
    "1": "happy",
    "2": "sad",
    "3": "neutral",
    "4": "angry",
    "5": "surprise",
    "6": "disgust",
    "7": "fear",
}
FERV39K_LABELS: tuple[str, ...] = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")


def _media_or_missing(index: MediaIndex, stem: str, fallback: Path) -> str:
    """The indexed file, or the path the official layout would have (so `data check` names the missing file)."""
    return index.get(stem) or str(fallback)


@register("mafw", card="mafw")
def load_mafw(root: str | Path, fold: int = 1, subset: str = "single") -> LoadResult:
    """MAFW: ``Train & Test Set/<single|compound>/no_caption/set_<fold>/{train,test}.txt`` + ``data/clips``.

    Args:
        root: the release folder.
        fold: which of the 5 official folds (1-5).
        subset: ``"single"`` (11 classes) or ``"compound"`` (multi-label, labels joined by ``_``).
    """
    root = Path(root)
    split_dir = find(
        root,
        f"Train & Test Set/{subset}/no_caption/set_{fold}",
        f"Train_Test_Set/{subset}/no_caption/set_{fold}",
        what=f"fold {fold} split folder",
        dataset="mafw",
    )
    videos = MediaIndex([root / "data" / "clips", root / "clips", root], VIDEO_EXTS)
    audios = MediaIndex([root / "data" / "audio", root / "data" / "audio_16k"], AUDIO_EXTS)
    out = LoadResult()
    for split in ("train", "test"):
        path = find(split_dir, f"{split}.txt", f"{split}.csv", what=f"{split} list", dataset="mafw")
        for line, row in read_csv(path, delimiter=" ", header=False):
            name, label = row.get("0", ""), " ".join(v for k, v in row.items() if k != "0")
            stem = Path(name).stem
            labels = [s.lower() for s in re.split(r"[_,&+\s]+", label) if s]
            if not stem or not labels:
                out.warn(path, line, "label", f"cannot read {' '.join(row.values())!r}", "expect 'NAME.mp4 label'")
                continue
            out.clips.append(
                Clip(
                    id=f"mafw/{stem}",
                    video=_media_or_missing(videos, stem, root / "data" / "clips" / f"{stem}.mp4"),
                    audio=audios.get(stem),
                    labels=labels,
                    emotion=labels[0] if len(labels) == 1 else None,
                    split=split,
                    source="mafw",
                    extra={"fold": fold},
                )
            )
    return out


@register("dfew", card="dfew")
def load_dfew(root: str | Path, fold: int = 1) -> LoadResult:
    """DFEW: ``EmoLabel_DataSplit/{train,test}(single-labeled)/set_<fold>.csv`` (``video_name,label``, 1-7)."""
    root = Path(root)
    videos = MediaIndex([root / "Clip" / "original", root / "Clip", root], VIDEO_EXTS)
    out = LoadResult()
    for split in ("train", "test"):
        path = find(
            root,
            f"EmoLabel_DataSplit/{split}(single-labeled)/set_{fold}.csv",
            what=f"{split} split of fold {fold}",
            dataset="dfew",
        )
        rows = list(read_csv(path))
        need_columns(path, rows, "video_name", "label")
        for line, row in rows:
            label = DFEW_LABELS.get(row["label"].split(".")[0])
            if not row["video_name"].isdigit() or label is None:
                out.warn(path, line, "label", f"unexpected row {row}", "expect video_name (number) and label 1-7")
                continue
            stem = f"{int(row['video_name']):05d}"
            video = (
                videos.get(stem) or videos.get(row["video_name"]) or str(root / "Clip" / "original" / f"{stem}.mp4")
            )
            out.clips.append(
                Clip(
                    id=f"dfew/{stem}",
                    video=video,
                    labels=[label],
                    emotion=label,
                    split=split,
                    source="dfew",
                    extra={"fold": fold},
                )
            )
    return out


@register("ferv39k", card="ferv39k")
def load_ferv39k(root: str | Path) -> LoadResult:
    """FERV39K: ``4_setups/All_scenes/{train,test}_All.csv`` (``Scene/Sub/NNNN Label``) + frame folders.

    Clips ship as folders of frames under ``2_ClipsforFaceCrop``; a converted ``<folder>.mp4`` next to a folder
    is used when present, otherwise the folder is written and ``data check`` asks for a conversion.
    """
    root = Path(root)
    frames_root = find(root, "2_ClipsforFaceCrop", "0_7_LabelClips", what="clip folder", dataset="ferv39k")
    out = LoadResult()
    for split in ("train", "test"):
        path = find(root, f"4_setups/All_scenes/{split}_All.csv", what=f"{split}_All.csv", dataset="ferv39k")
        for line, row in read_csv(path, delimiter=" ", header=False):
            rel, raw = row.get("0", ""), row.get("1", "").lower()
            label = FERV39K_LABELS[int(raw)] if raw.isdigit() and int(raw) < len(FERV39K_LABELS) else raw
            if not rel or label not in FERV39K_LABELS:
                out.warn(path, line, "label", f"unexpected row {' '.join(row.values())!r}", "expect 'PATH Label'")
                continue
            folder = frames_root / rel
            video = next(
                (str(folder.with_suffix(e)) for e in (".mp4", ".avi") if folder.with_suffix(e).exists()), str(folder)
            )
            out.clips.append(
                Clip(
                    id=f"ferv39k/{rel}",
                    video=video,
                    labels=[label],
                    emotion=label,
                    split=split,
                    source="ferv39k",
                    extra={"scene": rel.split("/")[0]},
                )
            )
    return out


@register("fea20k", card="fea20k")
def load_fea20k(root: str | Path, images: str | Path | None = None) -> LoadResult:
    """FEA-20K (Facial-R1): JSONL annotations (``id, dataset, image, AUs, labels, description``) over face images.

    Args:
        root: the folder with the annotation ``*.jsonl`` files.
        images: the folder the ``image`` paths are relative to (default: ``root``); images are obtained from
            the original datasets (FABA, BP4D, DISFA, RAF-AU, FER2013, AffectNet, RAF-DB).
    """
    root = Path(root)
    image_root = Path(images) if images is not None else root
    files = find_all(root, "**/*.jsonl") or [find(root, "*.jsonl", what="annotation JSONL", dataset="fea20k")]
    out = LoadResult()
    for path in files:
        split = "test" if "test" in path.name.lower() else "train"
        for line, row, problem in iter_jsonl(path):
            if problem is not None or not isinstance(row, dict) or not row.get("image"):
                out.warn(path, line, "image", problem.message if problem else "row without an image", ident=None)
                continue
            labels = [str(x).strip().lower() for x in row.get("labels") or [] if str(x).strip()]
            aus = [a for a in (normalize_au(x) for x in row.get("AUs") or []) if a]
            ident = str(row.get("id") or Path(row["image"]).stem)
            out.clips.append(
                Clip(
                    id=f"fea20k/{ident}",
                    video=str(image_root / row["image"]),
                    caption=row.get("description"),
                    labels=labels or None,
                    emotion=labels[0] if len(labels) == 1 else None,
                    aus=aus or None,
                    split=split,
                    source="fea20k",
                    extra={"origin": row.get("dataset"), "still_image": True},
                )
            )
    return out
