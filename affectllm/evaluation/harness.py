"""The evaluation harness: select a task's clips, label them with a model, score every metric with a bootstrap
interval, put reference systems beside the model, write ``results.json``, per-sample files and ``report.md``;
and compare two runs.

The model comes in as a function (``label(clips, question, max_new_tokens) -> label-output rows``, DESIGN.md §3),
so this layer never imports the engine (``affectllm.serve.evaluate`` loads one and passes its ``label``). Output:

``OUT/results.json``                 per task: n, metrics (value, 95% interval, n), breakdowns, reference systems
``OUT/predictions/<task>.jsonl``     the model's label-output rows, one per clip
``OUT/samples/<task>.jsonl``         the scored records (gold and prediction side by side; ``--compare`` pairs them)
``OUT/report.md``, ``OUT/plots/``    tables and figures (:mod:`affectllm.evaluation.report`)

Same model, data and seeds give the same ``results.json`` bytes: no clock, no absolute output path, sorted keys.
"""

from __future__ import annotations

import json
import logging
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from ..data.manifest import select_clips
from ..jsonl import read_jsonl, write_jsonl, write_text
from ..metrics import is_correct
from ..parsing import split_labels
from ..registry import TASKS
from ..taxonomy import Taxonomy, get_taxonomy
from ..types import Clip
from .bootstrap import Interval, bootstrap, paired_bootstrap
from .label_file import InputError
from .tasks import BREAKDOWNS, Record, TaskError, TaskSpec, prepare_gold, scorer

Labeler = Callable[[list[Clip], "str | None", int], list[dict[str, Any]]]
"""``(clips, question, max_new_tokens) -> label-output rows`` in clip order (an engine's ``label``; question None:
the model's training question)."""
log = logging.getLogger(__name__)
RESULTS = "results.json"
CALIBRATION_METRICS = ("ece", "brier", "auroc", "selective")
RESULTS_VERSION = 1


def select(spec: TaskSpec, limit: int | None = None) -> list[Clip]:
    """The task's clips: its split of the manifest (or of the importer's output), gold mapped, then at most
    ``min(limit, max_samples)`` of them drawn with ``sample_seed`` and kept in source order.

    Raises:
        TaskError: no usable clip.
    """
    ds = spec.dataset
    if ds.manifest:
        clips = select_clips(ds.manifest, spec.split)
    else:
        from ..data.sources import load_dataset

        loaded = load_dataset(ds.importer, ds.root, **ds.options)
        for problem in loaded.problems:  # skipped or doubtful label rows, each with its file and line
            log.warning("%s", problem)
        clips = [c for c in loaded.clips if spec.split is None or c.split == spec.split]
    clips = prepare_gold(clips, spec)
    if not clips:
        raise TaskError(f"{spec.source}: no clip of split {spec.split!r} has the gold this task scores")
    cap = min(x for x in (limit, spec.max_samples, len(clips)) if x is not None)
    if cap < len(clips):
        keep = sorted(random.Random(spec.sample_seed).sample(range(len(clips)), cap))
        clips = [clips[i] for i in keep]
    return clips


def present(clip: Clip) -> list[str]:
    """The modalities a clip carries, as the ``modality`` breakdown names them."""
    return [name for name, value in (("video", clip.video), ("audio", clip.audio), ("text", clip.transcript))
            if value]


def make_record(clip: Clip, row: dict[str, Any], spec: TaskSpec, taxonomy: Taxonomy) -> Record:
    """The scored sample of one clip and one label-output row (see :data:`~affectllm.evaluation.tasks.Record`)."""
    labels = list(row.get("labels") or [])
    if not labels and spec.parse == "answer_list":
        labels = split_labels(row.get("raw") or "")
    gold_labels = list(clip.labels or ([clip.emotion] if clip.emotion else []))
    classes = bool(spec.classes)
    return {
        "id": clip.id,
        "present": present(clip),
        "labels": labels,
        "aus": list(row.get("aus") or []),
        "confidence": row.get("confidence"),
        "confidence_raw": row.get("confidence_raw", row.get("confidence")),
        "pred_class": TASKS.get(spec.prediction or "first_matching_class")(labels, spec, taxonomy) if classes
        else None,
        "gold_labels": gold_labels,
        "emotion": clip.emotion,
        "gold_aus": list(clip.aus or []),
        "gold_class": clip.emotion if classes and clip.emotion in spec.classes else None,
        "correct": is_correct(labels, gold_labels, taxonomy, threshold=spec.correct_threshold) if gold_labels
        else None,
        "error": row.get("error"),
    }


def metric_interval(name: str, records: Sequence[Record], taxonomy: Taxonomy, spec: TaskSpec,
                    with_interval: bool = True) -> Interval:
    """One metric of a task on the records it applies to, with its bootstrap interval (or the value alone)."""
    sc = scorer(name)
    rs = [r for r in records if sc.applies(r)]
    if not with_interval:
        return Interval(sc.score(rs, taxonomy) if rs else None, None, None, len(rs), 0)
    b = spec.bootstrap
    return bootstrap(lambda idx: sc.score([rs[i] for i in idx], taxonomy), len(rs), b.resamples, b.confidence, b.seed)


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)


def _breakdowns(spec: TaskSpec, records: Sequence[Record], taxonomy: Taxonomy) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in spec.breakdown:
        groups: dict[str, list[Record]] = {}
        for r in records:
            groups.setdefault(BREAKDOWNS[name](r), []).append(r)
        out[name] = {
            key: {"n": len(rs), **{m: _round(metric_interval(m, rs, taxonomy, spec, False).value)
                                   for m in spec.metrics}}
            for key, rs in sorted(groups.items())
        }
    return out


class Runner:
    """Labels the clips of several tasks once per (clip, question, token budget) and scores each task."""

    def __init__(self, label: Labeler, batch_size: int = 8, wheel_dir: str | None = None,
                 progress: Callable[[str, int, int], None] | None = None, resamples: int | None = None) -> None:
        self.label = label
        self.resamples = resamples
        self.batch_size = max(1, batch_size)
        self.wheel_dir = wheel_dir
        self.progress = progress
        self._cache: dict[tuple[str, str | None, int], dict[str, Any]] = {}

    def rows(self, spec: TaskSpec, clips: Sequence[Clip]) -> list[dict[str, Any]]:
        """Label-output rows of ``clips`` for the task's question (cached across tasks), in clip order."""
        key = (spec.question_text, spec.max_new_tokens)
        todo = [c for c in clips if (c.id, *key) not in self._cache]
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            got = self.label(chunk, spec.question_text, spec.max_new_tokens)
            got_ids, want = [r.get("id") for r in got], [c.id for c in chunk]
            if got_ids != want:
                raise RuntimeError(f"the labeler returned rows for ids {got_ids}, asked for {want}")
            self._cache.update({(c.id, *key): r for c, r in zip(chunk, got, strict=True)})
            if self.progress:
                self.progress(spec.task, min(start + self.batch_size, len(todo)), len(todo))
        return [self._cache[(c.id, *key)] for c in clips]

    def taxonomy(self, spec: TaskSpec) -> Taxonomy:
        """The task's taxonomy (``--wheel-dir`` wins over the task's ``taxonomy.wheel_dir``)."""
        return get_taxonomy(self.wheel_dir or spec.taxonomy.wheel_dir, spec.taxonomy.table)

    def run_task(self, spec: TaskSpec, limit: int | None = None) -> tuple[dict[str, Any], list[Record],
                                                                           list[dict[str, Any]]]:
        """Score one task: its result entry, its records and the model's rows."""
        if self.resamples:  # --resamples: the bootstrap costs ~8 us per sample and resample for EW-F (2 cores)
            spec = replace(spec, bootstrap=replace(spec.bootstrap, resamples=self.resamples))
        clips = select(spec, limit)
        rows = self.rows(spec, clips)
        tax = self.taxonomy(spec)
        records = [make_record(c, r, spec, tax) for c, r in zip(clips, rows, strict=True)]
        result: dict[str, Any] = {
            "description": spec.description,
            "dataset": asdict(spec.dataset),
            "split": spec.split,
            "question": spec.question,
            "n": len(records),
            "errors": sum(r["error"] is not None for r in records),
            "taxonomy": {"name": tax.name, "wheel_dir": self.wheel_dir or spec.taxonomy.wheel_dir,
                         "table": spec.taxonomy.table},
            "bootstrap": asdict(spec.bootstrap),
            "classes": list(spec.classes),
            "metrics": {m: metric_interval(m, records, tax, spec).as_dict() for m in spec.metrics},
            "higher_is_better": {m: scorer(m).higher_is_better for m in spec.metrics},
            "breakdowns": _breakdowns(spec, records, tax),
        }
        if spec.references:
            result["references"], result["reference_breakdowns"] = self._references(spec, clips, tax)
        return result, records, rows

    def _references(self, spec: TaskSpec, clips: Sequence[Clip], tax: Taxonomy) -> tuple[dict[str, Any],
                                                                                          dict[str, Any]]:
        """Metric values (no interval, no calibration: references state no confidence) and breakdowns per system."""
        systems = TASKS.get(spec.references)(clips, spec)
        label_spec = replace(spec, metrics=[m for m in spec.metrics if not m.startswith(CALIBRATION_METRICS)])
        values: dict[str, Any] = {}
        groups: dict[str, Any] = {}
        for name, preds in systems.items():
            records = [make_record(c, {"labels": labels, "aus": aus}, spec, tax)
                       for c, (labels, aus) in zip(clips, preds, strict=True)]
            values[name] = {m: _round(metric_interval(m, records, tax, label_spec, False).value)
                            for m in label_spec.metrics}
            groups[name] = _breakdowns(label_spec, records, tax)
        return values, groups


def run_eval(runner: Runner, specs: Sequence[TaskSpec], out: str | Path, model: dict[str, Any],
             limit: int | None = None) -> dict[str, Any]:
    """Run every task, write ``results.json``, the per-sample files and the report; return the results.

    Args:
        runner: labels and scores (holds the model's ``label``).
        specs: loaded tasks (names must be unique).
        out: output folder.
        model: what identifies the model in the results (``name``, ``fingerprint``, ``calibrated``, ``path``).
        limit: at most this many clips per task.
    """
    from .report import write_report

    names = [s.task for s in specs]
    if len(set(names)) != len(names):
        raise TaskError(f"task names repeat: {names}")
    root = Path(out)
    results: dict[str, Any] = {"version": RESULTS_VERSION, "model": model, "limit": limit, "tasks": {}}
    records_by_task: dict[str, list[Record]] = {}
    for spec in specs:
        result, records, rows = runner.run_task(spec, limit)
        write_jsonl(rows, root / "predictions" / f"{spec.task}.jsonl")
        write_jsonl(records, root / "samples" / f"{spec.task}.jsonl")
        results["tasks"][spec.task] = result
        records_by_task[spec.task] = records
    write_text(root / RESULTS, json.dumps(results, indent=2, sort_keys=True) + "\n")
    write_report(results, records_by_task, root)
    return results


# --- compare --------------------------------------------------------------------------------------------------


def _load_run(path: Path) -> dict[str, Any]:
    file = path / RESULTS
    if not file.is_file():
        raise FileNotFoundError(f"{file}: not found; pass an --out folder of `affectllm eval`")
    try:
        run = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{file}: not a results file of `affectllm eval` ({err}); rerun the evaluation") from err
    if not isinstance(run, dict) or run.get("version") != RESULTS_VERSION or "tasks" not in run:
        raise InputError(f"{file}: not a version-{RESULTS_VERSION} results file of `affectllm eval`; rerun it")
    return run


def _samples(path: Path, task: str) -> dict[str, Record] | None:
    file = path / "samples" / f"{task}.jsonl"
    if not file.is_file():
        return None
    rows, problems = read_jsonl(file)
    if problems:
        bad = problems[0]
        raise InputError(f"{file}:{bad.line}: {bad.message} (delete {file.parent} to compare on the intervals alone)")
    return {r["id"]: r for _, r in rows}


def _paired(metric: str, rec_a: list[Record], rec_b: list[Record], tax: Taxonomy, boot: dict[str, Any],
            resamples: int | None) -> Interval:
    """Paired bootstrap of B - A over the shared ids where the metric applies in both runs."""
    sc = scorer(metric)
    pairs = [(a, b) for a, b in zip(rec_a, rec_b, strict=True) if sc.applies(a) and sc.applies(b)]
    return paired_bootstrap(lambda idx: sc.score([pairs[i][0] for i in idx], tax),
                            lambda idx: sc.score([pairs[i][1] for i in idx], tax), len(pairs),
                            resamples or boot["resamples"], boot["confidence"], boot["seed"])


def compare_runs(out_a: str | Path, out_b: str | Path, resamples: int | None = None) -> list[dict[str, Any]]:
    """Metric by metric, run B minus run A, and whether the difference is outside the bootstrap interval.

    With the per-sample files of both runs the test is a paired bootstrap over the shared ids (the difference's
    interval excludes 0); without them, B's value lies outside A's interval.

    Returns:
        Rows ``{task, metric, a, b, diff, low, high, shared, method, significant, higher_is_better}``.
    """
    a_dir, b_dir = Path(out_a), Path(out_b)
    run_a, run_b = _load_run(a_dir), _load_run(b_dir)
    rows = []
    for task in sorted(set(run_a["tasks"]) & set(run_b["tasks"])):
        ta, tb = run_a["tasks"][task], run_b["tasks"][task]
        sa, sb = _samples(a_dir, task), _samples(b_dir, task)
        shared = sorted(set(sa) & set(sb)) if sa is not None and sb is not None else []
        tax = get_taxonomy(ta["taxonomy"]["wheel_dir"], ta["taxonomy"]["table"])
        boot = ta["bootstrap"]
        for metric in [m for m in ta["metrics"] if m in tb["metrics"]]:
            a, b = ta["metrics"][metric], tb["metrics"][metric]
            diff = None if a["value"] is None or b["value"] is None else b["value"] - a["value"]
            row: dict[str, Any] = {"task": task, "metric": metric, "a": a["value"], "b": b["value"], "diff": diff,
                                   "higher_is_better": ta["higher_is_better"][metric], "shared": len(shared)}
            if shared:
                ci = _paired(metric, [sa[i] for i in shared], [sb[i] for i in shared], tax, boot, resamples)
                significant = ci.low is not None and (ci.low > 0 or ci.high < 0)
                row.update(low=ci.low, high=ci.high, method="paired", significant=significant)
            else:
                outside = None not in (b["value"], a["low"], a["high"]) and not a["low"] <= b["value"] <= a["high"]
                row.update(low=a["low"], high=a["high"], method="A's interval", significant=outside)
            rows.append(row)
    return rows


def print_comparison(rows: Sequence[dict[str, Any]], out_a: str, out_b: str) -> None:
    """The comparison as a rich table (green: B better and significant, red: B worse and significant)."""
    from rich.console import Console
    from rich.table import Table

    def fmt(v: float | None) -> str:
        return "—" if v is None else f"{v:.4f}"

    table = Table(title=f"A = {out_a}   B = {out_b}   (test: paired bootstrap over shared ids, or B outside A's "
                        "interval without per-sample files)")
    for col in ("task", "metric", "A", "B", "B − A", "interval", "ids", "test", "significant"):
        table.add_column(col, justify="left" if col in ("task", "metric", "test") else "right", no_wrap=True)
    for r in rows:
        better = r["diff"] is not None and (r["diff"] > 0) == bool(r["higher_is_better"])
        style = ("green" if better else "red") if r["significant"] else None
        table.add_row(r["task"], r["metric"], fmt(r["a"]), fmt(r["b"]), fmt(r["diff"]),
                      f"[{fmt(r['low'])}, {fmt(r['high'])}]", str(r["shared"] or "—"), r["method"],
                      "yes" if r["significant"] else "no", style=style)
    Console(width=None if sys.stdout.isatty() else 160).print(table)
