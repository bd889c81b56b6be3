"""Read the first sheet of an .xlsx workbook as a grid of cell strings (the MER emotion-wheel tables), with openpyxl.

openpyxl is the optional ``mer`` extra (``pip install 'affectllm[mer]'``): only users who score with the MER tables
need it, and it is imported when a table is read.
"""

from __future__ import annotations

from pathlib import Path

MISSING_OPENPYXL = "reading the MER .xlsx tables needs openpyxl: pip install 'affectllm[mer]' (or openpyxl)"


def read_xlsx_rows(path: str | Path) -> list[list[str | None]]:
    """Rows of the first sheet as lists of cell strings, ``None`` for an empty cell.

    Cell values as stored (``data_only``: a formula gives its cached value), numbers written as text (``7`` ->
    ``"7"``); rows padded to the widest row; wholly empty rows after the last value left out.

    Args:
        path: the ``.xlsx`` file.

    Returns:
        The grid, header row included, as the sheet shows it.

    Raises:
        ImportError: openpyxl is not installed (the message says how to install it).
    """
    try:
        import openpyxl
    except ImportError as err:
        raise ImportError(MISSING_OPENPYXL) from err
    book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        grid = [[None if v is None else str(v) for v in row] for row in book.worksheets[0].iter_rows(values_only=True)]
    finally:
        book.close()  # read-only workbooks keep the file open until closed
    while grid and all(v is None for v in grid[-1]):
        grid.pop()
    width = max((len(row) for row in grid), default=0)
    return [row + [None] * (width - len(row)) for row in grid]
