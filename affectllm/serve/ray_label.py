"""``affectllm label --engine ray``: the same rows from Ray Data, with one engine per actor (a GPU each when the
cluster has GPUs).

``ray.data.read_text`` reads the manifest (or OpenAI Batch request file) line by line; a task stage tags each line
with its chunk (``position // batch_size``, as the torch path cuts the manifest) and drops chunks that are already
done; ``groupby("chunk").map_groups`` hands each chunk to a stateful :class:`LabelActor`, which loads the engine once,
decodes the chunk and generates it in one call, so every clip is generated beside the same neighbours as in the torch
path and the rows are the same. The driver streams the rows into its own shard (``shard-ray.jsonl``), so resume,
``--retry-errors``, the fingerprint check and the merge are those of :mod:`affectllm.serve.label`. The model folder
and the media must be readable at the same paths on every node (shared storage).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ..jsonl import dumps_row
from . import shards
from .chunks import label_chunk
from .engine import Engine, GenerationOptions
from .media_policy import ChunkDecoder


def _line_id(line: str, input_format: str) -> str | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None
    key = row.get("custom_id" if input_format == "openai-batch" else "id") if isinstance(row, dict) else None
    return None if key is None else str(key).strip()


def tag_chunks(batch: dict[str, np.ndarray], positions: dict[str, int], todo_chunks: set[int], batch_size: int,
               input_format: str) -> dict[str, np.ndarray]:
    """Keep the lines of chunks still to do, tagged with their chunk (a Ray task; lines of bad rows are dropped)."""
    keep, chunk = [], []
    for line in batch["text"]:
        key = _line_id(str(line), input_format)
        if key in positions and positions[key] // batch_size in todo_chunks:
            keep.append(str(line))
            chunk.append(positions[key] // batch_size)
    return {"text": np.asarray(keep, dtype=object), "chunk": np.asarray(chunk, dtype=np.int64)}


class LabelActor:
    """One engine per actor; each call labels one chunk (a group of lines) and returns its new rows as JSON lines."""

    def __init__(self, model: str, num_frames: int | None, batch_size: int, question: str | None,
                 gen: dict[str, Any], input_format: str, base: str, positions: dict[str, int],
                 questions: dict[str, str], done: set[str]) -> None:
        self.engine = Engine.load(model, num_frames=num_frames)
        self.engine.batch_size = batch_size
        self.question, self.gen = question, GenerationOptions(**gen)
        self.input_format, self.base = input_format, Path(base)
        self.positions, self.questions, self.done = positions, questions, done

    def _clip(self, line: str) -> Any:
        row = json.loads(line)
        if self.input_format == "openai-batch":
            from .openai_batch import request_to_clip

            return request_to_clip(row, self.base)[0]
        from ..data.manifest import row_to_clip

        return row_to_clip(row, self.base)

    def __call__(self, group: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        clips = sorted((self._clip(str(line)) for line in group["text"]), key=lambda c: self.positions[c.id])
        items = ChunkDecoder([clips], self.engine.media)[0]
        rows = label_chunk(self.engine, items, self.question, self.gen, self.questions)
        return {"row": np.asarray([dumps_row(r) for r in rows if r["id"] not in self.done], dtype=object)}


def run_ray(job: Any, inputs: Any, out: Path, done: set[str]) -> int:
    """Label the job's chunks not yet done on Ray (local unless ``job.ray_address``); returns rows written.

    Raises:
        RuntimeError: Ray is not installed.
    """
    try:
        import ray
    except ImportError as err:
        raise RuntimeError("--engine ray needs Ray Data: pip install -e '.[ray]' (or use --engine torch)") from err

    if not ray.is_initialized():
        ray.init(address=job.ray_address, include_dashboard=False, log_to_driver=False)
    positions = {c.id: i for i, c in enumerate(inputs.clips)}
    todo_chunks = {positions[c.id] // job.batch_size for c in inputs.clips if c.id not in done}
    if not todo_chunks:
        return 0
    resources = ray.cluster_resources()
    gpus = 1 if resources.get("GPU", 0) >= 1 else 0
    # The actor pool starts first and keeps its CPUs: leave one for the read and shuffle tasks, or they never run.
    cpus = min(1.0, max(resources.get("CPU", 1) - 1, 0.1) / job.ray_workers)
    ds = ray.data.read_text(str(Path(job.manifest).resolve()))
    ds = ds.map_batches(tag_chunks, fn_kwargs={"positions": positions, "todo_chunks": todo_chunks,
                                               "batch_size": job.batch_size, "input_format": job.input_format})
    kwargs = {"model": str(Path(job.model).resolve()), "num_frames": job.num_frames, "batch_size": job.batch_size,
              "question": job.question, "gen": asdict(job.gen), "input_format": job.input_format,
              "base": str(Path(job.manifest).resolve().parent), "positions": positions,
              "questions": inputs.questions, "done": done}
    ds = ds.groupby("chunk").map_groups(LabelActor, fn_constructor_kwargs=kwargs, concurrency=job.ray_workers,
                                        num_cpus=cpus, num_gpus=gpus)
    made = 0
    with shards.ShardWriter(out, "ray") as writer:
        for batch in ds.iter_batches(batch_format="numpy"):
            rows = [json.loads(line) for line in batch["row"]]
            writer.write(rows)
            made += len(rows)
    return made
