"""`affectllm demo`: the whole pipeline on EmoWorld with the tiny preset, on one CPU.

1. synthesize EmoWorld (videos, voices, transcripts, gold, oracle and baselines);
2. stage 1 SFT, 3. stage 2 GRPO, 4. stage 3 calibration — the tiny recipes the package ships
   (``affectllm/recipes/tiny/``, read through :mod:`importlib.resources`, so a wheel install runs it too;
   ``recipes/tiny/`` in the repository is a copy of them), chained by ``init_from``, exactly as ``affectllm train``
   runs them;
5. a table of EW-F, HIT, AU-F1 and ECE on the test split per stage, between EmoWorld's floor (baselines) and
   ceiling (oracle), saved as ``summary.json`` and ``summary.png``.

``--quick`` shortens every stage (a smoke run: numbers are not meaningful).
"""

from __future__ import annotations

import json
import time
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

QUICK = {
    "sft": ["trainer.max_steps=4"],
    "grpo": ["trainer.max_steps=2", "trainer.max_completion_length=16"],
    "calibrate": ["trainer.max_steps=1", "trainer.max_completion_length=16", "calibrate.posthoc_samples=8"],
}
STAGES = ("sft", "grpo", "calibrate")


def load_tiny_recipe(stage: str, overrides: list[str] | None = None) -> Any:
    """The shipped tiny recipe of ``stage`` (package data ``affectllm/recipes/tiny/<stage>.yaml``), loaded."""
    from .config import load_recipe

    with as_file(files("affectllm") / "recipes" / "tiny" / f"{stage}.yaml") as path:
        return load_recipe(path, overrides)


def _stage(stage: str, manifest: Path, out: Path, quick: bool) -> dict[str, Any]:
    from .train.run import run_recipe

    overrides = [f"data.manifest={manifest}", f"output_dir={out / stage}"]
    if stage != "sft":
        overrides.append(f"init_from={out / STAGES[STAGES.index(stage) - 1]}")
    if quick:
        overrides += QUICK[stage] + ["eval.samples=8", "eval.max_new_tokens=32"]
    return run_recipe(load_tiny_recipe(stage, overrides)) or {}


def _row(result: dict[str, Any]) -> dict[str, Any]:
    return {k: result.get(k) for k in ("ew_f", "hit", "au_f1", "ece", "format_ok")}


def demo_main(out: str = "runs/demo", n: int = 240, seed: int = 0, quick: bool = False) -> int:
    """Run the pipeline; print and save the stage-by-stage summary."""
    from rich.console import Console

    from .emoworld.generate import synth_main

    console = Console()
    root = Path(out)
    t0 = time.perf_counter()
    world = root / "emoworld"
    console.rule(f"[1/5] EmoWorld: {n} clips")
    if synth_main(str(world), n, seed) != 0:
        return 2
    manifest = world / "manifest.jsonl"
    results: dict[str, dict[str, Any]] = {}
    for i, stage in enumerate(STAGES, start=2):
        console.rule(f"[{i}/5] stage {stage}")
        result = _stage(stage, manifest, root, quick)
        if stage == "calibrate":
            results["calibrate"] = {
                **_row(result.get("after", {})),
                "ece": result.get("calibration", {}).get("after + post-hoc", {}).get("ece"),
            }
        else:
            results[stage] = _row(result)
    console.rule("[5/5] summary")
    summary = {
        "stages": results,
        "emoworld": json.loads((world / "emoworld.json").read_text()).get("scores"),
        "seconds": round(time.perf_counter() - t0, 1),
        "quick": quick,
    }
    (root / "summary.json").write_text(json.dumps(summary, indent=2))
    _print(console, summary)
    _plot(summary, root / "summary.png")
    console.print(f"demo finished in {summary['seconds']} s; outputs in {root}")
    return 0


def _fmt(v: Any, pct: bool = True) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f}" if pct else f"{v:.3f}"


def _print(console: Any, summary: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table("system", "EW-F", "HIT", "AU-F1", "ECE", "format ok", title="EmoWorld test split")
    for stage, r in summary["stages"].items():
        table.add_row(
            f"tiny model after {stage}",
            _fmt(r["ew_f"]),
            _fmt(r["hit"]),
            _fmt(r["au_f1"]),
            _fmt(r["ece"], pct=False),
            _fmt(r["format_ok"]),
        )
    for name, s in (summary.get("emoworld") or {}).items():
        table.add_row(f"[dim]{name}[/dim]", _fmt(s.get("ew_f")), _fmt(s.get("hit")), _fmt(s.get("au_f1")), "-", "-")
    console.print(table)


def _plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = list(summary["stages"])
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (("ew_f", "EW-F"), ("hit", "HIT"), ("au_f1", "AU-F1")):
        ax.plot(stages, [summary["stages"][s][key] or 0 for s in stages], marker="o", label=label)
    for name, s in (summary.get("emoworld") or {}).items():
        if name in ("oracle", "majority baseline") and s.get("ew_f") is not None:
            ax.axhline(s["ew_f"], ls="--", lw=1, color="grey")
            ax.text(len(stages) - 1, s["ew_f"], f" {name} EW-F", va="bottom", fontsize=8, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("test split")
    ax.set_title("tiny model on EmoWorld, stage by stage")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
