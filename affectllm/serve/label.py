"""``affectllm label MANIFEST --model DIR --out OUT``: label-output rows for every clip, resumable and sharded.

The manifest is cut into fixed chunks of ``batch_size`` clips in manifest order; a chunk is the unit of work (one
generate call), so a clip is always generated next to the same neighbours and an interrupted, resumed or re-sharded
job gives the same rows as a straight run. Under ``torchrun``/``accelerate launch`` rank ``r`` of ``w`` takes the
chunks ``k`` with ``k % w == r``; rank 0 prepares the folder (fingerprint, torn-line repair) before and merges after.
Decoding runs in a torch DataLoader's worker processes (``num_workers``, one chunk per item) while the main process
generates. Files and resume semantics: :mod:`affectllm.serve.shards`; Ray Data: :mod:`affectllm.serve.ray_label`.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data.manifest import read_manifest
from ..data.roots import media_roots
from ..errors import UserError
from ..types import Clip
from . import shards
from .args import FORMATS, generation_from_args
from .chunks import label_chunk
from .engine import Engine, GenerationOptions, ModelSettings
from .media_policy import ChunkDecoder, Decoded


@dataclass
class LabelJob:
    """Everything one ``affectllm label`` run needs (the CLI's arguments)."""

    manifest: str
    model: str
    out: str
    batch_size: int = 8
    num_workers: int = 2
    retry_errors: bool = False
    fresh: bool = False
    engine: str = "torch"
    input_format: str = "manifest"
    output_format: str = "manifest"
    question: str | None = None
    gen: GenerationOptions = field(default_factory=GenerationOptions)
    num_frames: int | None = None
    progress: bool = True
    ray_address: str | None = None
    ray_workers: int = 2
    allow_roots: list[str] = field(default_factory=list)


@dataclass
class Inputs:
    """The clips of a job in input order, per-clip questions (OpenAI batch input), and unreadable rows."""

    clips: list[Clip]
    questions: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def read_inputs(path: str, input_format: str, allow_roots: Sequence[str] = ()) -> Inputs:
    """Read a manifest or an OpenAI Batch request file (bad rows become ``problems`` naming their line).

    A manifest's media must lie in its folder, ``allow_roots`` or the folders its roots file lists
    (:func:`affectllm.data.roots.media_roots`): a ``../``, absolute or symlinked path out of them is a problem row,
    as in ``data check``, ``data prep`` and training."""
    if Path(path).is_dir():
        raise UserError(f"{path}: is a folder; pass the manifest file (JSONL), e.g. {Path(path) / 'manifest.jsonl'}")
    if input_format == "openai-batch":
        from .openai_batch import read_requests

        clips, questions, problems = read_requests(path)
        return Inputs(clips, questions, problems)
    clips, problems = read_manifest(path, strict=False, roots=media_roots(path, allow_roots))
    return Inputs(clips, problems=[str(p) for p in problems if p.is_error])


def chunked(clips: Sequence[Clip], size: int) -> list[list[Clip]]:
    """Fixed chunks of ``size`` clips in order (the job's units of work)."""
    return [list(clips[i:i + size]) for i in range(0, len(clips), size)]


def _as_is(item: list[Decoded]) -> list[Decoded]:
    return item  # DataLoader's default collate would turn the frames into tensors


def _worker_init(_: int) -> None:
    import cv2

    cv2.setNumThreads(1)  # the workers are the parallelism (as in data prep)


def _worker_context() -> Any:
    import multiprocessing as mp

    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["affectllm.serve.media_policy", "affectllm.media.pipeline", "cv2", "av"])
    return ctx


def _dist() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _device() -> str | None:
    if torch.cuda.is_available():
        return f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    return None


def _record(job: LabelJob, settings: ModelSettings, fingerprint: str) -> dict[str, Any]:
    return {"fingerprint": fingerprint, "model": str(Path(job.model).resolve()), "manifest": job.manifest,
            "question": settings.question(job.question), "generation": asdict(job.gen),
            "media": settings.media.describe(), "batch_size": job.batch_size}


def _prepare_all(job: LabelJob, out: Path, record: dict[str, Any], rank: int, world: int) -> str | None:
    """Rank 0 prepares the folder; every rank learns whether it may go on (None) or why not."""
    error = None
    if rank == 0:
        try:
            shards.prepare(out, record, job.fresh, job.retry_errors)
        except shards.JobMismatchError as err:
            error = str(err)
    if world > 1:
        box = [error]
        torch.distributed.broadcast_object_list(box, src=0)
        error = box[0]
    return error


def _progress(enabled: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task: Any) -> Text:
            return Text(f"{task.speed or 0:.2f} clips/s")

    return Progress(TextColumn("label"), BarColumn(), MofNCompleteColumn(), Rate(), TimeRemainingColumn(),
                    disable=not enabled, transient=True)


def _load_engine(job: LabelJob) -> Engine:
    engine = Engine.load(job.model, device=_device(), num_frames=job.num_frames)
    engine.batch_size = job.batch_size
    return engine


def run_torch(job: LabelJob, settings: ModelSettings, inputs: Inputs, out: Path, done: set[str], rank: int,
              world: int) -> int:
    """This rank's share of the chunks: decode in DataLoader workers, generate here, append to its shard.

    The workers start (and decode the first chunks) before the model loads, so a slow load hides their start-up.
    """
    mine = [ch for k, ch in enumerate(chunked(inputs.clips, job.batch_size))
            if k % world == rank and any(c.id not in done for c in ch)]
    todo = sum(c.id not in done for ch in mine for c in ch)
    if not mine:
        return 0
    workers = {"num_workers": job.num_workers}
    if job.num_workers:
        # Not fork: a forked worker inherits this process's mediapipe graphs and torch threads (it crashed so).
        workers.update(prefetch_factor=2, worker_init_fn=_worker_init, multiprocessing_context=_worker_context())
    loader = torch.utils.data.DataLoader(ChunkDecoder(mine, settings.media), batch_size=None, shuffle=False,
                                         collate_fn=_as_is, **workers)
    from rich.text import Text

    batches = iter(loader)
    engine = _load_engine(job)
    made = 0
    with shards.ShardWriter(out, f"{rank:05d}") as writer, _progress(job.progress and rank == 0) as bar:
        task = bar.add_task("label", total=todo)
        for items in batches:
            rows = [r for r in label_chunk(engine, items, job.question, job.gen, inputs.questions)
                    if r["id"] not in done]
            writer.write(rows)
            made += len(rows)
            for r in rows:
                if r["error"]:
                    bar.console.print(Text.assemble(("error", "red"), f" {r['id']}: {r['error']}"))  # data, not markup
            bar.advance(task, len(rows))
    return made


def summary(rows: Sequence[dict[str, Any]], total: int, skipped: int, made: int, seconds: float) -> str:
    """The end-of-job report: counts, errors, label histogram, clips/s."""
    errors = [r for r in rows if r.get("error")]
    hist = Counter(label for r in rows if not r.get("error") for label in r.get("labels", []))
    lines = [f"label: {total} clips in the input, {len(rows)} rows ({skipped} done before, {made} now), "
             f"{len(errors)} errors, {made / max(seconds, 1e-9):.2f} clips/s this run ({seconds:.1f} s)"]
    lines += [f"  error {r['id']}: {r['error']}" for r in errors[:10]]
    if hist:
        lines.append("  labels: " + ", ".join(f"{k} {v}" for k, v in hist.most_common(10)))
    return "\n".join(lines)


def label_main(job: LabelJob) -> int:
    """Run a label job (see the module docs); returns 0, 1 when any row or input row failed, 2 when it cannot run."""
    if job.input_format not in FORMATS or job.output_format not in FORMATS:
        raise ValueError(f"formats must be one of {', '.join(FORMATS)}")
    rank, world = _dist()
    if world > 1 and not torch.distributed.is_initialized():
        from datetime import timedelta

        torch.distributed.init_process_group("gloo", timeout=timedelta(hours=24))  # control messages only
    try:
        return _run(job, rank, world)
    finally:
        if world > 1:
            torch.distributed.destroy_process_group()


def _run(job: LabelJob, rank: int, world: int) -> int:
    start = time.perf_counter()  # clips/s of the whole job: model load and worker start-up included
    inputs = read_inputs(job.manifest, job.input_format, job.allow_roots)
    if rank == 0:
        for p in inputs.problems:
            print(p, file=sys.stderr)
    if not inputs.clips:
        if rank == 0:
            why = "no readable row" if inputs.problems else "no rows (empty or blank lines only)"
            print(f"affectllm label: error: {job.manifest}: {why}; nothing to label", file=sys.stderr)
        return 1
    out = Path(job.out)
    settings = ModelSettings.read(job.model, job.num_frames)
    fingerprint = settings.fingerprint(job.question, job.gen)
    error = _prepare_all(job, out, _record(job, settings, fingerprint), rank, world)
    if error:
        if rank == 0:
            print(f"affectllm label: error: {error}", file=sys.stderr)
        return 2
    done = set(shards.read_rows(out))
    skipped = sum(c.id in done for c in inputs.clips)
    if job.engine == "ray":
        from .ray_label import run_ray

        made = run_ray(job, inputs, out, done)
    else:
        made = run_torch(job, settings, inputs, out, done, rank, world)
    if world > 1:
        torch.distributed.barrier()
    if rank != 0:
        return 0
    rows = shards.merge(out, [c.id for c in inputs.clips])
    if job.output_format == "openai-batch":
        from .openai_batch import write_responses

        write_responses(rows, out / "batch_output.jsonl")
    new = len(rows) - skipped if world > 1 else made
    print(summary(rows, len(inputs.clips), skipped, new, time.perf_counter() - start), file=sys.stderr)
    print(f"label: rows in {out / shards.LABELS_FILE}", file=sys.stderr)
    return 1 if inputs.problems or any(r.get("error") for r in rows) else 0


def run_from_args(args: Any) -> int:
    """Run :func:`label_main` from parsed :func:`affectllm.serve.args.add_label_arguments` arguments."""
    return label_main(LabelJob(
        manifest=args.manifest, model=args.model, out=args.out, batch_size=args.batch_size,
        num_workers=args.num_workers, retry_errors=args.retry_errors, fresh=args.fresh, engine=args.engine,
        input_format=args.input_format, output_format=args.output_format, question=args.question,
        gen=generation_from_args(args), num_frames=args.num_frames, progress=not args.no_progress,
        ray_address=args.ray_address, ray_workers=args.ray_workers, allow_roots=list(args.allow_root)))
