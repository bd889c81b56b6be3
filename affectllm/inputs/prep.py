"""``affectllm data prep MANIFEST --out DIR``: decode, sample, crop faces, estimate AUs, cache arrays per clip.

Writes ``DIR/prep.jsonl``, one row per manifest id::

    {"id", "frames", "faces_found", "aus_estimated": {"AU12": 0.61, ...}, "error": null | "reason",
     "arrays": "arrays/<id>.npz" | null, "features": "features/<id>.npz" | null, "audio": bool,
     "backend": "decord" | "pyav" | null, "au_baseline": "prior" | "clip" | null, "warnings": [...], "seconds"}

``arrays`` holds ``frames`` [t, h, w, 3] uint8, ``frame_times`` [t], ``faces`` [t, s, s, 3] uint8,
``face_found`` [t] bool, ``landmarks`` [t, 478, 3], ``au_intensities`` [t, 11], ``au_features``
[t, FEATURE_DIM] and ``audio`` [n] float32 at ``sample_rate`` (keys absent when the clip lacks the modality).

Reliability: rows are appended with flush + fsync; arrays are written to a temporary file and renamed into place
(a row never points at a half-written file); a rerun skips ids already in ``prep.jsonl`` (``retry_errors`` redoes
the failed ones) and cuts off a torn last line left by a kill; a per-item failure becomes that item's ``error``
and the batch goes on; a lock file stops two runs writing the same folder.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import multiprocessing as mp
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..data.manifest import read_manifest
from ..jsonl import atomic_write, write_jsonl
from ..media.decode import DecodeConfig, MediaError
from ..media.sampling import SamplingConfig
from ..types import Clip, DecodedClip

FeatureFn = Callable[[DecodedClip], dict[str, np.ndarray]]
PREP_FILE = "prep.jsonl"


@dataclass
class PrepSettings:
    """What every worker needs (picklable: sent once to each process)."""

    out: str
    decode: DecodeConfig
    faces: bool = True
    face_size: int = 112
    feature_fn: FeatureFn | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _read_manifest(path: str) -> tuple[list[Clip], list[str]]:
    """The manifest through the shared reader (:func:`affectllm.data.manifest.read_manifest`): clips keep every
    field (``extra`` too, so ``start``/``end`` windows reach the decoder); bad rows come back as problems naming
    their line and field, never silently dropped."""
    clips, problems = read_manifest(path, strict=False)
    return clips, [str(p) for p in problems if p.is_error]


def safe_name(clip_id: str) -> str:
    """A file name for an id: unsafe characters replaced, plus a short hash when anything was replaced."""
    clean = re.sub(r"[^A-Za-z0-9._-]", "_", clip_id)[:100]
    if clean == clip_id:
        return clean
    return f"{clean}-{hashlib.sha1(clip_id.encode()).hexdigest()[:8]}"


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_write(path, "wb") as fh:
        np.savez(fh, **arrays)


_ANALYZER: Any = None


def _analyzer(settings: PrepSettings) -> Any:
    """The process's FaceAnalyzer (started on first use, reused for every clip)."""
    global _ANALYZER
    if _ANALYZER is None and settings.faces:
        from ..media.faces import FaceAnalyzer, FaceConfig

        _ANALYZER = FaceAnalyzer(FaceConfig(crop_size=settings.face_size))
    return _ANALYZER


def _clip_arrays(analysis: Any) -> dict[str, np.ndarray]:
    d, track, aus = analysis.decoded, analysis.track, analysis.aus
    arrays: dict[str, np.ndarray] = {"sample_rate": np.asarray(d.sample_rate)}
    if d.frames is not None:
        arrays.update(frames=d.frames, frame_times=np.asarray(d.frame_times, np.float64))
    if d.audio is not None:
        arrays["audio"] = d.audio
    if track is not None:
        arrays.update(faces=track.crops, face_found=track.found, face_boxes=track.boxes, landmarks=track.landmarks)
    if aus is not None and d.au_features is not None:
        arrays.update(au_intensities=aus.intensities, au_features=d.au_features)
    return arrays


def process_clip(clip: Clip, settings: PrepSettings) -> dict[str, Any]:
    """Prepare one clip and write its arrays; never raises (a failure is the row's ``error``).

    Args:
        clip: the manifest row (paths resolved).
        settings: decoding, face and feature settings.

    Returns:
        The ``prep.jsonl`` row.
    """
    from ..media.pipeline import analyze_clip

    start = time.perf_counter()
    row: dict[str, Any] = {
        "id": clip.id,
        "frames": 0,
        "faces_found": 0,
        "aus_estimated": {},
        "error": None,
        "arrays": None,
        "features": None,
        "audio": False,
        "backend": None,
        "au_baseline": None,
        "warnings": [],
    }
    try:
        analysis = analyze_clip(clip, settings.decode, _analyzer(settings))
        d = analysis.decoded
        row.update(
            frames=0 if d.frames is None else len(d.frames),
            audio=d.audio is not None,
            backend=analysis.info.backend,
            warnings=analysis.info.warnings,
        )
        if analysis.track is not None:
            row["faces_found"] = analysis.track.num_found
        if analysis.aus is not None and analysis.aus.valid.any():
            row.update(aus_estimated=analysis.aus.mean(), au_baseline=analysis.aus.baseline_source)
        name = safe_name(clip.id)
        _atomic_savez(Path(settings.out, "arrays", f"{name}.npz"), _clip_arrays(analysis))
        row["arrays"] = f"arrays/{name}.npz"
        if settings.feature_fn is not None:
            feats = settings.feature_fn(d)
            _atomic_savez(Path(settings.out, "features", f"{name}.npz"), feats)
            row["features"] = f"features/{name}.npz"
    except MediaError as e:
        row["error"] = str(e)
    except Exception as e:  # noqa: BLE001 - one bad item must not stop the batch; the reason is recorded
        row["error"] = f"{type(e).__name__}: {e} (while preparing {clip.video or clip.audio})"
    row["seconds"] = round(time.perf_counter() - start, 3)
    return row


def load_done(path: Path, drop_errors: bool = False) -> dict[str, dict[str, Any]]:
    """Rows already in ``prep.jsonl`` by id; repairs the file first.

    A torn last line (a run killed mid-write) is cut off so new rows start on a clean line. With
    ``drop_errors`` the file is rewritten (atomically) without its failed rows, so they are redone.

    Args:
        path: the ``prep.jsonl`` file (may not exist).
        drop_errors: forget rows whose ``error`` is set.

    Returns:
        id -> row for the rows kept.
    """
    if not path.exists():
        return {}
    data = path.read_bytes()
    done: dict[str, dict[str, Any]] = {}
    good_end, bad = 0, False
    for line in data.splitlines(keepends=True):
        try:
            row = json.loads(line)
            if not line.endswith(b"\n") or not isinstance(row, dict) or "id" not in row:
                raise ValueError("incomplete row")
        except ValueError:
            bad = True
            break
        done[str(row["id"])] = row
        good_end += len(line)
    if bad or good_end < len(data):
        with open(path, "r+b") as fh:
            fh.truncate(good_end)
            fh.flush()
            os.fsync(fh.fileno())
    if drop_errors and any(r.get("error") for r in done.values()):
        done = {k: r for k, r in done.items() if not r.get("error")}
        write_jsonl(done.values(), path)
    return done


def _append(fh: IO[str], row: dict[str, Any]) -> None:
    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    fh.flush()
    os.fsync(fh.fileno())


def _worker_init(settings: PrepSettings) -> None:
    global _SETTINGS
    import cv2

    cv2.setNumThreads(1)  # one OpenCV thread per worker: the workers are the parallelism
    _SETTINGS = settings
    _analyzer(settings)


_SETTINGS: PrepSettings | None = None


def _worker_run(clip: Clip) -> dict[str, Any]:
    assert _SETTINGS is not None, "worker used before _worker_init"
    return process_clip(clip, _SETTINGS)


def _run_parallel(clips: list[Clip], settings: PrepSettings, workers: int) -> Iterator[dict[str, Any]]:
    """Rows in completion order, from a process pool with a bounded number of clips in flight."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        # Workers fork from a server that has already imported the heavy modules (once, not once per worker).
        ctx.set_forkserver_preload(["affectllm.media.pipeline", "affectllm.media.faces", "cv2", "av"])
    else:
        ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=(settings,)) as pool:
        pending: dict[Future[dict[str, Any]], Clip] = {}
        queue = iter(clips)
        while True:
            for clip in queue:
                pending[pool.submit(_worker_run, clip)] = clip
                if len(pending) >= 4 * workers:
                    break
            if not pending:
                return
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                clip = pending.pop(fut)
                try:
                    yield fut.result()
                except Exception as e:  # noqa: BLE001 - a dead worker is this clip's error, not the batch's
                    yield {
                        "id": clip.id,
                        "frames": 0,
                        "faces_found": 0,
                        "aus_estimated": {},
                        "arrays": None,
                        "features": None,
                        "error": f"worker failed: {type(e).__name__}: {e}",
                    }


def _make_feature_fn(model: str | None) -> FeatureFn:
    """Encoder features of a clip for ``cache_features``: the frozen towers of the saved model in ``model``.

    Args:
        model: a saved affectllm model directory (e.g. a training stage's ``output_dir``).

    Returns:
        A picklable :class:`~affectllm.inputs.features.EncoderFeatureFn` (loaded once here, once per worker).

    Raises:
        ValueError: ``model`` is not given or is not a model directory.
    """
    if not model:
        raise ValueError("cache_features needs --model MODEL_DIR (a saved affectllm model whose encoders make the "
                         "features), or run without --cache-features")
    from .features import encoder_feature_fn

    return encoder_feature_fn(model)


def prep_main(
    manifest: str,
    out: str,
    workers: int = 1,
    num_frames: int = 8,
    strategy: str = "uniform",
    fps: float = 2.0,
    max_frames: int = 32,
    backend: str = "decord",
    max_side: int | None = 448,
    max_duration_s: float = 900.0,
    faces: bool = True,
    face_size: int = 112,
    retry_errors: bool = False,
    progress: bool = True,
    cache_features: bool = False,
    model: str | None = None,
    feature_fn: FeatureFn | None = None,
) -> int:
    """Prepare every clip of a manifest into ``out`` (see the module docs for what is written).

    Args:
        manifest: JSONL manifest (DESIGN.md §3).
        out: output folder (created).
        workers: processes; 1 runs in this process.
        num_frames: frames per clip (``uniform``), segments (``segment``).
        strategy: ``uniform``, ``fps`` or ``segment``.
        fps: sampling rate for ``fps``.
        max_frames: cap for ``fps``.
        backend: video backend tried first (``decord`` or ``pyav``; the other is the fallback).
        max_side: stored frames are decoded at most this many pixels on their longer side (None: full size).
        max_duration_s: refuse longer clips (recorded as the row's error).
        faces: track faces and estimate AUs (needs mediapipe).
        face_size: side of the aligned face crops.
        retry_errors: redo ids whose earlier row has an error.
        progress: show a progress bar.
        cache_features: also cache encoder features per clip (needs ``feature_fn`` or ``model``).
        model: model whose encoders make the cached features.
        feature_fn: ``DecodedClip -> {name: array}``, run in the worker (must be picklable when workers > 1).

    Returns:
        0 when every row is fine, 1 when any item (now or earlier) failed, 2 when nothing could start.
    """
    try:
        clips, problems = _read_manifest(manifest)
    except OSError as e:
        print(f"error: cannot read manifest {manifest}: {e}", file=sys.stderr)
        return 2
    for p in problems:
        print(p, file=sys.stderr)
    if cache_features and feature_fn is None:
        feature_fn = _make_feature_fn(model)
    if faces:
        from ..media.faces import FaceBackendError, _import_mediapipe

        try:
            _import_mediapipe()
        except FaceBackendError as e:
            print(f"error: {e} (or run with --no-faces)", file=sys.stderr)
            return 2
    sampling = SamplingConfig(strategy=strategy, num_frames=num_frames, fps=fps, max_frames=max_frames)
    decode = DecodeConfig(
        backend=backend,
        sampling=sampling,
        max_side=max_side,
        max_duration_s=max_duration_s,
        threads=1 if workers > 1 else 0,
    )
    settings = PrepSettings(out=out, decode=decode, faces=faces, face_size=face_size, feature_fn=feature_fn)
    outdir = Path(out)
    (outdir / "arrays").mkdir(parents=True, exist_ok=True)
    if feature_fn is not None:
        (outdir / "features").mkdir(exist_ok=True)
    with open(outdir / ".prep.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(
                f"error: another `affectllm data prep` is writing {out}; wait for it or use another --out",
                file=sys.stderr,
            )
            return 2
        return _prep_locked(clips, settings, workers, retry_errors, progress, bool(problems))


def _prep_locked(
    clips: list[Clip], settings: PrepSettings, workers: int, retry_errors: bool, progress: bool, bad_manifest: bool
) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    journal = Path(settings.out, PREP_FILE)
    done = load_done(journal, drop_errors=retry_errors)
    todo = [c for c in clips if c.id not in done]
    failed = sum(1 for c in clips if c.id in done and done[c.id].get("error"))
    print(f"data prep: {len(clips)} clips, {len(clips) - len(todo)} already done, {len(todo)} to do", file=sys.stderr)
    rows = (process_clip(c, settings) for c in todo) if workers <= 1 else _run_parallel(todo, settings, workers)
    columns = (TextColumn("prep"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress, transient=True) as bar, open(journal, "a", encoding="utf-8") as fh:
        task = bar.add_task("prep", total=len(todo))
        for row in rows:
            _append(fh, row)
            failed += bool(row.get("error"))
            if row.get("error"):
                bar.console.print(f"[red]failed[/red] {row['id']}: {row['error']}")
            bar.advance(task)
    print(f"data prep: {len(clips) - failed} ok, {failed} failed; rows in {journal}", file=sys.stderr)
    return 1 if failed or bad_manifest else 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``affectllm data prep`` (the CLI calls :func:`run_from_args` with them)."""
    parser.add_argument("manifest", help="JSONL manifest (paths relative to it)")
    parser.add_argument("--out", required=True, help="output folder: prep.jsonl, arrays/, features/")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1: this process)")
    parser.add_argument("--num-frames", type=int, default=8, help="frames per clip (uniform) or segments")
    parser.add_argument("--strategy", choices=["uniform", "fps", "segment"], default="uniform")
    parser.add_argument("--fps", type=float, default=2.0, help="sampling rate for --strategy fps")
    parser.add_argument("--max-frames", type=int, default=32, help="frame cap for --strategy fps")
    parser.add_argument("--backend", choices=["decord", "pyav"], default="decord", help="video backend tried first")
    parser.add_argument("--max-side", type=int, default=448, help="longer side of stored frames (0: full size)")
    parser.add_argument("--max-duration", type=float, default=900.0, help="refuse clips longer than this (s)")
    parser.add_argument("--no-faces", action="store_true", help="skip face tracking and AUs")
    parser.add_argument("--face-size", type=int, default=112, help="side of the aligned face crops")
    parser.add_argument("--retry-errors", action="store_true", help="redo ids whose earlier row failed")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--cache-features", action="store_true", help="also cache encoder features per clip")
    parser.add_argument("--model", default=None,
                        help="with --cache-features: the saved affectllm model directory whose frozen encoders make "
                        "the features (the model you will train; its encoder fingerprint is checked at training)")


def run_from_args(args: argparse.Namespace) -> int:
    """Run :func:`prep_main` from parsed :func:`add_arguments` arguments; returns the exit status."""
    return prep_main(
        args.manifest,
        args.out,
        workers=args.workers,
        num_frames=args.num_frames,
        strategy=args.strategy,
        fps=args.fps,
        max_frames=args.max_frames,
        backend=args.backend,
        max_side=args.max_side or None,
        max_duration_s=args.max_duration,
        faces=not args.no_faces,
        face_size=args.face_size,
        retry_errors=args.retry_errors,
        progress=not args.no_progress,
        cache_features=args.cache_features,
        model=args.model,
    )
