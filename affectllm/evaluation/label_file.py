"""``affectllm metric ew``: emotion-wheel F / precision / recall of a label file against a manifest.

GOLD rows are manifest rows (``id``, ``labels``; ``emotion`` where a row has no ``labels``), PRED rows are label-output
rows (``id``, ``labels``), joined on ``id``. A ``labels`` value may be a list or a MER list-as-string
(``"[happy, sad]"``, ``"happy, sad"``). A gold id without a prediction is scored as an empty prediction (precision
and recall 0), prediction ids absent from gold are ignored; both are reported. Prints one JSON object.

This is the boundary: every row is checked here (a bad line, id, ``labels`` or ``emotion`` value is an
:class:`InputError` naming the file and line), so the metrics downstream trust their inputs.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from affectllm.jsonl import iter_jsonl
from affectllm.metrics import ew_scores
from affectllm.parsing import gold_labels, parse_label_field
from affectllm.taxonomy import get_taxonomy

EXAMPLES = 10


class InputError(ValueError):
    """A problem with the user's files (reported with the file and line, exit code 2)."""


def read_rows(path: str) -> dict[str, list[str]]:
    """Gold labels per ``id`` of a JSONL file (``labels``, else ``emotion``; see
    :func:`~affectllm.parsing.gold_labels`).

    Raises:
        InputError: the file cannot be read; a line is not JSON, has no ``id`` or repeats one, or its ``labels``
            (a list of strings or a MER list-as-string) or ``emotion`` (a string) has another type.
    """
    rows: dict[str, list[str]] = {}
    try:
        for number, row, error in iter_jsonl(path):
            where = f"{path}:{number}"
            if error is not None:
                raise InputError(f"{where}: {error.message}; {error.hint}")
            if not isinstance(row, dict) or "id" not in row:
                raise InputError(f"{where}: a row needs an 'id' field")
            key = str(row["id"])
            if key in rows:
                raise InputError(f"{where}: id {key!r} repeated")
            rows[key] = gold_labels({"labels": _labels(row.get("labels"), where), "emotion": _emotion(row, where)})
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err.strerror or err}") from err
    return rows


def _labels(value: Any, where: str) -> list[str]:
    strings = isinstance(value, list) and all(isinstance(v, str) for v in value)
    if not (value is None or isinstance(value, str) or strings):
        raise InputError(f"{where}: field 'labels' must be a list of strings or a string, got {value!r:.60}")
    return parse_label_field(value)


def _emotion(row: dict[str, Any], where: str) -> str | None:
    value = row.get("emotion")
    if value is not None and not isinstance(value, str):
        raise InputError(f"{where}: field 'emotion' must be a string, got {value!r:.60}")
    return value.strip() if value and value.strip() else None


def _id_report(ids: list[str]) -> dict[str, Any]:
    return {"count": len(ids), "examples": ids[:EXAMPLES]}


def ew_scores_for_files(pred: str, gold: str, wheel_dir: str | None, table: str, level: str) -> dict[str, Any]:
    """The JSON object ``affectllm metric ew`` prints (see the module docstring)."""
    gold_rows, pred_rows = read_rows(gold), read_rows(pred)
    if not gold_rows:
        raise InputError(f"{gold}: no rows")
    taxonomy = get_taxonomy(wheel_dir, table)
    ids = list(gold_rows)
    result = ew_scores([pred_rows.get(i, []) for i in ids], [gold_rows[i] for i in ids], taxonomy, level)
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
