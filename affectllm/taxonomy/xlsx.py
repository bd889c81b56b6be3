"""A minimal reader for the first sheet of an .xlsx workbook (standard library only).

The MER emotion-wheel tables are small .xlsx files of text cells. Reading them needs no spreadsheet library: an
.xlsx is a zip of XML parts. This reader returns cell *values* as strings (shared strings, inline strings and
literal values), which is all the tables hold; styles, formulas and dates are not interpreted.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from xml.etree import ElementTree

_NS = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}
_REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PKG_REL_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
_CELL_REF = re.compile(r"([A-Z]+)(\d+)")


def _column_index(letters: str) -> int:
    """``"A" -> 0``, ``"Z" -> 25``, ``"AA" -> 26``."""
    index = 0
    for ch in letters:
        index = index * 26 + (ord(ch) - ord("A") + 1)
    return index - 1


def _text(node: ElementTree.Element) -> str:
    """Concatenated ``<t>`` runs of a shared or inline string (rich text has several runs)."""
    return "".join(t.text or "" for t in node.iter(f"{{{_NS['m']}}}t"))


def _first_sheet_path(book: zipfile.ZipFile) -> str:
    workbook = ElementTree.fromstring(book.read("xl/workbook.xml"))
    sheet = workbook.find("m:sheets/m:sheet", _NS)
    if sheet is None:
        raise ValueError("workbook has no sheet")
    rel_id = sheet.get(f"{{{_REL_NS}}}id")
    rels = ElementTree.fromstring(book.read("xl/_rels/workbook.xml.rels"))
    for rel in rels.iter(f"{{{_PKG_REL_NS}}}Relationship"):
        if rel.get("Id") == rel_id:
            target = rel.get("Target", "")
            return target.lstrip("/") if target.startswith("/") else f"xl/{target}"
    raise ValueError(f"workbook relationship {rel_id!r} not found")


def read_xlsx_rows(path: str | Path) -> list[list[str | None]]:
    """Rows of the first sheet as lists of cell strings, ``None`` for an empty cell.

    Rows are padded to the widest row; rows missing from the XML (wholly empty) come back as all-``None``.

    Args:
        path: the ``.xlsx`` file.

    Returns:
        The grid, header row included, as the sheet shows it.
    """
    with zipfile.ZipFile(path) as book:
        names = set(book.namelist())
        shared: list[str] = []
        if "xl/sharedStrings.xml" in names:
            root = ElementTree.fromstring(book.read("xl/sharedStrings.xml"))
            shared = [_text(si) for si in root.findall("m:si", _NS)]
        sheet = ElementTree.fromstring(book.read(_first_sheet_path(book)))
    grid: dict[int, dict[int, str]] = {}
    for row in sheet.iterfind("m:sheetData/m:row", _NS):
        for cell in row.iterfind("m:c", _NS):
            match = _CELL_REF.fullmatch(cell.get("r", ""))
            if match is None:
                continue
            value = _cell_value(cell, shared)
            if value is not None:
                grid.setdefault(int(match.group(2)) - 1, {})[_column_index(match.group(1))] = value
    if not grid:
        return []
    width = max(max(cols) for cols in grid.values()) + 1
    return [[grid.get(r, {}).get(c) for c in range(width)] for r in range(max(grid) + 1)]


def _cell_value(cell: ElementTree.Element, shared: list[str]) -> str | None:
    kind = cell.get("t", "n")
    if kind == "inlineStr":
        node = cell.find("m:is", _NS)
        return None if node is None else _text(node)
    value = cell.find("m:v", _NS)
    if value is None or value.text is None:
        return None
    if kind == "s":
        return shared[int(value.text)]
    return value.text
