"""``affectllm eval``: load a model once with the inference engine and run evaluation tasks on it; ``--compare``
sets two runs side by side.

The tasks, the scoring, the bootstrap and the report live in :mod:`affectllm.evaluation` (a lower layer); this
module only loads the :class:`~affectllm.serve.engine.Engine` and hands its ``label`` to the harness.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..evaluation.harness import Runner, compare_runs, print_comparison, run_eval
from ..evaluation.posthoc import FILE as CALIBRATION_FILE
from ..evaluation.tasks import TaskSpec, load_task
from ..types import Clip


def engine_labeler(engine: Any) -> Any:
    """``(clips, question, max_new_tokens) -> rows`` over ``engine.label``, greedy (the engine's default)."""
    from .engine import GenerationOptions

    def label(clips: list[Clip], question: str | None, max_new_tokens: int) -> list[dict[str, Any]]:
        return engine.label(clips, question=question, gen=GenerationOptions(max_new_tokens=max_new_tokens))

    return label


def _summary(results: dict[str, Any], seconds: float, out: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"affectllm eval: {results['model']['name']} ({seconds:.1f} s) -> {out}")
    for col in ("task", "n", "metric", "value", "95% interval"):
        table.add_column(col, justify="left" if col in ("task", "metric") else "right")
    for task, result in results["tasks"].items():
        for i, (name, m) in enumerate(result["metrics"].items()):
            value = "—" if m["value"] is None else f"{m['value']:.4f}"
            interval = "—" if m["low"] is None else f"[{m['low']:.4f}, {m['high']:.4f}]"
            table.add_row(task if i == 0 else "", str(result["n"]) if i == 0 else "", name, value, interval)
    Console().print(table)


def evaluate_main(model: str, tasks: Sequence[str], out: str, limit: int | None = None, batch_size: int = 8,
                  wheel_dir: str | None = None, device: str | None = None, dtype: str | None = None,
                  resamples: int | None = None) -> int:
    """Entry point of ``affectllm eval --model DIR --tasks ... --out OUT``.

    Every task is loaded (and a bad one reported with its file and key) before the model loads. ``resamples``
    overrides every task's ``bootstrap.resamples``.

    Returns:
        0 on success.
    """
    from .engine import Engine

    specs: list[TaskSpec] = [load_task(t) for t in tasks]
    started = time.perf_counter()
    engine = Engine.load(model, dtype=dtype, device=device)
    engine.batch_size = batch_size
    info = {"name": engine.model_name, "fingerprint": engine.fingerprint, "path": model,
            "calibrated": (Path(model) / CALIBRATION_FILE).is_file(), "default_question": engine.question()}

    def progress(task: str, done: int, total: int) -> None:
        print(f"\r{task}: {done}/{total} clips", end="\n" if done == total else "", file=sys.stderr, flush=True)

    runner = Runner(engine_labeler(engine), batch_size=batch_size, wheel_dir=wheel_dir, progress=progress,
                    resamples=resamples)
    results = run_eval(runner, specs, out, info, limit)
    _summary(results, time.perf_counter() - started, out)
    print(f"wrote {Path(out) / 'results.json'} and {Path(out) / 'report.md'}")
    return 0


def compare_main(out_a: str, out_b: str, resamples: int | None = None) -> int:
    """Entry point of ``affectllm eval --compare OUT1 OUT2``: print the side-by-side table; return 0."""
    print_comparison(compare_runs(out_a, out_b, resamples), out_a, out_b)
    return 0
