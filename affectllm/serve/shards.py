"""The files of a label job: its fingerprint record, one append-only shard per writer, the merged ``labels.jsonl``.

``OUT/job.json`` records the fingerprint (model, prompt, decoding, frame policy) the rows were made with;
``OUT/shards/shard-<name>.jsonl`` receive rows as they are made, one ``write`` + ``fsync`` per batch, so a kill at any
moment leaves whole rows plus at most one torn last line, which :func:`repair_shard` cuts off before anyone reads or
appends. Done ids are the union of the shards' rows, so a resumed job never writes an id twice. ``labels.jsonl`` is
rewritten atomically (:func:`affectllm.jsonl.write_jsonl`) in manifest order from the shards.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from ..jsonl import dumps_row, iter_jsonl, write_jsonl, write_text

JOB_FILE = "job.json"
SHARD_DIR = "shards"
LABELS_FILE = "labels.jsonl"


class JobMismatchError(ValueError):
    """``OUT`` holds rows made with another fingerprint (model, prompt, decoding or frame policy)."""


def shard_paths(out: Path) -> list[Path]:
    """Every shard of the job, in name order."""
    return sorted((out / SHARD_DIR).glob("shard-*.jsonl"))


def repair_shard(path: Path) -> int:
    """Cut a shard back to its last whole row (a kill mid-write leaves a torn tail); returns bytes removed."""
    if not path.exists():
        return 0
    data = path.read_bytes()
    good = 0
    for line in data.splitlines(keepends=True):
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):  # a deeply nested line is as unreadable as a torn one
            break
        if not line.endswith(b"\n") or not isinstance(row, dict) or "id" not in row:
            break
        good += len(line)
    if good < len(data):
        with open(path, "r+b") as fh:
            fh.truncate(good)
            fh.flush()
            os.fsync(fh.fileno())
    return len(data) - good


def read_rows(out: Path) -> dict[str, dict[str, Any]]:
    """Rows of every shard by id (the first written wins; shards must be repaired first)."""
    rows: dict[str, dict[str, Any]] = {}
    for path in shard_paths(out):
        for number, row, error in iter_jsonl(path):
            if error is not None:
                raise ValueError(f"{path}:{number}: {error.message}; {error.hint}")
            rows.setdefault(str(row["id"]), row)
    return rows


def drop_errors(out: Path) -> int:
    """Rewrite each shard (atomically) without its error rows, so ``--retry-errors`` redoes them; returns how many."""
    dropped = 0
    for path in shard_paths(out):
        rows = [row for _, row, _ in iter_jsonl(path)]
        keep = [r for r in rows if not r.get("error")]
        if len(keep) < len(rows):
            dropped += len(rows) - len(keep)
            write_jsonl(keep, path)
    return dropped


def prepare(out: Path, record: dict[str, Any], fresh: bool, retry_errors: bool) -> None:
    """Make ``out`` ready for a run with ``record["fingerprint"]`` (called once, by one process).

    Args:
        out: the job folder.
        record: what ``job.json`` holds (``fingerprint`` and what it was made of, for people).
        fresh: delete earlier rows and start over.
        retry_errors: forget earlier error rows.

    Raises:
        JobMismatchError: ``out`` has rows of another fingerprint and ``fresh`` is False.
    """
    job = out / JOB_FILE
    if fresh:
        shutil.rmtree(out / SHARD_DIR, ignore_errors=True)
        (out / LABELS_FILE).unlink(missing_ok=True)
    elif job.is_file():
        old = json.loads(job.read_text())
        if old.get("fingerprint") != record["fingerprint"]:
            raise JobMismatchError(
                f"{out} holds labels made with fingerprint {old.get('fingerprint')} (model {old.get('model')!r}, "
                f"question {old.get('question')!r}); this run's is {record['fingerprint']}: the model, prompt, "
                "decoding or frame policy differ. Use another --out, or --fresh to delete the old rows")
    (out / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    for path in shard_paths(out):
        repair_shard(path)
    if retry_errors:
        drop_errors(out)
    write_text(job, json.dumps(record, indent=2, sort_keys=True))


class ShardWriter:
    """Appends rows to one shard; each :meth:`write` is one ``write`` call followed by ``fsync``."""

    def __init__(self, out: Path, name: str) -> None:
        self.path = out / SHARD_DIR / f"shard-{name}.jsonl"
        repair_shard(self.path)
        self._fh: IO[str] = open(self.path, "a", encoding="utf-8", newline="\n")

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        text = "".join(dumps_row(r) for r in rows)
        if text:
            self._fh.write(text)
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def merge(out: Path, order: Sequence[str]) -> list[dict[str, Any]]:
    """Write ``labels.jsonl`` (atomically): the shards' rows for ``order``'s ids, in that order; returns them."""
    rows = read_rows(out)
    merged = [rows[i] for i in order if i in rows]
    write_jsonl(merged, out / LABELS_FILE)
    return merged
