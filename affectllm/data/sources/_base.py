"""Shared pieces of the source-dataset loaders: the result type, layout look-ups, tolerant CSV reading."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from affectllm.data.manifest import Problem
from affectllm.parsing import split_labels as parse_labels
from affectllm.registry import DATASETS
from affectllm.types import Clip

VIDEO_EXTS: tuple[str, ...] = (".mp4", ".avi", ".mkv", ".mov", ".flv", ".webm", ".m4v")
AUDIO_EXTS: tuple[str, ...] = (".wav", ".flac", ".mp3", ".m4a", ".ogg")
IMAGE_EXTS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass
class LoadResult:
    """What a loader made of a release folder: clips (absolute paths) and problems (label-file line numbers)."""

    clips: list[Clip] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def warn(
        self, path: Path | str, line: int, fld: str, message: str, hint: str = "", ident: str | None = None
    ) -> None:
        """Record a skipped or doubtful label row (never dropped silently)."""
        self.problems.append(Problem(line, fld, message, hint, "warning", ident, str(path)))


class LayoutError(FileNotFoundError):
    """The folder does not look like the dataset's official release; the message names what was expected."""


Loader = Callable[..., LoadResult]


def register(name: str, card: str) -> Callable[[Loader], Loader]:
    """Register a loader in :data:`DATASETS` under ``name``; ``card`` is its data card's file name."""

    def wrap(fn: Loader) -> Loader:
        fn.card = card  # type: ignore[attr-defined]
        return DATASETS.register(name, fn)

    return wrap


def found_here(root: Path, limit: int = 12) -> str:
    """What a folder holds, for layout errors: its entries and those of its sub-folders, relative, at most ``limit``.

    >>> found_here(Path("/no/such/folder"))
    'nothing (the folder does not exist)'
    """
    if not root.is_dir():
        return "nothing (the folder does not exist)"
    names: list[str] = []
    for entry in sorted(root.iterdir()):
        names.append(entry.name + ("/" if entry.is_dir() else ""))
        if entry.is_dir():
            names += [f"{entry.name}/{e.name}{'/' if e.is_dir() else ''}" for e in sorted(entry.iterdir())[:4]]
    if not names:
        return "nothing (the folder is empty)"
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def layout_error(
    dataset: str, root: Path, what: str, looked_for: Iterable[str], card: str | None = None
) -> LayoutError:
    """The error for an unknown layout: what was looked for, what the folder holds, and the card to read."""
    expected = " or ".join(repr(c) for c in looked_for)
    return LayoutError(
        f"{dataset}: no {what} under {root} (looked for {expected}; found: {found_here(root)}); point at the "
        f"folder of the official release (see data_cards/{card or dataset}.md)"
    )


def find(root: Path, *candidates: str, what: str, dataset: str, card: str | None = None) -> Path:
    """The first candidate (a relative path or glob) under ``root`` or one wrapping folder below it.

    Raises:
        LayoutError: none exists; the message lists the candidates, what the folder holds, and the data card.
    """
    if root.is_dir():
        for base in (root, *sorted(p for p in root.iterdir() if p.is_dir())):
            for cand in candidates:
                hits = sorted(base.glob(cand)) if any(c in cand for c in "*?[") else [base / cand]
                hits = [h for h in hits if h.exists()]
                if hits:
                    return hits[0]
    raise layout_error(dataset, root, what, candidates, card)


def find_all(root: Path, pattern: str) -> list[Path]:
    """Every match of a glob under ``root`` and one wrapping folder below it, sorted, each file once.

    A recursive pattern (``**/x``) from ``root`` already reaches the sub-folders; the de-duplication keeps a file
    found both ways from being read twice.
    """
    if not root.is_dir():
        return []
    out = sorted(root.glob(pattern))
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        out += sorted(sub.glob(pattern))
    return list(dict.fromkeys(out))


def _clip(
    source: str, ident: str, *, labels: list[str] | None = None, emotion: str | None = "", **fields: Any
) -> Clip:
    """One manifest clip of ``source``: id ``<source>/<ident>``, an empty label list as None, and the emotion
    the single label unless given (``emotion=None`` for none).

    >>> c = _clip("dfew", "00001", labels=["happy"], split="train")
    >>> c.id, c.emotion, _clip("mafw", "2", labels=["anger", "fear"]).emotion, _clip("x", "1", labels=[]).labels
    ('dfew/00001', 'happy', None, None)
    """
    labels = list(labels) if labels else None
    if emotion == "":
        emotion = labels[0] if labels and len(labels) == 1 else None
    return Clip(id=f"{source}/{ident}", labels=labels, emotion=emotion, source=source, **fields)


class MediaIndex:
    """Media files below some folders by file stem (first found wins), so loaders tolerate re-packed layouts."""

    def __init__(self, dirs: Iterable[Path], exts: tuple[str, ...]) -> None:
        self.files: dict[str, str] = {}
        for folder in dirs:
            if not folder.is_dir():
                continue
            for dirpath, _, names in os.walk(folder):
                for name in sorted(names):
                    stem, ext = os.path.splitext(name)
                    if ext.lower() in exts:
                        self.files.setdefault(stem, os.path.join(dirpath, name))

    def get(self, stem: str) -> str | None:
        """Absolute path of the file with this stem, or None."""
        return self.files.get(stem)

    def __len__(self) -> int:
        return len(self.files)


def read_text(path: Path) -> str:
    """A label file's text: UTF-8 (BOM tolerated), falling back to cp1252 (MELD, older Windows exports)."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def read_csv(path: Path, delimiter: str = ",", header: bool = True) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line_number, row)``; with a header, keys are lower-cased and stripped; without, keys are "0", "1"."""
    lines = read_text(path).splitlines()
    reader = csv.reader(lines, delimiter=delimiter, skipinitialspace=delimiter == " ")
    names: list[str] | None = None
    for number, cells in enumerate(reader, start=1):
        if not cells or all(not c.strip() for c in cells):
            continue
        if header and names is None:
            names = [c.strip().lower() for c in cells]
            continue
        keys = names if names is not None else [str(i) for i in range(len(cells))]
        yield number, {k: v.strip() for k, v in zip(keys, cells, strict=False)}


def col(row: dict[str, str], *names: str) -> str | None:
    """The first non-empty value among column ``names`` (lower-case), or None."""
    for name in names:
        value = row.get(name)
        if value is not None and value.strip() and value.strip().lower() != "nan":
            return value.strip()
    return None


def need_columns(path: Path, rows: list[tuple[int, dict[str, str]]], *names: str) -> None:
    """Raise :class:`LayoutError` naming the file when its header lacks any of ``names``."""
    if rows:
        missing = [n for n in names if n not in rows[0][1]]
        if missing:
            found = ", ".join(rows[0][1])
            raise LayoutError(f"{path}: missing column(s) {', '.join(missing)} (found: {found})")


def split_labels(text: str | None) -> list[str]:
    """Open-vocabulary label lists as released: ``"['happy', 'tired']"``, ``"happy, tired"`` or ``"happy，tired"``,
    split by the parser's splitter, so a gold label reads the way a model's answer is read (and round-trips through
    :func:`affectllm.parsing.format_completion`).

    >>> split_labels("['Happy', 'relieved']"), split_labels("happy，tired; calm"), split_labels("")
    (['happy', 'relieved'], ['happy', 'tired', 'calm'], [])
    """
    return parse_labels(text or "")


def scale(value: str | float | None, low: float, high: float) -> float | None:
    """Map a number from [low, high] to [-1, 1] (clipped); None when absent or not a number.

    >>> scale("2.5", -5, 5), scale(1, 1, 5), scale("x", 0, 1)
    (0.5, -1.0, None)
    """
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if number != number:  # NaN
        return None
    mapped = 2.0 * (number - low) / (high - low) - 1.0
    return round(min(1.0, max(-1.0, mapped)), 4)


def fix_mojibake(text: str) -> str:
    """Undo UTF-8 text that was decoded as cp1252 once (``"heâ€™s"`` -> ``"he’s"``); other text is returned as is.

    >>> fix_mojibake("heâ€™s"), fix_mojibake("plain")
    ('he’s', 'plain')
    """
    if not any(mark in text for mark in ("â€", "Ã", "Â")):
        return text
    try:
        return text.encode("cp1252").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text
