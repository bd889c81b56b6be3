"""Load the MER-UniBench emotion-wheel tables from a user-named folder (never shipped with affectllm).

The folder holds ``wheel1.xlsx`` … ``wheel5.xlsx``, ``synonym.xlsx``, ``format.csv`` and, for the 2025 word forms,
``legacy_mer2025/format.csv`` (see ``EW_METRIC.md`` of the tables). The tables are non-commercial research data:
affectllm reads them where the user keeps them and scores exactly as the published metric does.
"""

from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

from affectllm.taxonomy.wheel import Taxonomy, Wheel
from affectllm.taxonomy.xlsx import read_xlsx_rows

MER_TABLES: dict[str, str] = {"mer2026": "format.csv", "mer2025": "legacy_mer2025/format.csv"}
N_WHEELS = 5
N_SYNONYM_RUNS = 8


def _blank(cell: str | None) -> bool:
    return cell is None or cell == ""


def read_wheel(path: Path) -> list[tuple[str, str, str]]:
    """Rows ``(core, middle, outer)`` of one wheel: blanks forward-filled, then lower-cased and stripped."""
    grid = read_xlsx_rows(path)
    if not grid:
        raise ValueError(f"{path}: empty sheet")
    header = [(c or "").strip().lower() for c in grid[0]]
    try:
        cols = [header.index(f"level{i}") for i in (1, 2, 3)]
    except ValueError as err:
        raise ValueError(f"{path}: expected columns level1, level2, level3; found {header}") from err
    rows: list[tuple[str, str, str]] = []
    last: list[str | None] = [None, None, None]
    for raw in grid[1:]:
        cells = [raw[c] if c < len(raw) else None for c in cols]
        if all(_blank(c) for c in cells):
            continue
        last = [last[i] if _blank(c) else c for i, c in enumerate(cells)]
        if any(c is None for c in last):
            raise ValueError(f"{path}: a blank cell with nothing above it to forward-fill")
        rows.append(tuple(c.strip().lower() for c in last))  # type: ignore[union-attr, misc]
    return rows


def read_synonyms(path: Path) -> dict[str, list[str]]:
    """``SYN``: word -> wheel words, from the 8 runs of ``synonym.xlsx`` (union over runs)."""
    grid = read_xlsx_rows(path)
    header = [(c or "").strip() for c in grid[0]]
    syn: dict[str, list[str]] = {}
    for run in range(1, N_SYNONYM_RUNS + 1):
        word_col, syn_col = header.index(f"word_run{run}"), header.index(f"synonym_run{run}")
        for row in grid[1:]:
            word = row[word_col] if word_col < len(row) else None
            if _blank(word):
                continue
            w = word.strip().lower()  # type: ignore[union-attr]
            syn.setdefault(w, []).append(w)
            listed = row[syn_col] if syn_col < len(row) else None
            for s in (listed or "").split(","):
                if s.strip():
                    syn.setdefault(s.strip().lower(), []).append(w)
    return syn


def read_forms(path: Path) -> dict[str, list[str]]:
    """``FORM``: surface form -> base words, from a ``name,format`` CSV (each name is also a form of itself)."""
    forms: dict[str, list[str]] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            name = row["name"]
            for f in (row.get("format") or "").split(","):
                forms.setdefault(f, []).append(name)
            forms.setdefault(name, []).append(name)
    return forms


@lru_cache(maxsize=8)
def _load(wheel_dir: str, table: str) -> Taxonomy:
    root = Path(wheel_dir)
    wheels = [Wheel.from_rows(f"wheel{k}", read_wheel(root / f"wheel{k}.xlsx")) for k in range(1, N_WHEELS + 1)]
    return Taxonomy(
        name=table,
        wheels=wheels,
        forms=read_forms(root / MER_TABLES[table]),
        synonyms=read_synonyms(root / "synonym.xlsx"),
        neutral=None,
    )


def load_mer_taxonomy(wheel_dir: str | Path, table: str = "mer2026") -> Taxonomy:
    """The MER taxonomy (5 wheels) read from ``wheel_dir``; loaded once per (folder, table) and cached.

    Args:
        wheel_dir: folder holding the MER tables (``wheel1.xlsx`` … ``format.csv``).
        table: ``"mer2026"`` (top-level ``format.csv``, the default) or ``"mer2025"``
            (``legacy_mer2025/format.csv``, the word forms of the MER2025 scoring).

    Raises:
        ValueError: unknown ``table``.
        FileNotFoundError: a table file is missing from ``wheel_dir``.
    """
    if table not in MER_TABLES:
        raise ValueError(f"table must be one of {sorted(MER_TABLES)}, got {table!r}")
    root = Path(wheel_dir).expanduser().resolve()
    needed = [root / f"wheel{k}.xlsx" for k in range(1, N_WHEELS + 1)] + [
        root / "synonym.xlsx",
        root / MER_TABLES[table],
    ]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"MER emotion-wheel tables missing: {', '.join(missing)}")
    return _load(str(root), table)
