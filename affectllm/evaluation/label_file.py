"""``affectllm metric ew``: emotion-wheel F / precision / recall of a label file against a manifest.

GOLD rows are manifest rows (``id``, ``labels``; ``emotion`` where a row has no ``labels``), PRED rows are label-output
rows (``id``, ``labels``), joined on ``id``. A ``labels`` value may be a list or a MER list-as-string
(``"[happy, sad]"``, ``"happy, sad"``). A gold id without a prediction is scored as an empty prediction (precision
and recall 0), prediction ids absent from gold are ignored; both are reported. Prints one JSON object.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from affectllm.metrics import ew_scores
from affectllm.parsing import parse_label_field
from affectllm.taxonomy import get_taxonomy

EXAMPLES = 10


class InputError(ValueError):
    """A problem with the user's files (reported with the file and line, exit code 2)."""


def read_rows(path: str) -> dict[str, dict[str, Any]]:
    """JSONL rows keyed by ``id``; a bad line or a repeated id raises :class:`InputError` with its line number."""
    rows: dict[str, dict[str, Any]] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err.strerror or err}") from err
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}:{number}: not JSON: {err.msg}") from err
        if not isinstance(row, dict) or "id" not in row:
            raise InputError(f"{path}:{number}: a row needs an 'id' field")
        key = str(row["id"])
        if key in rows:
            raise InputError(f"{path}:{number}: id {key!r} repeated")
        rows[key] = row
    return rows


def _labels(row: dict[str, Any]) -> list[str]:
    found = parse_label_field(row.get("labels"))
    if not found and isinstance(row.get("emotion"), str):
        found = parse_label_field(row["emotion"])
    return found


def _id_report(ids: list[str]) -> dict[str, Any]:
    return {"count": len(ids), "examples": ids[:EXAMPLES]}


def ew_scores_for_files(pred: str, gold: str, wheel_dir: str | None, table: str, level: str) -> dict[str, Any]:
    """The JSON object ``affectllm metric ew`` prints (see the module docstring)."""
    gold_rows, pred_rows = read_rows(gold), read_rows(pred)
    if not gold_rows:
        raise InputError(f"{gold}: no rows")
    taxonomy = get_taxonomy(wheel_dir, table)
    ids = list(gold_rows)
    preds = [_labels(pred_rows[i]) if i in pred_rows else [] for i in ids]
    result = ew_scores(preds, [_labels(gold_rows[i]) for i in ids], taxonomy, level)
    result["table"] = table if wheel_dir else None
    result["missing_ids"] = _id_report([i for i in ids if i not in pred_rows])
    result["extra_ids"] = _id_report([i for i in pred_rows if i not in gold_rows])
    return result


def ew_main(pred: str, gold: str, wheel_dir: str | None, table: str, level: str) -> int:
    """Print the EW scores of ``pred`` against ``gold`` as JSON; return the exit code.

    Args:
        pred: label-output JSONL (``id``, ``labels``).
        gold: manifest JSONL (``id``, ``labels``).
        wheel_dir: folder of the MER tables; None for affectllm's built-in taxonomy.
        table: ``"mer2026"`` or ``"mer2025"`` (word forms from ``legacy_mer2025/format.csv``).
        level: ``"level1"`` or ``"level2"``.

    Returns:
        0 on success; 2 for unreadable or malformed input, a missing table, or a bad option (message on stderr).
    """
    try:
        result = ew_scores_for_files(pred, gold, wheel_dir, table, level)
    except (InputError, FileNotFoundError, ValueError) as err:
        print(f"affectllm metric ew: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0
