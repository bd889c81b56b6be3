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
    _clip,
    find,
    find_all,
    layout_error,
    need_columns,
    read_csv,
    register,
)

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
                _clip(
                    "mafw",
                    stem,
                    video=_media_or_missing(videos, stem, root / "data" / "clips" / f"{stem}.mp4"),
                    audio=audios.get(stem),
                    labels=labels,
                    split=split,
                    extra={"fold": fold},
                )
            )
    return out


@register("dfew", card="dfew")
def load_dfew(root: str | Path, fold: int = 1) -> LoadResult:
    """DFEW: ``EmoLabel_DataSplit/{train,test}(single-labeled)/set_<fold>.csv`` (``video_name,label``, 1-7).

    Videos are the original clips, ``Clip/original/<n>.mp4`` with ``n`` unpadded as released (a padded name there
    is accepted too). The release's other folders (``Clip/clip_224x224*``: face crops resized to 224x224, without
    audio) are never used, whatever their names.
    """
    root = Path(root)
    original = find(root, "Clip/original", what="Clip/original folder", dataset="dfew")
    videos = MediaIndex([original], VIDEO_EXTS)
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
            number = int(row["video_name"])
            video = videos.get(str(number)) or videos.get(f"{number:05d}") or str(original / f"{number}.mp4")
            out.clips.append(
                _clip("dfew", f"{number:05d}", video=video, labels=[label], split=split, extra={"fold": fold})
            )
    return out


@register("ferv39k", card="ferv39k")
def load_ferv39k(root: str | Path) -> LoadResult:
    """FERV39K: ``4_setups/All_scenes/{train,test}_All.csv`` (``Scene/Label/NNNN Label``) + frame folders.

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
                _clip("ferv39k", rel, video=video, labels=[label], split=split, extra={"scene": rel.split("/")[0]})
            )
    return out


_STAGE = re.compile(r"stage[-_ ]?(\d)", re.IGNORECASE)


def _stage_of(path: Path, root: Path) -> int | None:
    """The Facial-R1 stage a JSONL belongs to, from a ``stage<k>`` folder or file name; None when unmarked."""
    match = _STAGE.search(str(path.relative_to(root)))
    return int(match.group(1)) if match else None


def _pairs(image_folders: str | dict[str, str] | None) -> dict[str, str]:
    """``"A.jsonl:DirA,B.jsonl:DirB"`` (Facial-R1's ``--data_file_paths``/``--image_folders`` pairing) as a dict."""
    if image_folders is None or isinstance(image_folders, dict):
        return dict(image_folders or {})
    pairs = {}
    for item in filter(None, str(image_folders).split(",")):
        name, sep, folder = item.partition(":")
        if not sep:
            raise ValueError(
                f"fea20k: image_folders item {item!r} is not JSONL:FOLDER (e.g. DISFA-Train-3.jsonl:DISFA-Train)"
            )
        pairs[name.strip()] = folder.strip()
    return pairs


def _image_folder(path: Path, image_root: Path, pairs: dict[str, str]) -> Path:
    """The folder a JSONL's ``image`` paths are relative to: the explicit pair, else the folder named after the
    JSONL without its ``-<n>`` suffix (``DISFA-Train-3.jsonl`` -> ``DISFA-Train/``) when present, else the root."""
    explicit = pairs.get(path.name) or pairs.get(path.stem)
    if explicit is not None:
        return Path(explicit) if Path(explicit).is_absolute() else image_root / explicit
    stem = re.sub(r"-\d+$", "", path.stem)
    for base in (image_root, path.parent):
        if (base / stem).is_dir():
            return base / stem
    return image_root


def _fea20k_files(root: Path, stages: tuple[int, ...]) -> tuple[list[Path], list[Path]]:
    """(read, skipped): every test JSONL, and the train JSONLs of ``stages`` (unmarked files are read)."""
    files = find_all(root, "**/*.jsonl")
    if not files:
        raise layout_error("fea20k", root, "annotation JSONL", ["*.jsonl", "stage1/*.jsonl"])
    keep, skipped = [], []
    for path in files:
        stage = _stage_of(path, root)
        is_test = "test" in path.name.lower()
        (keep if is_test or stage is None or stage in stages else skipped).append(path)
    return keep, skipped


@register("fea20k", card="fea20k")
def load_fea20k(
    root: str | Path,
    images: str | Path | None = None,
    image_folders: str | dict[str, str] | None = None,
    stages: tuple[int, ...] = (1,),
) -> LoadResult:
    """FEA-20K (Facial-R1): JSONL annotations (``id, dataset, image, AUs, labels, description``) over face images.

    Args:
        root: the folder with the annotation ``*.jsonl`` files (sub-folders included).
        images: the folder the per-dataset image folders sit in (default: ``root``); images are obtained from
            the original datasets (FABA, BP4D, DISFA, RAF-AU, FER2013, AffectNet, RAF-DB).
        image_folders: explicit ``JSONL:FOLDER`` pairs, comma-separated (a FOLDER relative to ``images``);
            without one a JSONL pairs with the folder of its name (``DISFA-Train-3.jsonl`` -> ``DISFA-Train/``).
        stages: the Facial-R1 stages whose train files are read (FEA-20K is stage 1 train + the test files);
            a file is of stage k when a ``stage<k>`` folder or name marks it.
    """
    root = Path(root)
    image_root = Path(images) if images is not None else root
    pairs = _pairs(image_folders)
    files, skipped = _fea20k_files(root, tuple(int(s) for s in stages))
    out = LoadResult()
    for path in skipped:
        out.warn(
            path,
            0,
            "file",
            f"a train file of stage {_stage_of(path, root)}, not FEA-20K; skipped",
            "pass stages=[1,2,3] to read other stages too",
        )
    seen: set[str] = set()
    for path in files:
        _fea20k_rows(path, _image_folder(path, image_root, pairs), out, seen)
    return out


def _fea20k_rows(path: Path, folder: Path, out: LoadResult, seen: set[str]) -> None:
    split = "test" if "test" in path.name.lower() else "train"
    for line, row, problem in iter_jsonl(path):
        image = row.get("image") if isinstance(row, dict) else None
        images = [str(i) for i in image] if isinstance(image, list) else [str(image)] if image else []
        if problem is not None or not images:
            out.warn(path, line, "image", problem.message if problem else "row without an image")
            continue
        ident = str(row.get("id") or Path(images[0]).stem)
        if ident in seen:
            out.warn(
                path,
                line,
                "id",
                f"id {ident!r} already read from another line or file; skipped",
                ident=f"fea20k/{ident}",
            )
            continue
        seen.add(ident)
        labels = [str(x).strip().lower() for x in row.get("labels") or [] if str(x).strip()]
        aus = [a for a in (normalize_au(x) for x in row.get("AUs") or []) if a]
        extra = {"origin": row.get("dataset"), "still_image": True}
        if len(images) > 1:
            extra["images"] = [str(folder / i) for i in images]  # the first one is the clip's video
        out.clips.append(
            _clip(
                "fea20k",
                ident,
                video=str(folder / images[0]),
                caption=row.get("description"),
                labels=labels,
                aus=aus or None,
                split=split,
                extra=extra,
            )
        )
