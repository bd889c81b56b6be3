"""Report figures: training curves from ``metrics.jsonl`` and reliability diagrams."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path


def plot_curves(out: Path, keys: Sequence[str] | None = None) -> list[Path]:
    """PNG line plots of the numeric series in ``metrics.jsonl`` (loss, rewards, KL ...), one file per group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = out / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    series: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        for k, v in row.items():
            if k != "step" and isinstance(v, (int, float)) and (keys is None or any(s in k for s in keys)):
                series.setdefault(k, []).append((row["step"], float(v)))
    groups = {"loss": [k for k in series if "loss" in k], "reward": [k for k in series if "reward" in k],
              "other": [k for k in series if k in ("kl", "entropy", "grad_norm") or k.startswith("completions/")]}
    written = []
    for name, names in groups.items():
        names = [k for k in names if len(series[k]) > 0]
        if not names:
            continue
        fig, ax = plt.subplots(figsize=(7, 4))
        for k in names[:12]:
            xs, ys = zip(*series[k])
            ax.plot(xs, ys, label=k, marker="." if len(xs) < 30 else None)
        ax.set_xlabel("step")
        ax.set_title(f"{out.name}: {name}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        target = out / f"{name}_curves.png"
        fig.savefig(target, dpi=100)
        plt.close(fig)
        written.append(target)
    return written


def reliability_plot(curves: dict[str, tuple[list[float], list[bool]]], path: Path, n_bins: int = 10) -> None:
    """Reliability diagrams (accuracy per confidence bin vs the diagonal), one line per curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..metrics import reliability_diagram

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect")
    for name, (conf, correct) in curves.items():
        if not conf:
            continue
        bins = [b for b in reliability_diagram(conf, correct, n_bins) if b.get("count")]
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o", label=name)
    ax.set_xlabel("stated confidence")
    ax.set_ylabel("observed accuracy (EW-F >= 0.5)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
