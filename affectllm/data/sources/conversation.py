"""Conversational and sentiment corpora: MELD, CMU-MOSI, CMU-MOSEI, CH-SIMS and CH-SIMS v2."""

from __future__ import annotations

from pathlib import Path

from affectllm.data.sources._base import (
    VIDEO_EXTS,
    LoadResult,
    MediaIndex,
    _clip,
    col,
    find,
    find_all,
    fix_mojibake,
    layout_error,
    need_columns,
    read_csv,
    register,
    scale,
)

MELD_SPLITS: dict[str, tuple[str, tuple[str, ...]]] = {
    "train": ("train_sent_emo.csv", ("train_splits", "train/train_splits", "train")),
    "val": ("dev_sent_emo.csv", ("dev_splits_complete", "dev/dev_splits_complete", "dev")),
    "test": ("test_sent_emo.csv", ("output_repeated_splits_test", "test/output_repeated_splits_test", "test")),
}
# About 130 clips in output_repeated_splits_test also (or only) exist as final_videos_test<dia>_<utt>.mp4.
MELD_TEST_PREFIX = "final_videos_test"


def _meld_video(videos: MediaIndex, stem: str, video_dir: Path) -> tuple[str, dict[str, str]]:
    """The clip file and, when the test folder's ``final_videos_test`` twin exists as well, that twin in extra."""
    plain, prefixed = videos.get(stem), videos.get(MELD_TEST_PREFIX + stem)
    if plain and prefixed:
        return plain, {"alt_video": prefixed}
    return plain or prefixed or str(video_dir / f"{stem}.mp4"), {}


@register("meld", card="meld")
def load_meld(root: str | Path) -> LoadResult:
    """MELD.Raw: ``{train,dev,test}_sent_emo.csv`` and ``dia<D>_utt<U>.mp4`` in each split's video folder.

    Each clip file is already the utterance; the CSV's ``StartTime``/``EndTime`` (the utterance's place in the
    episode, ``hh:mm:ss,ms``) go to ``extra.episode_start``/``extra.episode_end``, not to the manifest's
    ``start``/``end``, which would cut the clip file.
    """
    root = Path(root)
    out = LoadResult()
    for split, (csv_name, folders) in MELD_SPLITS.items():
        path = find(root, csv_name, f"*/{csv_name}", what=csv_name, dataset="meld")
        rows = list(read_csv(path))
        need_columns(path, rows, "utterance", "emotion", "dialogue_id", "utterance_id")
        dirs = [root / f for f in folders] + [path.parent / f for f in folders]
        videos = MediaIndex([d for d in dirs if d.is_dir()][:1], VIDEO_EXTS)
        video_dir = next((d for d in dirs if d.is_dir()), root / folders[0])
        for _line, row in rows:
            stem = f"dia{row['dialogue_id']}_utt{row['utterance_id']}"
            emotion = row["emotion"].lower()
            video, alt = _meld_video(videos, stem, video_dir)
            out.clips.append(
                _clip(
                    "meld",
                    f"{split}/{stem}",
                    video=video,
                    transcript=fix_mojibake(row["utterance"]),
                    labels=[emotion],
                    split=split,
                    extra={
                        **alt,
                        "sentiment": (col(row, "sentiment") or "").lower() or None,
                        "speaker": col(row, "speaker"),
                        "dialogue_id": int(row["dialogue_id"]),
                        "utterance_id": int(row["utterance_id"]),
                        # the episode's hh:mm:ss,ms, not a window of the (already cut) clip file: not start/end
                        "episode_start": col(row, "starttime"),
                        "episode_end": col(row, "endtime"),
                    },
                )
            )
    return out


def _sentiment_word(score: float | None) -> str | None:
    if score is None:
        return None
    return "positive" if score > 0 else "negative" if score < 0 else "neutral"


def _mmsa(root: Path, source: str, label_range: float, label_names: tuple[str, ...]) -> LoadResult:
    """The MMSA/THUIAR shape: ``label.csv`` (video_id, clip_id, text, label, ..., mode) + ``Raw/<vid>/<clip>``."""
    path = find(root, *label_names, what="label.csv", dataset=source)
    rows = list(read_csv(path))
    need_columns(path, rows, "video_id", "clip_id", "label")
    raw_dirs = list(dict.fromkeys([path.parent / "Raw", root / "Raw"]))
    modes = {"train": "train", "valid": "val", "validation": "val", "val": "val", "dev": "val", "test": "test"}
    out = LoadResult()
    for line, row in rows:
        vid, clip = row["video_id"], row["clip_id"]
        score = scale(row["label"], -label_range, label_range)
        if score is None:
            out.warn(path, line, "label", f"{vid}/{clip}: label {row['label']!r} is not a number; skipped")
            continue
        video = _raw_video(raw_dirs, vid, clip)
        word = (col(row, "annotation") or "").lower() or _sentiment_word(score)
        out.clips.append(
            _clip(
                source,
                f"{vid}/{clip}",
                video=video,
                transcript=col(row, "text"),
                labels=[word] if word else None,
                emotion=None,
                valence=score,
                split=modes.get((col(row, "mode") or "").lower()),
                extra={
                    "sentiment": float(row["label"]),
                    **{k: float(v) for k in ("label_t", "label_a", "label_v") if (v := col(row, k)) is not None},
                },
            )
        )
    return out


def _raw_video(raw_dirs: list[Path], vid: str, clip: str) -> str:
    """``Raw/<video_id>/<clip_id>.<ext>`` (clip ids repeat across videos, so no index by stem here)."""
    for base in raw_dirs:
        for ext in VIDEO_EXTS:
            cand = base / vid / f"{clip}{ext}"
            if cand.exists():
                return str(cand)
    return str(raw_dirs[0] / vid / f"{clip}.mp4")


@register("mosi", card="cmu_mosi_mosei")
def load_mosi(root: str | Path) -> LoadResult:
    """CMU-MOSI in the MMSA layout (sentiment in [-3, 3], scaled to valence [-1, 1])."""
    return _mmsa(Path(root), "mosi", 3.0, ("label.csv", "MOSI/label.csv"))


@register("mosei", card="cmu_mosi_mosei")
def load_mosei(root: str | Path) -> LoadResult:
    """CMU-MOSEI in the MMSA layout (sentiment in [-3, 3], scaled to valence [-1, 1])."""
    return _mmsa(Path(root), "mosei", 3.0, ("label.csv", "MOSEI/label.csv"))


def _keyed(path: Path, *columns: str) -> dict[tuple[str, int], dict[str, str]]:
    """Rows of a CH-SIMS ``metadata`` CSV by ``(video_id, int(clip_id))``."""
    rows = list(read_csv(path))
    need_columns(path, rows, "video_id", "clip_id", *columns)
    return {(r["video_id"], int(float(r["clip_id"]))): r for _, r in rows if r.get("clip_id")}


def _sims_original(root: Path, label_path: Path, language: str) -> LoadResult:
    """The original CH-SIMS release, as MERTools reads it.

    ``metadata/sentiment/label_{M,T,A,V}.csv`` (``video_id, clip_id, label``), ``metadata/{train,val,test}_index.csv``,
    ``metadata/Translation.csv`` (``video_id, clip_id, Chinese, English``) and ``Raw/<vid>/%04d.mp4``.
    """
    meta = label_path.parent.parent
    labels = _keyed(label_path, "label")
    unimodal = {
        k: _keyed(p, "label")
        for k in ("t", "a", "v")
        if (p := label_path.with_name(f"label_{k.upper()}.csv")).exists()
    }
    texts = _keyed(meta / "Translation.csv") if (meta / "Translation.csv").exists() else {}
    splits = {key: s for s in ("train", "val", "test") if (p := meta / f"{s}_index.csv").exists() for key in _keyed(p)}
    raw_dirs = list(dict.fromkeys([meta.parent / "Raw", root / "Raw"]))
    out = LoadResult()
    for (vid, number), row in labels.items():
        clip = f"{number:04d}"
        score = scale(row["label"], -1.0, 1.0)
        if score is None:
            out.warn(label_path, 0, "label", f"{vid}/{clip}: label {row['label']!r} is not a number; skipped")
            continue
        text = texts.get((vid, number), {})
        out.clips.append(
            _clip(
                "sims",
                f"{vid}/{clip}",
                video=_raw_video(raw_dirs, vid, clip),
                transcript=col(text, language, "chinese"),
                labels=[_sentiment_word(score)],
                emotion=None,
                valence=score,
                split=splits.get((vid, number)),
                extra={
                    "sentiment": float(row["label"]),
                    **{
                        f"label_{k}": float(t[(vid, number)]["label"])
                        for k, t in unimodal.items()
                        if (vid, number) in t
                    },
                },
            )
        )
    return out


@register("sims", card="ch_sims")
def load_sims(root: str | Path, language: str = "chinese") -> LoadResult:
    """CH-SIMS: the MMSA ``label.csv`` or the original release's ``metadata/`` (sentiment in [-1, 1], with
    per-modality labels).

    Args:
        root: the release folder.
        language: the transcript of the original layout: ``chinese`` or ``english`` (``Translation.csv``); the
            MMSA ``label.csv`` has Chinese text only.
    """
    root = Path(root)
    original = find_all(root, "metadata/sentiment/label_M.csv")
    if original:
        return _sims_original(root, original[0], language)
    candidates = ("label.csv", "SIMS/label.csv")
    if not any(find_all(root, c) for c in candidates):
        raise layout_error("sims", root, "CH-SIMS labels", (*candidates, "metadata/sentiment/label_M.csv"), "ch_sims")
    return _mmsa(root, "sims", 1.0, candidates)


@register("simsv2", card="ch_sims")
def load_simsv2(root: str | Path) -> LoadResult:
    """CH-SIMS v2 (``meta.csv`` or ``label.csv``, same columns as CH-SIMS)."""
    return _mmsa(Path(root), "simsv2", 1.0, ("meta.csv", "label.csv", "ch-simsv2s/meta.csv"))
