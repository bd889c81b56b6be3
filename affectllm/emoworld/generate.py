"""EmoWorld: a synthetic audio-visual emotion benchmark with known ground truth (``affectllm data synth``).

``synth_main(out, n, seed)`` writes ``out/video/*.mp4`` (a drawn face following AU curves), ``out/audio/*.wav`` (a
voice following arousal and valence), ``out/manifest.jsonl`` (DESIGN.md §3 rows with train/val/test splits, gold
labels, AUs, valence/arousal and a descriptive caption) and ``out/emoworld.json`` (resolved knobs, counts and the
scores of the oracle and the baselines on the test split), then prints those scores.

The pieces: :mod:`~affectllm.emoworld.world` (knobs, presets, the latent state of a clip),
:mod:`~affectllm.emoworld.render` (video), :mod:`~affectllm.emoworld.voice` (audio),
:mod:`~affectllm.emoworld.text` (transcript, labels, caption), :mod:`~affectllm.emoworld.oracle` (oracle and
baselines). Every clip is drawn from generators seeded by ``(seed, index)``: the output is byte-identical for a
seed whatever the number of workers. See ``docs/emoworld.md``.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from affectllm.data.manifest import write_manifest
from affectllm.emoworld.oracle import Baselines, Oracle
from affectllm.emoworld.render import au_curves, render_video, sample_identity, write_mp4
from affectllm.emoworld.text import caption, gold_labels, transcript
from affectllm.emoworld.voice import espeak_available, render_espeak, render_voice, voice_params, write_wav
from affectllm.emoworld.world import Knobs, Latent, resolve_knobs, sample_latent
from affectllm.errors import UserError
from affectllm.metrics import au_f1, ew_level1, hit_rate

SOURCE = "emoworld"
MANIFEST = "manifest.jsonl"
SUMMARY = "emoworld.json"
# Third word of each generator's seed: one independent stream per purpose (SeedSequence ignores trailing zeros).
_LATENT, _VIDEO, _AUDIO, _SPLIT = 10, 11, 12, 13
SYSTEMS: tuple[tuple[str, tuple[str, ...] | None], ...] = (
    ("oracle", ("video", "audio", "text")),
    ("oracle (face only)", ("video",)),
    ("oracle (voice only)", ("audio",)),
    ("oracle (words only)", ("text",)),
    ("keyword baseline", None),
    ("majority baseline", None),
)


def clip_id(index: int) -> str:
    """Manifest id of clip ``index`` (``"ew00007"``)."""
    return f"ew{index:05d}"


def _atomic(path: Path, write: Callable[[str], None]) -> None:
    # the mp4/wav writers take a path, not an open file (jsonl.atomic_write): a temp name, then os.replace
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    write(str(tmp))
    os.replace(tmp, path)


def _video(lat: Latent, knobs: Knobs, seed: int, path: Path) -> None:
    rng = np.random.default_rng([seed, lat.index, _VIDEO])
    ident = sample_identity(rng, knobs.head_motion, knobs.clutter)
    curves = au_curves(lat.peaks, int(round(lat.seconds * knobs.fps)), knobs.fps, rng)
    frames = render_video(ident, curves, knobs.fps, knobs.size, knobs.pixel_noise, rng)
    _atomic(path, lambda p: write_mp4(p, frames, knobs.fps))


def _audio(lat: Latent, knobs: Knobs, seed: int, words: str, path: Path) -> None:
    rng = np.random.default_rng([seed, lat.index, _AUDIO])
    female = rng.random() < 0.5
    f0 = float(rng.uniform(180, 230) if female else rng.uniform(100, 130))
    params = voice_params(lat.voice_va[1], lat.voice_va[0], f0, 1.15 if female else 1.0)
    if knobs.voice == "espeak":
        wave = render_espeak(words, params, lat.seconds, knobs.sample_rate)
    else:
        wave = render_voice(params, lat.seconds, knobs.sample_rate, rng)
    _atomic(path, lambda p: write_wav(p, wave, knobs.sample_rate))


def draw_clip(index: int, knobs: Knobs, seed: int) -> tuple[dict[str, Any], Latent, str]:
    """Draw clip ``index`` without rendering: its manifest row (no media paths, no split), latent state and words.

    Args:
        index: clip number (with ``seed``, it seeds every random draw of the clip).
        knobs: resolved knobs.
        seed: the dataset seed.
    """
    rng = np.random.default_rng([seed, index, _LATENT])
    lat = sample_latent(knobs, index, rng)
    words = transcript(lat, rng)
    true_labels = gold_labels(lat.emotion, lat.blend, rng)
    noisy_labels = gold_labels(lat.label_emotion, lat.label_blend, rng)
    flipped = lat.label_emotion != lat.emotion
    row: dict[str, Any] = {"id": clip_id(index)}
    if lat.has["text"]:
        row["transcript"] = words
    row.update(
        caption=caption(lat, words if lat.has["text"] else None, true_labels),
        labels=noisy_labels if flipped else true_labels,
        emotion=lat.label_emotion,
        aus=lat.gold_aus(),
        valence=lat.valence,
        arousal=lat.arousal,
        source=SOURCE,
        au_intensity=lat.au_intensity(),
        emoworld={
            "text_mode": lat.text_mode,
            "blend": lat.blend,
            "intensity": round(lat.intensity, 3),
            "label_noise": flipped,
            "seconds": lat.seconds,
        },
    )
    return row, lat, words


def make_clip(index: int, knobs: Knobs, seed: int, out: str) -> tuple[dict[str, Any], Latent]:
    """Draw, render and write clip ``index``; return its manifest row (split not set) and its latent state.

    Args:
        index: clip number.
        knobs: resolved knobs (``voice`` already resolved to ``numpy`` or ``espeak``).
        seed: the dataset seed.
        out: output folder (``video/`` and ``audio/`` must exist).
    """
    row, lat, words = draw_clip(index, knobs, seed)
    media: dict[str, Any] = {"id": row["id"]}
    if lat.has["video"]:
        _video(lat, knobs, seed, Path(out) / "video" / f"{row['id']}.mp4")
        media["video"] = f"video/{row['id']}.mp4"
    if lat.has["audio"]:
        _audio(lat, knobs, seed, words, Path(out) / "audio" / f"{row['id']}.wav")
        media["audio"] = f"audio/{row['id']}.wav"
    return {**media, **row}, lat


def simulate(n: int, seed: int, knobs: Knobs) -> tuple[list[dict[str, Any]], list[Latent]]:
    """Rows (with splits, without media) and latent states of ``n`` clips, nothing rendered: fast oracle and
    baseline numbers at large ``n``. The rows are those :func:`generate` writes, minus the media paths."""
    drawn = [draw_clip(i, knobs, seed)[:2] for i in range(n)]
    splits = assign_splits(n, seed, knobs)
    return [{**row, "split": s} for (row, _), s in zip(drawn, splits, strict=True)], [lat for _, lat in drawn]


def assign_splits(n: int, seed: int, knobs: Knobs) -> list[str]:
    """Split name of each clip: a seeded permutation cut into test, val and train (test and val non-empty once
    ``n >= 3``)."""
    n_test = max(1, round(n * knobs.test_share)) if n >= 3 and knobs.test_share > 0 else 0
    n_val = max(1, round(n * knobs.val_share)) if n >= 3 and knobs.val_share > 0 else 0
    order = np.random.default_rng([seed, 0, _SPLIT]).permutation(n)
    splits = ["train"] * n
    for rank, index in enumerate(order):
        splits[index] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return splits


def _remove_stale(out: Path, keep: set[str]) -> None:
    """Delete EmoWorld media of an earlier, larger run in the same folder (only files named like ours)."""
    for sub, ext in (("video", ".mp4"), ("audio", ".wav")):
        for path in (out / sub).glob(f"ew*{ext}"):
            if path.stem not in keep:
                path.unlink()


def generate(out: str, n: int, seed: int, knobs: Knobs, progress: bool = True) -> tuple[list[dict], list[Latent]]:
    """Write ``n`` clips and the manifest; return the rows and the latent states, in index order.

    Raises:
        ValueError: ``n < 1``.
        RuntimeError: ``voice=espeak`` without espeak-ng installed.
    """
    if n < 1:
        raise UserError(f"EmoWorld needs n >= 1 clips, got {n}")
    if knobs.voice == "espeak" and not espeak_available():
        raise UserError("voice=espeak needs espeak-ng (apt-get install espeak-ng); use voice=numpy or auto")
    root = Path(out)
    for sub in ("video", "audio"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    work = partial(make_clip, knobs=knobs, seed=seed, out=str(root))
    if knobs.workers > 1 and n > 1:
        ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(min(knobs.workers, n), mp_context=ctx) as pool:
            results = _tracked(
                pool.map(work, range(n), chunksize=max(1, min(8, n // (4 * knobs.workers)))), n, progress
            )
    else:
        results = _tracked(map(work, range(n)), n, progress)
    splits = assign_splits(n, seed, knobs)
    rows = [{**row, "split": split} for (row, _), split in zip(results, splits, strict=True)]
    write_manifest(rows, root / MANIFEST)
    _remove_stale(root, {r["id"] for r in rows})
    return rows, [lat for _, lat in results]


def _tracked(items: Any, n: int, progress: bool) -> list[Any]:
    if not progress:
        return list(items)
    from rich.progress import track

    return list(track(items, total=n, description="EmoWorld", transient=True))


def score_systems(
    rows: Sequence[dict], latents: Sequence[Latent], knobs: Knobs, split: str = "test"
) -> dict[str, dict[str, float]]:
    """EW-F, HIT and AU-F1 of the oracle (all cues and one modality each) and the baselines on one split.

    The baselines are fitted on the train split (all rows when there is none).
    """
    train = [r for r in rows if r["split"] == "train"] or list(rows)
    pairs = [(r, lat) for r, lat in zip(rows, latents, strict=True) if r["split"] == split]
    oracle, base = Oracle(knobs), Baselines(train)
    golds = [r["labels"] for r, _ in pairs]
    emotions = [r["emotion"] for r, _ in pairs]
    gold_aus = [r["aus"] for r, _ in pairs]
    out: dict[str, dict[str, float]] = {}
    for name, use in SYSTEMS:
        if use is not None:
            preds = [oracle.predict(lat, use) for _, lat in pairs]
        else:
            fn = base.keyword_predict if name.startswith("keyword") else base.majority_predict
            preds = [fn(r) for r, _ in pairs]
        labels, aus = [p[0] for p in preds], [p[1] for p in preds]
        au_scores = au_f1(aus, gold_aus)
        out[name] = {
            "ew_f": ew_level1(labels, golds),
            "hit": hit_rate(labels, emotions),
            "au_f1": au_scores["micro"],
            "au_f1_macro": au_scores["macro"],
            "n": len(pairs),
        }
    return out


def counts(rows: Sequence[dict]) -> dict[str, Any]:
    """Counts per split, emotion, transcript mode, blend, label noise and missing modality."""
    meta = [r["emoworld"] for r in rows]
    return {
        "clips": len(rows),
        "splits": dict(sorted(Counter(r["split"] for r in rows).items())),
        "emotions": dict(sorted(Counter(r["emotion"] for r in rows).items())),
        "text_modes": dict(sorted(Counter(m["text_mode"] for m in meta).items())),
        "blends": sum(m["blend"] is not None for m in meta),
        "label_noise": sum(m["label_noise"] for m in meta),
        "missing": {k: sum(k not in r for r in rows) for k in ("video", "audio", "transcript")},
    }


def print_scores(scores: dict[str, dict[str, float]], split: str = "test") -> None:
    """A table of the systems' scores (x100), ceiling first."""
    from rich.console import Console
    from rich.table import Table

    n = next(iter(scores.values()))["n"] if scores else 0
    table = Table(title=f"EmoWorld {split} split ({n} clips): read a model's score between floor and ceiling")
    for col in ("system", "EW-F", "HIT", "AU-F1"):
        table.add_column(col, justify="left" if col == "system" else "right")
    for name, s in scores.items():
        style = "bold green" if name == "oracle" else "yellow" if "baseline" in name else None
        table.add_row(name, *(f"{100 * s[k]:.1f}" for k in ("ew_f", "hit", "au_f1")), style=style)
    Console().print(table)


def synth_main(out: str, n: int, seed: int, preset: str = "default", overrides: list[str] | None = None) -> int:
    """Entry point of ``affectllm data synth``: generate, score, print, write ``emoworld.json``.

    Returns:
        Exit status: 0 on success, 2 on bad knobs (the message names the knob and the known keys).
    """
    try:
        knobs = resolve_knobs(preset, overrides)
    except ValueError as err:
        print(f"affectllm data synth: {err}")
        return 2
    if knobs.voice == "auto":
        knobs = dataclasses.replace(knobs, voice="espeak" if espeak_available() else "numpy")
    start = time.perf_counter()
    rows, latents = generate(out, n, seed, knobs)
    elapsed = time.perf_counter() - start
    split = "test" if any(r["split"] == "test" for r in rows) else "train"
    scores = score_systems(rows, latents, knobs, split)
    summary = {
        "emoworld_version": 1,
        "seed": seed,
        "n": n,
        "preset": preset,
        "overrides": list(overrides or []),
        "knobs": dataclasses.asdict(knobs),
        "counts": counts(rows),
        "score_split": split,
        "scores": scores,
    }
    (Path(out) / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(
        f"EmoWorld: {n} clips in {elapsed:.1f} s ({n / elapsed:.1f} clips/s, {knobs.workers} worker(s)) -> "
        f"{Path(out) / MANIFEST}"
    )
    print_scores(scores, split)
    return 0
