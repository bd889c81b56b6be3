"""Report figures and the evaluation report: training curves from ``metrics.jsonl``, reliability diagrams,
confusion matrices, per-AU F1 bars, grouped bars (EW-F by modality present), and ``report.md`` of an eval run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..jsonl import read_jsonl


def plot_curves(out: Path, keys: Sequence[str] | None = None) -> list[Path]:
    """PNG line plots of the numeric series in ``metrics.jsonl`` (loss, rewards, KL ...), one file per group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = out / "metrics.jsonl"
    if not path.is_file():
        return []
    # read_jsonl: a line a killed run left torn (and a resumed run appended to) is skipped, not fatal
    rows = [row for _, row in read_jsonl(path)[0] if isinstance(row, dict) and "step" in row]
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


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_plot(gold: Sequence[str], pred: Sequence[str], classes: Sequence[str], path: Path,
                   title: str = "") -> None:
    """Row-normalised confusion matrix (gold rows, predicted columns, counts written in the cells); predictions
    outside ``classes`` get a last column of their own."""
    plt = _pyplot()
    cols = list(classes) + sorted({p for p in pred if p not in classes})
    counts = [[sum(1 for g, p in zip(gold, pred, strict=True) if g == r and p == c) for c in cols] for r in classes]
    shares = [[v / max(sum(row), 1) for v in row] for row in counts]
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(cols), 1.0 + 0.6 * len(classes)))
    ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for i, row in enumerate(counts):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if shares[i][j] > 0.5 else "black")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), list(classes))
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def bar_plot(series: dict[str, dict[str, float | None]], path: Path, ylabel: str, title: str = "") -> None:
    """Grouped bars: one group per key of the inner dicts, one bar per series (model, oracle, ...); None is 0."""
    plt = _pyplot()
    keys = list(dict.fromkeys(k for values in series.values() for k in values))
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(keys) * max(len(series), 1)), 4))
    for s, (name, values) in enumerate(series.items()):
        xs = [k + (s - (len(series) - 1) / 2) * width for k in range(len(keys))]
        ax.bar(xs, [values.get(k) or 0.0 for k in keys], width, label=name)
    tilt = len(keys) > 6
    ax.set_xticks(range(len(keys)), keys, rotation=45 if tilt else 0, ha="right" if tilt else "center")
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


CALIBRATION_PREFIXES = ("ece", "brier", "auroc", "selective")


def _fmt(v: Any) -> str:
    return "—" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def task_plots(task: str, result: dict[str, Any], records: Sequence[dict[str, Any]], plots: Path,
               calibrated: bool) -> list[tuple[str, Path]]:
    """The figures of one task (which ones depends on its metrics, classes and breakdowns): (caption, path)."""
    from ..metrics import au_f1

    metrics = list(result["metrics"])
    out: list[tuple[str, Path]] = []
    scored = [r for r in records if r["correct"] is not None]
    if scored and any(m.startswith(CALIBRATION_PREFIXES) for m in metrics):
        correct = [r["correct"] for r in scored]
        curves = {"stated (before the map)": ([r["confidence_raw"] or 0.0 for r in scored], correct)}
        if calibrated:
            curves["calibrated (after the map)"] = ([r["confidence"] or 0.0 for r in scored], correct)
        path = plots / f"{task}-reliability.png"
        reliability_plot(curves, path)
        out.append(("Reliability diagram" + ("" if calibrated else " (the model has no calibration map)"), path))
    classified = [r for r in records if r["gold_class"] is not None]
    if classified and result["classes"]:
        path = plots / f"{task}-confusion.png"
        confusion_plot([r["gold_class"] for r in classified], [r["pred_class"] for r in classified],
                       result["classes"], path, task)
        out.append(("Confusion matrix (rows: gold, normalised)", path))
    with_aus = [r for r in records if r["gold_aus"]]
    if with_aus and any(m.startswith("au_f1") for m in metrics):
        per_au = au_f1([r["aus"] for r in with_aus], [r["gold_aus"] for r in with_aus])["per_au"]
        path = plots / f"{task}-au_f1.png"
        bar_plot({"model": per_au}, path, "F1", f"{task}: per-AU F1")
        out.append(("Per-AU F1", path))
    groups = result["breakdowns"].get("modality")
    if groups:
        metric = next((m for m in metrics if m.startswith("ew_")), metrics[0])
        path = plots / f"{task}-modality.png"
        def named(by_group: dict[str, Any]) -> dict[str, float | None]:
            return {f"{k}\n(n={v['n']})": v[metric] for k, v in by_group.items()}

        series = {"model": named(groups)}
        for system, breakdown in result.get("reference_breakdowns", {}).items():
            if system in ("oracle", "keyword baseline") and metric in next(iter(breakdown["modality"].values()), {}):
                series[system] = named(breakdown["modality"])
        bar_plot(series, path, metric, f"{task}: {metric} by modality present")
        out.append((f"{metric} by modality present", path))
    return out


def _metric_table(result: dict[str, Any]) -> list[str]:
    refs = result.get("references", {})
    head = ["metric", "model", "95% interval", "n", *refs]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, m in result["metrics"].items():
        arrow = "↑" if result["higher_is_better"][name] else "↓"
        cells = [f"{name} {arrow}", _fmt(m["value"]), f"[{_fmt(m['low'])}, {_fmt(m['high'])}]", str(m["n"])]
        lines.append("| " + " | ".join(cells + [_fmt(refs[r].get(name)) for r in refs]) + " |")
    return lines


def _breakdown_tables(result: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for name, groups in result["breakdowns"].items():
        metrics = list(result["metrics"])
        lines += ["", f"By {name}:", "", "| group | n | " + " | ".join(metrics) + " |",
                  "|" + " --- |" * (len(metrics) + 2)]
        lines += [f"| {k} | {v['n']} | " + " | ".join(_fmt(v[m]) for m in metrics) + " |" for k, v in groups.items()]
    return lines


def write_report(results: dict[str, Any], records_by_task: dict[str, Sequence[dict[str, Any]]], out: Path) -> Path:
    """``out/report.md`` with a table per task (model, 95% interval, reference systems) and its figures in
    ``out/plots/``."""
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    model = results["model"]
    lines = [f"# Evaluation of {model.get('name')}", "",
             f"Fingerprint `{model.get('fingerprint')}`; calibration map: "
             f"{'applied' if model.get('calibrated') else 'none'}; clips per task: "
             f"{results.get('limit') or 'all'}. Intervals: percentile bootstrap (seeded).", ""]
    for task, result in results["tasks"].items():
        boot = result["bootstrap"]
        lines += [f"## {task}", "", result["description"] or "", "",
                  f"{result['n']} clips ({result['errors']} errors), split `{result['split']}`, "
                  f"taxonomy `{result['taxonomy']['name']}`, {boot['resamples']} resamples "
                  f"(confidence {boot['confidence']}, seed {boot['seed']}).", ""]
        lines += _metric_table(result) + _breakdown_tables(result)
        for caption, path in task_plots(task, result, records_by_task.get(task, []), plots,
                                        bool(model.get("calibrated"))):
            lines += ["", f"![{caption}](plots/{path.name})", f"*{caption}*"]
        lines.append("")
    target = out / "report.md"
    from ..jsonl import write_text

    write_text(target, "\n".join(lines) + "\n")
    return target


def _series(path: Path) -> dict[str, list[tuple[int, float]]]:
    """``metrics.jsonl`` as ``{key: [(step, value), ...]}`` (numeric values only)."""
    out: dict[str, list[tuple[int, float]]] = {}
    if not path.is_file():
        return out
    for _, row in read_jsonl(path)[0]:
        if not isinstance(row, dict):
            continue
        for k, v in row.items():
            if k != "step" and isinstance(v, (int, float)):
                out.setdefault(k, []).append((int(row.get("step", 0)), float(v)))
    return out


def _smooth(ys: Sequence[float], window: int) -> list[float]:
    """Trailing moving average over ``window`` points (the first points average what there is)."""
    return [sum(ys[max(0, i - window + 1):i + 1]) / (i + 1 - max(0, i - window + 1)) for i in range(len(ys))]


def reward_panels(metrics: Path, path: Path, window: int = 5) -> Path | None:
    """One panel per reward term of a GRPO stage (``rewards/<name>/mean`` with its ``/std`` as a band, both
    smoothed over ``window`` logs) plus the summed reward and the share of groups without reward variance, and a
    second row with KL and entropy on their own axes. None when the log has no reward."""
    series = _series(metrics)
    names = sorted(k[8:-5] for k in series if k.startswith("rewards/") and k.endswith("/mean"))  # rewards/<n>/mean
    extra = [k for k in ("reward", "frac_reward_zero_std") if k in series]
    if not names and not extra:
        return None
    top = [*names, *extra]
    plt = _pyplot()
    fig, axes = plt.subplots(2, max(len(top), 2), figsize=(3.2 * max(len(top), 2), 6), squeeze=False)
    for ax, name in zip(axes[0], top):
        key = f"rewards/{name}/mean" if name in names else name
        xs, ys = zip(*series[key])
        mean = _smooth(ys, window)
        std_key = f"rewards/{name}/std" if name in names else ("reward_std" if name == "reward" else None)
        if std_key in series:
            std = _smooth([v for _, v in series[std_key]][:len(mean)], window)
            ax.fill_between(xs[:len(std)], [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                            alpha=0.25, lw=0)
        ax.plot(xs, ys, lw=0.6, alpha=0.4)
        ax.plot(xs, mean, lw=1.8)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
    for ax in axes[0][len(top):]:
        ax.axis("off")
    for ax, key in zip(axes[1], ("kl", "entropy")):
        if key in series:
            xs, ys = zip(*series[key])
            ax.plot(xs, ys, lw=0.6, alpha=0.4)
            ax.plot(xs, _smooth(ys, window), lw=1.8)
        else:  # TRL logs no KL without a reference model (trainer.beta 0)
            note = "not logged (trainer.beta = 0: no KL term)" if key == "kl" else "not logged"
            ax.text(0.5, 0.5, note, ha="center", va="center", fontsize=8, transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step")
    for ax in axes[1][2:]:
        ax.axis("off")
    fig.suptitle(f"{metrics.parent.name}: rewards (mean, band = ±1 std across completions, smoothed)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def stage_metrics_plot(rows: dict[str, dict[str, Any]], refs: dict[str, dict[str, Any]], path: Path,
                       metrics: Sequence[str] = ("ew_f", "hit", "au_f1")) -> None:
    """Per-stage bars of each metric with their bootstrap 95% intervals as error bars (``rows[stage][metric]`` is
    ``{"value", "low", "high"}``), and the reference systems (oracle, baselines: ``refs[name][metric]``) as lines."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.8), squeeze=False)
    stages = list(rows)
    for ax, metric in zip(axes[0], metrics):
        vals = [rows[s].get(metric) or {} for s in stages]
        mid = [v.get("value") or 0.0 for v in vals]
        err = [[m - (v.get("low") if v.get("low") is not None else m) for m, v in zip(mid, vals)],
               [(v.get("high") if v.get("high") is not None else m) - m for m, v in zip(mid, vals)]]
        ax.bar(range(len(stages)), mid, yerr=err, capsize=3, color="tab:blue")
        for (name, ref), style in zip(refs.items(), ("-", "--", ":", "-.")):
            if ref.get(metric) is not None:
                ax.axhline(ref[metric], ls=style, lw=1, color="grey", label=name)
        ax.set_xticks(range(len(stages)), stages)
        ax.set_ylim(0, 1)
        ax.set_title(metric.replace("_", "-").upper(), fontsize=10)
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
