"""The clip manifest (DESIGN.md §3): schema, validation, reading and atomic writing.

A manifest is JSONL, one clip a line::

    {"id": "c1", "video": "clips/c1.mp4", "labels": ["happy", "excited"], "aus": ["AU6", "AU12"], "split": "train"}

Fields: ``id`` (required), ``video``/``audio``/``transcript`` (at least one), ``caption``, ``labels`` (a list of
open-vocabulary words), ``emotion`` (one label), ``aus`` (FACS codes), ``valence``/``arousal`` (numbers in
[-1, 1]), ``split``, ``source``, ``start``/``end`` (seconds). Media paths are relative to the manifest file's folder
(absolute paths are kept).

``start``/``end`` make the row a time window ``[start, end)`` of its media (an utterance in a dialog recording, a
window of a long AU-coded video): numbers >= 0, ``end > start`` when both are given, either may be left out (from
the file's start / to its end). They are validated here but stay in :attr:`Clip.extra` (``clip.extra["start"]``),
where the decoder reads them (:func:`affectllm.media.decode.clip_window`).

Decisions (the contract was silent on these):

* Unknown keys are kept, in :attr:`Clip.extra`, so loaders and users can carry their own columns (MOSI's sentiment
  score, a speaker). A key that looks like a misspelt known key (``lables``) gets a *warning*.
* ``null`` means absent. An empty transcript counts as no transcript.
* AU codes are normalised by :func:`affectllm.taxonomy.facs.normalize_au` (``AU04``, ``au4``, ``4`` -> ``AU4``), the
  normaliser the parser and the metrics use; a number FACS does not define (``AU3``) is an error on its line and
  field (``aus[i]``), as any other non-AU value, since the metrics could not score it. Labels are stripped of
  surrounding white space.
* A numeric ``id`` is accepted and turned into a string; duplicate ids are errors on the later line (the first
  occurrence wins).
* Blank lines are skipped (they are not rows); a line that is not a JSON object is an error.
* Warnings never fail a read, even in strict mode; errors drop the row from the result and are returned (lenient)
  or raised all together after the whole file was read (strict).
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from affectllm import jsonl
from affectllm.data.roots import media_roots, outside, roots_file, write_roots
from affectllm.errors import UserError
from affectllm.jsonl import write_jsonl
from affectllm.taxonomy.facs import normalize_au
from affectllm.types import Clip

log = logging.getLogger(__name__)

MEDIA_FIELDS: tuple[str, ...] = ("video", "audio")
CONTENT_FIELDS: tuple[str, ...] = ("video", "audio", "transcript")
TEXT_FIELDS: tuple[str, ...] = ("transcript", "caption", "emotion", "split", "source")
SCORE_FIELDS: tuple[str, ...] = ("valence", "arousal")
WINDOW_FIELDS: tuple[str, ...] = ("start", "end")
"""Contract keys kept in :attr:`Clip.extra` (the :class:`Clip` type has no field for them)."""
KNOWN_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Clip) if f.name != "extra")
"""The manifest keys that are :class:`Clip` fields (every other key of a row goes to ``Clip.extra``)."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one line of a JSONL file.

    Attributes:
        line: 1-based line number (0 when the problem is about the whole file).
        field: the field at fault (``"labels[2]"``), ``"json"`` for an unreadable line, ``"file"`` for the file.
        message: what is wrong.
        hint: what to do about it.
        severity: ``"error"`` (the row is unusable) or ``"warning"`` (the row is kept).
        id: the row's id when it could be read.
        path: the file the line belongs to.
    """

    line: int
    field: str
    message: str
    hint: str = ""
    severity: str = "error"
    id: str | None = None
    path: str | None = None

    @property
    def is_error(self) -> bool:
        """True for errors, False for warnings."""
        return self.severity == "error"

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.path else f"line {self.line}"
        ident = f" (id {self.id!r})" if self.id is not None else ""
        hint = f"; {self.hint}" if self.hint else ""
        return f"{where}{ident}: {self.severity}: {self.field}: {self.message}{hint}"


class ManifestError(ValueError):
    """Raised by strict reads; carries every problem found."""

    def __init__(self, problems: list[Problem], limit: int = 20) -> None:
        self.problems = problems
        shown = "\n".join(f"  {p}" for p in problems[:limit])
        more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
        super().__init__(f"{len(problems)} problem(s) in manifest:\n{shown}{more}")


def iter_jsonl(path: str | os.PathLike[str]) -> Iterator[tuple[int, Any, Problem | None]]:
    """:func:`affectllm.jsonl.iter_jsonl` with each unreadable line as a manifest :class:`Problem` (field
    ``json``)."""
    path_s = str(path)
    for number, value, error in jsonl.iter_jsonl(path):
        problem = None if error is None else Problem(number, "json", error.message, error.hint, path=path_s)
        yield number, value, problem


def read_jsonl(path: str | os.PathLike[str]) -> tuple[list[tuple[int, Any]], list[Problem]]:
    """Read a whole JSONL file: ``([(line_number, value), ...], problems)``; unreadable lines become problems."""
    rows, errors = jsonl.read_jsonl(path)
    return rows, [Problem(e.line, "json", e.message, e.hint, path=str(path)) for e in errors]


def _check_scalars(row: dict[str, Any], err: Any) -> None:
    for key in TEXT_FIELDS + MEDIA_FIELDS:
        value = row.get(key)
        if value is not None and not isinstance(value, str):
            err(key, f"must be a string, got {type(value).__name__} {value!r}", "write it as a JSON string")
        elif key in MEDIA_FIELDS and isinstance(value, str) and not value.strip():
            err(key, "is an empty path", f"remove '{key}' or give the file's path")
    for key in SCORE_FIELDS:
        value = row.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            err(key, f"must be a number in [-1, 1], got {value!r}", "write a JSON number")
        elif not -1.0 <= value <= 1.0:
            err(key, f"{value} is outside [-1, 1]", "rescale it (e.g. MOSI's [-3, 3] / 3)")


def _check_window(row: dict[str, Any], err: Any) -> None:
    values = {}
    for key in WINDOW_FIELDS:
        value = row.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            err(
                key,
                f"must be a number of seconds >= 0, got {value!r}",
                "write seconds into the media file as a JSON number (a time stamp that is not a window, such as "
                "MELD's episode times, belongs under another key)",
            )
        elif value < 0:
            err(key, f"{value} is negative", "write seconds >= 0 from the start of the media file")
        else:
            values[key] = value
    if len(values) == 2 and values["end"] <= values["start"]:
        err("end", f"{values['end']} is not after start {values['start']}: an empty window", "make end > start")


def _check_lists(row: dict[str, Any], err: Any) -> None:
    labels = row.get("labels")
    if labels is not None:
        if not isinstance(labels, list):
            err("labels", f"must be a list of strings, got {type(labels).__name__}", 'write e.g. ["happy", "calm"]')
        else:
            for i, label in enumerate(labels):
                if not isinstance(label, str) or not label.strip():
                    err(f"labels[{i}]", f"must be a non-empty string, got {label!r}", "remove or fix the label")
    aus = row.get("aus")
    if aus is not None:
        if not isinstance(aus, list):
            err("aus", f"must be a list of AU codes, got {type(aus).__name__}", 'write e.g. ["AU6", "AU12"]')
        else:
            for i, code in enumerate(aus):
                if normalize_au(code) is None:
                    err(f"aus[{i}]", f"{code!r} is not a FACS Action Unit code",
                        'write FACS codes like "AU12" (FACS has no AU3 or AU40; see affectllm.taxonomy.AU_NAMES)')


def validate_row(row: Any, line: int, path: str | None = None) -> list[Problem]:
    """All problems of one manifest row (errors and warnings); an empty list means the row is fine.

    >>> [p.field for p in validate_row({"id": "a", "valence": 2, "aus": ["AU6", "x"]}, 3)]
    ['valence', 'aus[1]', 'video/audio/transcript']
    """
    problems: list[Problem] = []
    if not isinstance(row, dict):
        return [
            Problem(
                line,
                "json",
                f"a row must be a JSON object, got {type(row).__name__}",
                'write {"id": ..., "video": ...}',
                path=path,
            )
        ]
    ident = row.get("id")
    shown_id = str(ident) if isinstance(ident, (str, int)) and not isinstance(ident, bool) else None

    def err(key: str, message: str, hint: str = "", severity: str = "error") -> None:
        problems.append(Problem(line, key, message, hint, severity, shown_id, path))

    if ident is None:
        err("id", "missing", 'add a unique "id"')
    elif isinstance(ident, bool) or not isinstance(ident, (str, int)) or not str(ident).strip():
        err("id", f"must be a non-empty string, got {ident!r}", "use a unique string id")
    _check_scalars(row, err)
    _check_window(row, err)
    _check_lists(row, err)
    has_content = any(isinstance(row.get(k), str) and row[k].strip() for k in CONTENT_FIELDS)
    if not has_content:
        err("video/audio/transcript", "the row has none of them", "give at least one")
    for key in row:
        if key not in KNOWN_FIELDS + WINDOW_FIELDS:
            close = difflib.get_close_matches(key, KNOWN_FIELDS + WINDOW_FIELDS, n=1, cutoff=0.8)
            if close:
                err(
                    key,
                    f"unknown key, kept in extra; did you mean {close[0]!r}?",
                    f"rename it to {close[0]!r}",
                    "warning",
                )
    return problems


def _resolve(value: str | None, base: Path) -> str | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else base / path)


def row_to_clip(row: dict[str, Any], base_dir: str | os.PathLike[str] = ".") -> Clip:
    """Build a :class:`Clip` from a *valid* row, resolving media paths against ``base_dir``."""
    base = Path(base_dir)
    labels = [s.strip() for s in row["labels"]] if row.get("labels") is not None else None
    aus = [normalize_au(a) for a in row["aus"]] if row.get("aus") is not None else None
    transcript = row.get("transcript")
    return Clip(
        id=str(row["id"]).strip(),
        video=_resolve(row.get("video"), base),
        audio=_resolve(row.get("audio"), base),
        transcript=transcript if transcript and transcript.strip() else None,
        caption=row.get("caption"),
        labels=labels,
        emotion=row["emotion"].strip() if row.get("emotion") else None,
        aus=list(dict.fromkeys(a for a in aus if a)) if aus is not None else None,
        valence=float(row["valence"]) if row.get("valence") is not None else None,
        arousal=float(row["arousal"]) if row.get("arousal") is not None else None,
        split=row.get("split"),
        source=row.get("source"),
        extra={k: v for k, v in row.items() if k not in KNOWN_FIELDS},
    )


def _escapes(clip: Clip, line: int, path: str, roots: Sequence[str]) -> list[Problem]:
    """An error per media path of ``clip`` that leads outside every root (``..``, absolute, or a symlink)."""
    out = []
    for key in MEDIA_FIELDS:
        value = getattr(clip, key)
        real = outside(value, roots) if value else None
        if real is not None:
            out.append(Problem(
                line, key, f"{value[:300]} leads to {real[:300]}, outside the manifest's folder and the allowed roots",
                f"move the file under {roots[0]}, or allow its folder (--allow-root DIR, or a line in "
                f"{roots_file(path).name})", id=clip.id, path=path))
    return out


def iter_manifest(path: str | os.PathLike[str], roots: Sequence[str] | None = None
                  ) -> Iterator[tuple[int, Clip | None, list[Problem]]]:
    """Yield ``(line_number, clip_or_None, problems)`` per non-blank line; ``clip`` is None when the row has errors.

    Duplicate ids are errors on every occurrence after the first.

    Args:
        path: the manifest.
        roots: when given, a media path leading outside every one of these folders is an error on its field
            (:func:`affectllm.data.roots.media_roots` gives the default list); None reads any path.
    """
    base = Path(path).resolve().parent
    first_line: dict[str, int] = {}
    for number, value, problem in iter_jsonl(path):
        if problem is not None:
            yield number, None, [problem]
            continue
        problems = validate_row(value, number, str(path))
        if roots is not None and not any(p.is_error for p in problems):
            problems += _escapes(row_to_clip(value, base), number, str(path), roots)
        if any(p.is_error for p in problems):
            yield number, None, problems
            continue
        clip = row_to_clip(value, base)
        if clip.id in first_line:
            problems.append(
                Problem(
                    number,
                    "id",
                    f"duplicate id (first on line {first_line[clip.id]})",
                    "make ids unique",
                    id=clip.id,
                    path=str(path),
                )
            )
            yield number, None, problems
            continue
        first_line[clip.id] = number
        yield number, clip, problems


def read_manifest(path: str | os.PathLike[str], strict: bool = True, roots: Sequence[str] | None = None
                  ) -> tuple[list[Clip], list[Problem]]:
    """Read a manifest into clips (paths resolved against the manifest's folder) and the problems found.

    Args:
        path: the JSONL manifest.
        strict: raise :class:`ManifestError` after reading when any row has an error; when False, bad rows are
            left out of the clips and reported in the problems.
        roots: the folders media may lie in (see :func:`iter_manifest`); None: anywhere.

    Returns:
        ``(clips, problems)``; problems include warnings (which never drop a row).

    Raises:
        ManifestError: ``strict`` and at least one error.
        FileNotFoundError: no such manifest.
    """
    clips: list[Clip] = []
    problems: list[Problem] = []
    for _, clip, row_problems in iter_manifest(path, roots):
        problems.extend(row_problems)
        if clip is not None:
            clips.append(clip)
    errors = [p for p in problems if p.is_error]
    if strict and errors:
        raise ManifestError(errors)
    return clips, problems


def _relative(value: str | None, base: Path | None) -> str | None:
    if value is None or base is None:
        return value
    path = Path(value)
    if not path.is_absolute():
        return value
    try:
        return os.path.relpath(path, base)
    except ValueError:  # another drive on Windows: keep it absolute
        return value


def clip_to_row(clip: Clip, base_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The manifest row of a clip: None fields dropped, ``extra`` merged (never over a known key).

    Args:
        clip: the clip.
        base_dir: when given, absolute media paths are written relative to it (the manifest's folder).
    """
    base = Path(base_dir).resolve() if base_dir is not None else None
    row: dict[str, Any] = {k: v for k, v in clip.extra.items() if k not in KNOWN_FIELDS}
    core = {k: getattr(clip, k) for k in KNOWN_FIELDS}
    core.update({k: _relative(core[k], base) for k in MEDIA_FIELDS})
    return {**{k: v for k, v in core.items() if v is not None}, **row}


def write_manifest(rows: Iterable[dict[str, Any] | Clip], path: str | os.PathLike[str], validate: bool = True,
                   record_roots: bool = False) -> int:
    """Write a manifest atomically; :class:`Clip` items get paths relative to the manifest's folder.

    Args:
        rows: manifest rows (dicts, written as given) or clips.
        path: the JSONL file to (over)write.
        validate: check every row and raise before writing anything when one has an error.
        record_roots: write the roots file (below).

    Returns:
        The number of rows written.

    Raises:
        ManifestError: ``validate`` and a row has an error or an id repeats (line numbers are those the rows would
            have had in the file).

    With ``record_roots``, the folders outside the manifest's own that the clips' media lie in are written to its
    roots file (:func:`affectllm.data.roots.write_roots`), so ``data check`` and ``data prep`` read them
    (``data import`` does this: its manifests point into a dataset's release folder).
    """
    base = Path(path).resolve().parent
    rows = list(rows)
    out = [clip_to_row(r, base) if isinstance(r, Clip) else r for r in rows]
    if validate:
        errors: list[Problem] = []
        seen: dict[str, int] = {}
        for number, row in enumerate(out, start=1):
            errors += [p for p in validate_row(row, number, str(path)) if p.is_error]
            ident = str(row.get("id")) if isinstance(row, dict) else None
            if ident is not None and ident in seen:
                errors.append(
                    Problem(
                        number,
                        "id",
                        f"duplicate id (first on line {seen[ident]})",
                        "make ids unique",
                        id=ident,
                        path=str(path),
                    )
                )
            elif ident is not None:
                seen[ident] = number
        if errors:
            raise ManifestError(errors)
    written = write_jsonl(out, path)
    if record_roots:
        write_roots(path, [getattr(c, k) for c in rows if isinstance(c, Clip) for k in MEDIA_FIELDS if getattr(c, k)])
    return written


def select_clips(manifest: str | None, split: str | None, max_samples: int | None = None,
               seed: int = 0) -> list[Clip]:
    """Clips of ``split`` (all when None) from a manifest; bad rows are reported (with line and field) and skipped,
    rows whose media lie outside the manifest's folder and its roots file's folders among them
    (:func:`affectllm.data.roots.media_roots`).

    Raises:
        ValueError: no manifest given, or no usable clip in the split.
    """
    if not manifest:
        raise UserError("data.manifest is not set; pass data.manifest=PATH (e.g. one written by `affectllm data "
                         "synth`)")
    if Path(manifest).is_dir():
        raise UserError(f"{manifest}: is a directory, not a manifest file; give the JSONL file in it (e.g. "
                        "DIR/manifest.jsonl)")
    clips, problems = read_manifest(manifest, strict=False, roots=media_roots(manifest))
    for p in problems:
        log.warning("%s", p)
    if split:
        clips = [c for c in clips if c.split == split]
    if not clips:
        raise UserError(f"{manifest}: no usable clip in split {split!r}")
    if max_samples is not None and len(clips) > max_samples:
        clips = random.Random(seed).sample(clips, max_samples)
    return clips
