"""The one JSONL reader and the one atomic writer of the package (pure Python).

Every file affectllm writes (manifests, prep rows, label shards, recipes, calibration maps, model configs) goes
through :func:`atomic_write`: a temporary file in the target's folder, flushed and fsynced, then ``os.replace``d over
the target, so a reader (or a resumed job) sees the old file or the new one, never half of one. Every JSONL file is
read through :func:`iter_jsonl`, which turns each unreadable line into a :class:`LineError` (line number, cause,
what to do) instead of raising, so one bad line never takes down a whole batch.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class LineError:
    """Why line ``line`` (1-based) of a JSONL file could not be read, and what to do about it."""

    line: int
    message: str
    hint: str
    torn: bool = False


def iter_jsonl(path: PathLike) -> Iterator[tuple[int, Any, LineError | None]]:
    """Yield ``(line_number, value, error)`` for every non-blank line of a JSONL file.

    ``value`` is the parsed JSON, or None when the line could not be read; ``error`` then says why: bad UTF-8,
    invalid JSON, JSON nested too deeply to parse, or a torn last line (no newline: the mark of an interrupted
    write, ``error.torn``). A UTF-8 byte-order mark on the first line and CRLF line ends are accepted.

    Raises:
        OSError: the file cannot be opened.
    """
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield number, None, LineError(number, f"not UTF-8 ({err.reason} at byte {err.start})",
                                              "re-save the file as UTF-8")
                continue
            try:
                yield number, json.loads(text), None
            except json.JSONDecodeError as err:
                torn = not raw.endswith(b"\n")
                msg = "torn last line (no newline): the write was interrupted" if torn else f"invalid JSON: {err.msg}"
                hint = "re-run the step that wrote it, or delete this line" if torn else f"fix column {err.colno}"
                yield number, None, LineError(number, msg, hint, torn=torn)
            except RecursionError:
                yield number, None, LineError(number, "JSON nested too deeply to read",
                                              "write each row as one flat JSON object")


def read_jsonl(path: PathLike) -> tuple[list[tuple[int, Any]], list[LineError]]:
    """A whole JSONL file: ``([(line_number, value), ...], errors)``; unreadable lines become errors."""
    rows: list[tuple[int, Any]] = []
    errors: list[LineError] = []
    for number, value, error in iter_jsonl(path):
        if error is not None:
            errors.append(error)
        else:
            rows.append((number, value))
    return rows, errors


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; on a clean exit it replaces ``path`` atomically.

    On an exception the temporary file is removed and ``path`` is left as it was. Text mode writes UTF-8 with
    ``\\n`` line ends. The parent folder is created when missing.

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
    >>> with atomic_write(target) as fh:
    ...     _ = fh.write("done")
    >>> target.read_text()
    'done'
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode {mode!r} must be 'w' or 'wb'")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        kwargs: dict[str, Any] = {} if "b" in mode else {"encoding": "utf-8", "newline": "\n"}
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_write(path) as fh:
        fh.write(text)


def dumps_row(row: Any) -> str:
    """One JSONL line for ``row`` (UTF-8 kept as is, no newline inside, newline at the end)."""
    return json.dumps(row, ensure_ascii=False) + "\n"


def write_jsonl(rows: Iterable[Any], path: PathLike) -> int:
    """Write JSON values one a line, atomically. Returns the number of lines written."""
    count = 0
    with atomic_write(path) as fh:
        for row in rows:
            fh.write(dumps_row(row))
            count += 1
    return count
