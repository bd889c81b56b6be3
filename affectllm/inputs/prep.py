"""``affectllm data prep MANIFEST --out DIR``: decode, sample, crop faces, estimate AUs, cache arrays per clip.

Writes ``DIR/prep.jsonl``, one row per manifest id::

    {"id", "frames", "faces_found", "aus_estimated": {"AU12": 0.61, ...}, "error": null | "reason",
     "arrays": "arrays/<id>.npz" | null, "features": "features/<id>.npz" | null, "audio": bool,
     "backend": "decord" | "pyav" | null, "au_baseline": "prior" | "clip" | null, "warnings": [...], "seconds"}

``arrays`` holds ``frames`` [t, h, w, 3] uint8, ``frame_times`` [t], ``faces`` [t, s, s, 3] uint8,
``face_found`` [t] bool, ``landmarks`` [t, 478, 3], ``au_intensities`` [t, 11], ``au_features``
[t, FEATURE_DIM] and ``audio`` [n] float32 at ``sample_rate`` (keys absent when the clip lacks the modality).

With ``arrays_from`` (``--arrays-from DIR``), clips an earlier prep folder of the same manifest holds are not
decoded again: their arrays are hard-linked into ``arrays/`` and their row copies the earlier one's fields, so adding
``--cache-features`` to a finished prep costs only the encoders (the demo's feature step).

Reliability: rows are appended with flush + fsync; arrays are written to a temporary file and renamed into place
(a row never points at a half-written file); a rerun skips ids already in ``prep.jsonl`` (``retry_errors`` redoes
the failed ones) and cuts off a torn last line left by a kill; a per-item failure becomes that item's ``error``
and the batch goes on; a lock file stops two runs writing the same folder. With one worker, the id of the clip in
flight is kept in ``.prep.inflight``: a rerun prepares that clip (and, with ``retry_errors``, every failed one) in a
worker process, so a clip that crashes the process (a decoder fault, the OOM killer) fails as its own row instead
of killing every rerun.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import itertools
import logging
import multiprocessing as mp
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..data.manifest import read_manifest
from ..jsonl import atomic_write, dumps_row, iter_jsonl, write_jsonl, write_text
from ..media.decode import DecodeConfig, MediaError
from ..media.sampling import SamplingConfig
from ..types import Clip, DecodedClip

log = logging.getLogger(__name__)
FeatureFn = Callable[[DecodedClip], dict[str, np.ndarray]]
PREP_FILE = "prep.jsonl"
INFLIGHT_FILE = ".prep.inflight"
"""The id of the clip ``data prep`` is working on (one worker): after a crash, the clip to run in isolation."""
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
"""Write errors that stop ``data prep`` (no later clip could be written either) instead of failing one row."""


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class PrepConfig:
    """What ``data prep`` does; the one place its defaults are written (``affectllm data prep --help`` shows them
    with these help texts)."""

    workers: int = field(default=1, metadata=_help("worker processes (1: this process)"))
    num_frames: int = field(default=8, metadata=_help("frames per clip (uniform) or segments (segment)"))
    strategy: str = field(default="uniform", metadata=_help("frame sampling: uniform, fps or segment"))
    fps: float = field(default=2.0, metadata=_help("sampling rate for strategy fps"))
    max_frames: int = field(default=32, metadata=_help("frame cap for strategy fps"))
    backend: str = field(default="decord", metadata=_help("video backend tried first (decord or pyav; the other is "
                                                          "the fallback)"))
    max_side: int | None = field(default=448, metadata=_help("longer side of stored frames in pixels (None/0: full "
                                                             "size)"))
    max_duration_s: float = field(default=900.0, metadata=_help("refuse clips longer than this many seconds (the "
                                                                "row's error)"))
    faces: bool = field(default=True, metadata=_help("track faces and estimate AUs (needs mediapipe)"))
    face_size: int = field(default=112, metadata=_help("side of the aligned face crops"))
    retry_errors: bool = field(default=False, metadata=_help("redo ids whose earlier row failed"))
    progress: bool = field(default=True, metadata=_help("show a progress bar"))
    cache_features: bool = field(default=False, metadata=_help("also cache encoder features per clip (needs model)"))
    arrays_from: str | None = field(default=None, metadata=_help(
        "an earlier data prep folder of the same manifest: each clip it prepared is read from its arrays (linked "
        "into --out, not decoded again; its decode and face options stand), e.g. to add --cache-features to a "
        "prep already made"))
    model: str | None = field(default=None, metadata=_help(
        "with cache_features: the saved affectllm model directory whose frozen encoders make the features (the "
        "model you will train; its encoder fingerprint is checked at training)"))

    def decode_config(self) -> DecodeConfig:
        """The decoder settings these options give (one decoding thread per worker when there are several)."""
        sampling = SamplingConfig(strategy=self.strategy, num_frames=self.num_frames, fps=self.fps,
                                  max_frames=self.max_frames)
        return DecodeConfig(backend=self.backend, sampling=sampling, max_side=self.max_side or None,
                            max_duration_s=self.max_duration_s, threads=1 if self.workers > 1 else 0)


@dataclass
class PrepSettings:
    """What every worker needs (picklable: sent once to each process)."""

    out: str
    decode: DecodeConfig
    faces: bool = True
    face_size: int = 112
    feature_fn: FeatureFn | None = None
    arrays_from: str | None = None
    reuse: dict[str, dict[str, Any]] = field(default_factory=dict)
    """``arrays_from``'s rows with arrays, by id."""


def safe_name(clip_id: str) -> str:
    """A file name for an id: unsafe characters replaced, plus a short hash when anything was replaced."""
    clean = re.sub(r"[^A-Za-z0-9._-]", "_", clip_id)[:100]
    if clean == clip_id:
        return clean
    return f"{clean}-{hashlib.sha1(clip_id.encode()).hexdigest()[:8]}"


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_write(path, "wb") as fh:
        np.savez(fh, **arrays)


# One FaceAnalyzer per face config and process (started on first use, reused for every clip with that config).
_ANALYZERS: dict[Any, Any] = {}


def _analyzer(settings: PrepSettings) -> Any:
    """The process's FaceAnalyzer for ``settings``' face config, or None without faces."""
    if not settings.faces:
        return None
    from ..media.faces import FaceAnalyzer, FaceConfig

    config = FaceConfig(crop_size=settings.face_size)
    key = tuple(sorted(vars(config).items()))  # FaceConfig is a plain (unhashable) dataclass
    if key not in _ANALYZERS:
        _ANALYZERS[key] = FaceAnalyzer(config)
    return _ANALYZERS[key]


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


def _row(clip_id: str, **fields: Any) -> dict[str, Any]:
    """A ``prep.jsonl`` row with every key (see the module docs), the given fields set."""
    row: dict[str, Any] = {"id": clip_id, "frames": 0, "faces_found": 0, "aus_estimated": {}, "error": None,
                           "arrays": None, "features": None, "audio": False, "backend": None, "au_baseline": None,
                           "warnings": [], "seconds": 0.0}
    unknown = set(fields) - set(row)
    if unknown:
        raise KeyError(f"prep row: unknown fields {sorted(unknown)}")
    row.update(fields)
    return row


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
    row = _row(clip.id)
    try:
        if clip.id in settings.reuse:
            _reuse_arrays(clip, settings, row)
            row["seconds"] = round(time.perf_counter() - start, 3)
            return row
        analysis = analyze_clip(clip, settings.decode, _analyzer(settings))
        d = analysis.decoded
        row.update(frames=0 if d.frames is None else len(d.frames), audio=d.audio is not None,
                   backend=analysis.info.backend, warnings=analysis.info.warnings)
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
    except OSError as e:
        if e.errno in DISK_FULL:  # every later clip would fail the same way: stop the job (prep_main says why)
            raise
        row["error"] = f"{type(e).__name__}: {e} (while preparing {clip.video or clip.audio})"
    except Exception as e:  # noqa: BLE001 - one bad item must not stop the batch; the reason is recorded
        row["error"] = f"{type(e).__name__}: {e} (while preparing {clip.video or clip.audio})"
    row["seconds"] = round(time.perf_counter() - start, 3)
    return row


REUSED_FIELDS = ("frames", "faces_found", "aus_estimated", "audio", "backend", "au_baseline", "warnings")
"""What a row made with ``arrays_from`` copies from the earlier folder's row."""


def _link(src: Path, dst: Path) -> None:
    """``dst`` becomes the same file as ``src`` (a hard link; a copy across file systems), replaced atomically."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _reuse_arrays(clip: Clip, settings: PrepSettings, row: dict[str, Any]) -> None:
    """Fill ``row`` from the clip's arrays in ``settings.arrays_from`` (linked into this folder, features made from
    them) instead of decoding its media again."""
    from .store import read_arrays

    old = settings.reuse[clip.id]
    src = Path(str(settings.arrays_from), old["arrays"])
    # read even without features: a damaged file becomes this row's error (as a failed decode would) instead of
    # being linked in and found unreadable only at training
    decoded = read_arrays(src, clip)
    name = safe_name(clip.id)
    _link(src, Path(settings.out, "arrays", f"{name}.npz"))
    row.update({k: old[k] for k in REUSED_FIELDS if k in old}, arrays=f"arrays/{name}.npz")
    if settings.feature_fn is not None:
        _atomic_savez(Path(settings.out, "features", f"{name}.npz"), settings.feature_fn(decoded))
        row["features"] = f"features/{name}.npz"


def _reusable(folder: str, out: str) -> dict[str, dict[str, Any]]:
    """The rows of an earlier prep folder whose arrays can be reused, by id.

    Raises:
        FileNotFoundError: the folder has no ``prep.jsonl``.
        ValueError: it is ``out`` itself.
    """
    if Path(folder).resolve() == Path(out).resolve():
        raise ValueError(f"--arrays-from {folder} is the output folder; name another prep folder (or omit it: a "
                         "rerun into the same folder already skips the clips it has)")
    path = Path(folder, PREP_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"--arrays-from {folder}: no {PREP_FILE} there; run `affectllm data prep MANIFEST "
                                f"--out {folder}` first or drop --arrays-from")
    rows = {}
    for number, row, error in iter_jsonl(path):
        if error is not None:
            log.warning("%s:%d: %s; that clip is decoded again", path, number, error.message)
        elif isinstance(row, dict) and row.get("arrays") and not row.get("error"):
            rows[str(row["id"])] = row
    return rows


def load_done(path: Path, drop_errors: bool = False) -> dict[str, dict[str, Any]]:
    """Rows already in ``prep.jsonl`` by id; repairs the file first.

    A torn last line (a run killed mid-write) is cut off so new rows start on a clean line; any other unreadable
    line is reported (file:line, why) and skipped, so its id is prepared again. With ``drop_errors`` the file is
    rewritten (atomically) without its failed rows, so they are redone.

    Args:
        path: the ``prep.jsonl`` file (may not exist).
        drop_errors: forget rows whose ``error`` is set.

    Returns:
        id -> row for the rows kept.
    """
    if not path.exists():
        return {}
    with open(path, "rb") as fh:
        lines = fh.readlines()  # split as iter_jsonl splits, so its line numbers index this list
    # A row is written with its newline in one write: a last line without one was cut, even if it parses.
    torn = bool(lines) and not lines[-1].endswith(b"\n")
    done: dict[str, dict[str, Any]] = {}
    for number, row, error in iter_jsonl(path):
        if torn and number == len(lines):
            break
        if error is not None:
            log.warning("%s:%d: %s (%s); the row is skipped and its clip prepared again", path, number,
                        error.message, error.hint)
        elif not isinstance(row, dict) or "id" not in row:
            log.warning("%s:%d: not a prep row (no id); skipped and its clip prepared again", path, number)
        else:
            done[str(row["id"])] = row
    if torn:
        with open(path, "r+b") as fh:
            fh.truncate(sum(len(line) for line in lines[:-1]))
            fh.flush()
            os.fsync(fh.fileno())
    if drop_errors and any(r.get("error") for r in done.values()):
        done = {k: r for k, r in done.items() if not r.get("error")}
        write_jsonl(done.values(), path)
    return done


def _append(fh: IO[str], row: dict[str, Any]) -> None:
    """Append one row durably: a kill after this returns never loses it."""
    fh.write(dumps_row(row))
    fh.flush()
    os.fsync(fh.fileno())


def _worker_init(settings: PrepSettings) -> None:
    global _SETTINGS
    import cv2

    cv2.setNumThreads(1)  # one OpenCV thread per worker: the workers are the parallelism
    _SETTINGS = settings
    _analyzer(settings)


# The settings of this worker process (set once by the pool's initializer: the feature model loads once per worker).
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
                except OSError as e:
                    if e.errno in DISK_FULL:
                        raise
                    yield _row(clip.id, error=f"worker failed: {type(e).__name__}: {e}")
                except Exception as e:  # noqa: BLE001 - a dead worker is this clip's error, not the batch's
                    yield _row(clip.id, error=f"worker failed: {type(e).__name__}: {e}")


def _make_feature_fn(model: str | None) -> FeatureFn:
    """Encoder features of a clip for ``cache_features``: the frozen towers of the saved model in ``model``.

    Args:
        model: a saved affectllm model directory (e.g. a training stage's ``output_dir``).

    Returns:
        A picklable :class:`~affectllm.inputs.features.EncoderFeatureFn` (loaded once here, once per worker).

    Raises:
        FeatureCacheError: ``model`` is not given or is not a model directory.
    """
    from .features import FeatureCacheError, encoder_feature_fn  # torch: only when features are cached

    if not model:
        raise FeatureCacheError("cache_features needs --model MODEL_DIR (a saved affectllm model whose encoders make "
                                "the features), or run without --cache-features")
    return encoder_feature_fn(model)


def prep_main(manifest: str, out: str, config: PrepConfig | None = None, feature_fn: FeatureFn | None = None,
              roots: Sequence[str] | None = None) -> int:
    """Prepare every clip of a manifest into ``out`` (see the module docs for what is written).

    Args:
        manifest: JSONL manifest (DESIGN.md §3), read with :func:`affectllm.data.manifest.read_manifest` (rows
            keep ``extra``, so ``start``/``end`` windows reach the decoder; bad rows are printed with their line).
        out: output folder (created).
        config: what to do (defaults: :class:`PrepConfig`).
        feature_fn: ``DecodedClip -> {name: array}`` run in the worker (picklable when workers > 1), in place of
            the model features of ``config.cache_features``.
        roots: folders media may lie in (:func:`affectllm.data.roots.media_roots`; the CLI's default is the
            manifest's folder); None: anywhere.

    Returns:
        0 when every row is fine, 1 when any item (now or earlier) failed or the manifest has no row, 2 when
        nothing could start or the disk filled up.
    """
    config = config or PrepConfig()
    try:
        clips, problems = read_manifest(manifest, strict=False, roots=roots)
    except OSError as e:
        print(f"error: cannot read manifest {manifest}: {e}", file=sys.stderr)
        return 2
    errors = [str(p) for p in problems if p.is_error]
    for p in errors:
        print(p, file=sys.stderr)
    if config.cache_features and feature_fn is None:
        from .features import FeatureCacheError

        try:
            feature_fn = _make_feature_fn(config.model)
        except FeatureCacheError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    if config.faces:
        from ..media.faces import FaceBackendError, check_available

        try:
            check_available()
        except FaceBackendError as e:
            print(f"error: {e} (or run with --no-faces)", file=sys.stderr)
            return 2
    try:
        reuse = _reusable(config.arrays_from, out) if config.arrays_from else {}
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    settings = PrepSettings(out=out, decode=config.decode_config(), faces=config.faces, face_size=config.face_size,
                            feature_fn=feature_fn, arrays_from=config.arrays_from, reuse=reuse)
    outdir = Path(out)
    (outdir / "arrays").mkdir(parents=True, exist_ok=True)
    if feature_fn is not None:
        (outdir / "features").mkdir(exist_ok=True)
    with open(outdir / ".prep.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"error: another `affectllm data prep` is writing {out}; wait for it or use another --out",
                  file=sys.stderr)
            return 2
        try:
            return _prep_locked(clips, settings, config, bool(errors))
        except OSError as e:
            if e.errno not in DISK_FULL:
                raise
            print(f"error: cannot write to {out}: {e.strerror} ({e.filename or 'prep.jsonl'}); every row written "
                  "so far is kept: free space and run the same command again (it resumes)", file=sys.stderr)
            return 2


def _one_by_one(clips: list[Clip], settings: PrepSettings, marker: Path) -> Iterator[dict[str, Any]]:
    """Rows of ``clips`` prepared in this process, each clip's id written to ``marker`` while it is in flight."""
    for clip in clips:
        write_text(marker, clip.id)
        yield process_clip(clip, settings)


def _prep_locked(clips: list[Clip], settings: PrepSettings, config: PrepConfig, bad_manifest: bool) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.text import Text

    if not clips and not bad_manifest:
        print("warning: the manifest has no row (empty, or blank lines only); nothing to prepare", file=sys.stderr)
        return 1
    journal = Path(settings.out, PREP_FILE)
    for tmp in (p for sub in ("arrays", "features") for p in Path(settings.out, sub).glob(".*.tmp")):
        tmp.unlink()  # an array file a kill cut short (atomic_write's temporary): no row points at it
    done = load_done(journal)
    retried = {i for i, r in done.items() if r.get("error")} if config.retry_errors else set()
    if retried:
        done = load_done(journal, drop_errors=True)
    todo = [c for c in clips if c.id not in done]
    failed = sum(1 for c in clips if c.id in done and done[c.id].get("error"))
    print(f"data prep: {len(clips)} clips, {len(clips) - len(todo)} already done, {len(todo)} to do", file=sys.stderr)
    marker = Path(settings.out, INFLIGHT_FILE)
    if config.workers > 1:
        rows: Iterator[dict[str, Any]] = _run_parallel(todo, settings, config.workers)
    else:
        # the clip in flight when the last run died, and failed clips being retried, may be what killed it: they
        # run in a worker process, where a crash is their row's error instead of the job's end
        suspects = retried | ({marker.read_text(encoding="utf-8")} if marker.is_file() else set())
        risky = [c for c in todo if c.id in suspects]
        rows = itertools.chain(_run_parallel(risky, settings, 1) if risky else (),
                               _one_by_one([c for c in todo if c.id not in suspects], settings, marker))
    columns = (TextColumn("prep"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with (Progress(*columns, disable=not config.progress, transient=True) as bar,
          open(journal, "a", encoding="utf-8") as fh):
        task = bar.add_task("prep", total=len(todo))
        for row in rows:
            _append(fh, row)
            failed += bool(row.get("error"))
            if row.get("error"):  # Text, not markup: ids, paths and errors come from the data
                bar.console.print(Text.assemble(("failed", "red"), f" {row['id']}: {row['error']}"), soft_wrap=True)
            bar.advance(task)
    marker.unlink(missing_ok=True)
    print(f"data prep: {len(clips) - failed} ok, {failed} failed; rows in {journal}", file=sys.stderr)
    return 1 if failed or bad_manifest else 0
