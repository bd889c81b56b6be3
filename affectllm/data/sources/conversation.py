"""Conversational and sentiment corpora: MELD, CMU-MOSI, CMU-MOSEI, CH-SIMS and CH-SIMS v2."""

from __future__ import annotations

from pathlib import Path

from affectllm.data.sources._base import (
    VIDEO_EXTS,
    LoadResult,
    MediaIndex,
    col,
    find,
    fix_mojibake,
    need_columns,
    read_csv,
    register,
    scale,
)
from affectllm.types import Clip

MELD_SPLITS: dict[str, tuple[str, tuple[str, ...]]] = {
    "train": ("train_sent_emo.csv", ("train_splits", "train/train_splits", "train")),
    "val": ("dev_sent_emo.csv", ("dev_splits_complete", "dev/dev_splits_complete", "dev")),
    "test": ("test_sent_emo.csv", ("output_repeated_splits_test", "test/output_repeated_splits_test", "test")),
}


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
            out.clips.append(
                Clip(
                    id=f"meld/{split}/{stem}",
                    video=videos.get(stem) or str(video_dir / f"{stem}.mp4"),
                    transcript=fix_mojibake(row["utterance"]),
                    labels=[emotion],
                    emotion=emotion,
                    split=split,
                    source="meld",
                    extra={
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
    modes = {"train": "train", "valid": "val", "val": "val", "dev": "val", "test": "test"}
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
            Clip(
                id=f"{source}/{vid}/{clip}",
                video=video,
                transcript=col(row, "text"),
                labels=[word] if word else None,
                valence=score,
                split=modes.get((col(row, "mode") or "").lower()),
                source=source,
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


@register("sims", card="ch_sims")
def load_sims(root: str | Path) -> LoadResult:
    """CH-SIMS (``label.csv``, sentiment already in [-1, 1], with per-modality labels ``label_T/A/V``)."""
    return _mmsa(Path(root), "sims", 1.0, ("label.csv", "SIMS/label.csv"))


@register("simsv2", card="ch_sims")
def load_simsv2(root: str | Path) -> LoadResult:
    """CH-SIMS v2 (``meta.csv`` or ``label.csv``, same columns as CH-SIMS)."""
    return _mmsa(Path(root), "simsv2", 1.0, ("meta.csv", "label.csv", "ch-simsv2s/meta.csv"))
