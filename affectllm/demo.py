"""`affectllm demo`: the whole job on EmoWorld with the tiny preset, on CPU, each step reused when already done.

1. synthesize EmoWorld (default preset: 2,400 clips, seed 0) and ``data prep`` it (frames + audio, no faces);
2. stage 0 ``encoders``: warm-start the towers on the gold, then cache their features (``--cache-features``,
   reading step 1's arrays with ``--arrays-from`` instead of decoding every clip again);
3. stage 1 SFT, stage 2 GRPO, stage 3 calibration: the tiny recipes the package ships (``affectllm/recipes/tiny/``,
   read through :mod:`importlib.resources`; ``recipes/tiny/`` is a copy), chained by ``init_from``, towers frozen;
4. every stage scored on the same held-out test clips (the whole test split, :data:`TEST_CLIPS`) with bootstrap 95%
   intervals, paired intervals for stage 2 - stage 1, and the oracle and keyword baseline scored on those clips;
5. ``affectllm label`` on a few test clips and one ``affectllm chat`` question, through their main functions;
6. ``report.md`` (table, plots, timings) and ``results.json``.

A second run skips every step whose ``.done.json`` exists (``--fresh`` starts over). ``--quick`` shortens every
stage (a smoke run: the numbers are not meaningful).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import shutil
import time
from collections.abc import Callable
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

STAGES = ("encoders", "sft", "grpo", "calibrate")
SCORED = ("sft", "grpo", "calibrate")
# Every clip of the test split (360 of 2,400). Why not fewer: on 160 clips even a perfectly calibrated confidence
# shows ECE 0.06-0.07 on average (10 equal-width bins, simulated), above the bar's 0.05; on 360, 0.04-0.05.
TEST_CLIPS: int | None = None
# Clips generated together when scoring: the tiny model's decode steps cost mostly per-step overhead, so greedy
# answers for the 360 test clips took 11-13 s at 40 a batch and 30 s at 8 (the demo's SFT model, 2 threads; the
# answers were identical). Reading the feature cache instead of running the tiny towers changed little there.
SCORE_BATCH = 40
LABELED = 4
CHAT_QUESTION = "Which emotions does the person feel, and which cues show it?"
QUICK = {
    "encoders": ["trainer.max_steps=4", "trainer.per_device_train_batch_size=4"],
    "sft": ["trainer.max_steps=4"],
    "grpo": ["trainer.max_steps=2", "trainer.max_completion_length=16"],
    "calibrate": ["trainer.max_steps=1", "trainer.max_completion_length=16", "calibrate.posthoc_samples=8"],
}


def load_tiny_recipe(stage: str, overrides: list[str] | None = None) -> Any:
    """The shipped tiny recipe of ``stage`` (package data ``affectllm/recipes/tiny/<stage>.yaml``), loaded."""
    from .config import load_recipe

    with as_file(files("affectllm") / "recipes" / "tiny" / f"{stage}.yaml") as path:
        return load_recipe(path, overrides)


def set_threads(threads: int | None) -> int:
    """Torch threads for this machine: ``threads``, else the CPUs this process may run on less those other jobs
    keep busy (the 1-minute load average), at least one. More threads than free cores spin-wait each other: a GRPO
    step of the demo took 33 s with 2 threads on 2 cores beside other jobs (load 4.5) and 2.5 s with one.
    Returns the number set."""
    import torch

    cpus = len(os.sched_getaffinity(0))
    torch.set_num_threads(threads or max(1, cpus - int(os.getloadavg()[0] + 0.5)))
    return torch.get_num_threads()


class Steps:
    """Runs named steps once: a step's result is kept in ``<root>/<name>/.done.json`` and read back next time;
    each run's wall and CPU seconds (this process and its children) and the load average are recorded."""

    def __init__(self, root: Path, console: Any) -> None:
        self.root, self.console = root, console
        self.timings: dict[str, dict[str, Any]] = {}
        self.total = 0

    def __call__(self, name: str, title: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        self.total += 1
        done = self.root / name / ".done.json"
        self.console.rule(f"[{self.total}] {title}")
        if done.is_file():
            saved = json.loads(done.read_text())
            self.timings[name] = {**saved["timing"], "reused": True}
            self.console.print(f"reused {done.parent} (done earlier; --fresh redoes it)")
            return saved["result"]
        t0, c0, load0 = time.perf_counter(), _cpu_seconds(), os.getloadavg()[0]
        result = fn()
        timing = {"wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(_cpu_seconds() - c0, 1),
                  "load_avg_1m": [round(load0, 2), round(os.getloadavg()[0], 2)]}
        self.timings[name] = timing
        done.parent.mkdir(parents=True, exist_ok=True)
        done.write_text(json.dumps({"result": result, "timing": timing}, indent=2, default=str))
        self.console.print(f"{title}: {timing['wall_s']} s wall, {timing['cpu_s']} s CPU, "
                           f"load average {timing['load_avg_1m'][0]} -> {timing['load_avg_1m'][1]}")
        return result


def _cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _prep(manifest: Path, out: Path, workers: int, model: Path | None = None,
          arrays_from: Path | None = None) -> dict[str, Any]:
    from .inputs.prep import PrepConfig, prep_main

    config = PrepConfig(workers=workers, faces=False, cache_features=model is not None,
                        model=str(model) if model else None, arrays_from=str(arrays_from) if arrays_from else None)
    if prep_main(str(manifest), str(out), config) != 0:
        raise RuntimeError(f"data prep into {out} failed; see {out / 'prep.jsonl'} for the rows' errors")
    return {"out": str(out)}


def _stage_overrides(stage: str, root: Path, manifest: Path, quick: bool) -> list[str]:
    """Where a stage reads and writes in the demo folder: the chain by ``init_from``, the feature cache made from
    the warm-started towers, the SFT confidence targets; evaluation is the demo's own (one set of test clips)."""
    out = [f"data.manifest={manifest}", f"output_dir={root / stage}", "eval.enabled=false"]
    if stage == "encoders":
        out += [f"data.feature_cache={root / 'prep'}", "eval.enabled=true"]
    else:
        out += [f"init_from={root / STAGES[STAGES.index(stage) - 1]}", f"data.feature_cache={root / 'features'}"]
    if stage == "sft":
        out.append(f"sft.confidence_file={root / 'encoders' / 'confidence.jsonl'}")
    return out + (QUICK[stage] if quick else [])


def _train(stage: str, root: Path, manifest: Path, quick: bool) -> dict[str, Any]:
    from .train.run import run_recipe

    result = run_recipe(load_tiny_recipe(stage, _stage_overrides(stage, root, manifest, quick))) or {}
    return {k: v for k, v in result.items() if isinstance(v, (int, float, str)) or v is None}


def demo_main(out: str = "runs/demo", n: int = 2400, seed: int = 0, quick: bool = False, fresh: bool = False,
              threads: int | None = None) -> int:
    """Run the whole demo (see the module docs); print the table and write ``report.md`` and ``results.json``."""
    from rich.console import Console

    from .emoworld.generate import synth_main

    console = Console()
    root = Path(out)
    if fresh and root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    n_threads = set_threads(threads)
    console.print(f"torch threads: {n_threads}")
    t0 = time.perf_counter()
    steps = Steps(root, console)
    world = root / "emoworld"
    manifest = world / "manifest.jsonl"

    def synth() -> dict[str, Any]:
        # one process per torch thread the machine gives us (the clips do not depend on it)
        if synth_main(str(world), n, seed, overrides=[f"workers={n_threads}"]) != 0:
            raise RuntimeError("EmoWorld synthesis failed (see above)")
        return {"n": n, "seed": seed}

    steps("emoworld", f"EmoWorld: {n} clips, default preset, seed {seed}", synth)
    steps("prep", "data prep: frames and audio per clip", lambda: _prep(manifest, root / "prep", n_threads))
    heads = steps("encoders", "stage 0: encoder warm-start on the gold", lambda: _train("encoders", root, manifest,
                                                                                         quick))
    steps("features", "data prep --cache-features --arrays-from prep (warm-started towers)",
          lambda: _prep(manifest, root / "features", n_threads, root / "encoders", arrays_from=root / "prep"))
    for stage, title in (("sft", "stage 1: SFT"), ("grpo", "stage 2: GRPO"), ("calibrate", "stage 3: calibration")):
        steps(stage, title, lambda stage=stage: _train(stage, root, manifest, quick))
    scores = steps("scores", f"evaluation: every stage on the same {TEST_CLIPS or 'held-out'} test clips",
                   lambda: evaluate_stages(root, manifest, seed, 16 if quick else TEST_CLIPS, quick))
    usage = steps("use", f"affectllm label ({LABELED} test clips) and affectllm chat",
                  lambda: label_and_chat(root, manifest, seed, CHAT_QUESTION, LABELED))
    results = {"scores": scores, "encoders": heads, "use": usage, "timings": steps.timings,
               "seconds": round(time.perf_counter() - t0, 1), "quick": quick, "n": n, "seed": seed,
               "threads": n_threads}
    (root / "results.json").write_text(json.dumps(results, indent=2, default=str))
    report = write_report(root, results)
    console.print(report.read_text())
    console.print(f"demo finished in {results['seconds']} s; outputs in {root}")
    return 0


# -- evaluation on one set of test clips ----------------------------------------------------------------------------
def _stats(labels: list[list[str]], aus: list[list[str]], clips: list[Any]) -> dict[str, Callable[[Any], Any]]:
    """Per-metric statistics of a list of clip indices (a bootstrap resample) for one system's predictions: EW-F,
    HIT and micro AU-F1, equal to :func:`~affectllm.metrics.ew_scores`, :func:`~affectllm.metrics.hit_rate` and
    :func:`~affectllm.metrics.au_f1` on those clips. Each clip's share (per-wheel precision/recall and hit, AU
    counts) is computed once, so a resample only sums: the metric functions themselves normalise every label again
    for each of the thousands of resamples (the scoring step took 125 s, 100 of them in the bootstrap)."""
    from .metrics import au_counts, ew_sample, hit_sample
    from .parsing import gold_labels

    ew = [ew_sample(lab, gold_labels(c)) for lab, c in zip(labels, clips, strict=True)]
    hits = [hit_sample(lab, c.emotion) if c.emotion else None for lab, c in zip(labels, clips, strict=True)]
    counts = [au_counts(pred, c.aus) if c.aus else None for pred, c in zip(aus, clips, strict=True)]
    wheels = len(ew[0]) if ew else 0

    def ew_f(idx: Any) -> float:
        fs = []
        for k in range(wheels):
            prs = [ew[i][k] for i in idx if ew[i][k] is not None]
            p, r = (sum(p for p, _ in prs) / len(prs), sum(r for _, r in prs) / len(prs)) if prs else (0.0, 0.0)
            fs.append(2 * p * r / (p + r) if p + r > 0 else 0.0)
        return sum(fs) / wheels if wheels else 0.0

    def hit(idx: Any) -> float:
        means = []
        for k in range(wheels):
            got = [hits[i][k] for i in idx if hits[i] is not None and hits[i][k] is not None]
            means.append(sum(got) / len(got) if got else 0.0)
        return sum(means) / len(means) if means else 0.0

    def au(idx: Any) -> float | None:
        rows = [counts[i] for i in idx if counts[i] is not None]
        if not rows:
            return None
        tp, fp, fn = (sum(r[j] for r in rows) for j in range(3))
        return round(2 * tp / (2 * tp + fp + fn), 4) if tp + fp + fn else 0.0

    return {"ew_f": ew_f, "hit": hit, "au_f1": au}


def _intervals(stats: dict[str, Callable[[Any], Any]], n: int, seed: int) -> dict[str, dict[str, Any]]:
    from .evaluation.bootstrap import bootstrap

    return {k: bootstrap(f, n, seed=seed).as_dict(4) for k, f in stats.items()}


def _references(manifest: Path, clips: list[Any]) -> dict[str, tuple[list[list[str]], list[list[str]]]]:
    """The oracle's and the keyword baseline's (labels, AUs) on ``clips``, from the world's latent states (redrawn
    from its seed without rendering, :func:`affectllm.emoworld.generate.simulate`)."""
    from .emoworld.generate import simulate
    from .emoworld.oracle import Baselines, Oracle
    from .emoworld.world import resolve_knobs

    summary = json.loads((manifest.parent / "emoworld.json").read_text())
    knobs = resolve_knobs(summary["preset"], summary["overrides"])
    rows, latents = simulate(summary["n"], summary["seed"], knobs)
    by_id = {r["id"]: (r, lat) for r, lat in zip(rows, latents, strict=True)}
    oracle, base = Oracle(knobs), Baselines([r for r in rows if r["split"] == "train"])
    out = {}
    for name, fn in (("oracle", lambda r, lat: oracle.predict(lat)), ("keyword baseline",
                                                                      lambda r, lat: base.keyword_predict(r))):
        preds = [fn(*by_id[c.id]) for c in clips]
        out[name] = ([p[0] for p in preds], [p[1] for p in preds])
    return out


def evaluate_stages(root: Path, manifest: Path, seed: int, n_test: int | None, quick: bool) -> dict[str, Any]:
    """Every stage's model (calibration with its post-hoc map) and the references on the same test clips: metrics
    with bootstrap intervals, paired intervals of the stage-to-stage differences, the reliability diagram."""
    from .data.manifest import select_clips
    from .data.prompts import QUESTIONS
    from .evaluation.bootstrap import bootstrap, paired_bootstrap
    from .evaluation.evidence import Evidence
    from .evaluation.posthoc import ConfidenceMap
    from .evaluation.report import reliability_plot
    from .evaluation.runner import Correctness, calibration_metrics, confidence_pairs, predict, score
    from .inputs.store import ClipStore
    from .jsonl import write_jsonl
    from .model.build import load_pretrained

    recipe = load_tiny_recipe("calibrate", [f"data.manifest={manifest}"])
    judge = Correctness.from_recipe(recipe)  # the calibration reward's judgement of "right", for every stage
    clips = select_clips(str(manifest), "test", n_test, seed)
    # the feature cache of the frozen warm-started towers (prep folder with --cache-features): scoring reads their
    # outputs instead of running them on every clip of every stage
    store = ClipStore(str(root / "features"), num_frames=recipe.data.num_frames, cache_size=len(clips))
    out: dict[str, Any] = {"n": len(clips), "stages": {}, "references": {}, "paired": {}}
    stats: dict[str, dict[str, Callable[[Any], Any]]] = {}
    curves: dict[str, tuple[list[float], list[bool]]] = {}
    for stage in SCORED:
        model, processor = load_pretrained(root / stage, device="cpu")
        conf_map = ConfidenceMap.load(root / stage) if stage == "calibrate" else None
        store.features_for(model, processor)  # checks the cache was made by this model's (frozen) towers
        preds = predict(model, processor, clips, store, question=QUESTIONS[recipe.task], batch_size=SCORE_BATCH,
                        max_new_tokens=32 if quick else recipe.eval.max_new_tokens)
        evidence = None
        if conf_map is not None and conf_map.reads_evidence:  # the map reads each answer's evidence
            model_evidence = Evidence.load(root / stage)
            if model_evidence is None:
                raise FileNotFoundError(f"{root / stage}: calibration.json reads the evidence but evidence.json is "
                                        "missing: rerun the calibration step (affectllm demo --fresh)")
            post = model_evidence.posteriors(model, processor, store, clips)
            evidence = [model_evidence.probability(p.labels, lp, judge) for p, lp in zip(preds, post, strict=True)]
        write_jsonl(({"id": c.id, "labels": p.labels, "confidence": p.confidence, "aus": p.aus, "raw": p.raw,
                      **({} if evidence is None else {"evidence": round(evidence[i], 4)})}
                     for i, (c, p) in enumerate(zip(clips, preds, strict=True))),
                    root / "scores" / f"{stage}_predictions.jsonl")
        result = score(preds, clips, judge, conf_map, evidence)
        stats[stage] = _stats([p.labels for p in preds], [p.aus for p in preds], clips)
        pairs = confidence_pairs(preds, clips, judge, conf_map, evidence)
        if conf_map is not None:  # the number the LLM wrote, before the map (and its evidence, if it reads that)
            curves[f"{stage} (stated)"] = confidence_pairs(preds, clips, judge)
        curves[stage + (" + post-hoc map" if conf_map else "")] = pairs
        calib = {k: bootstrap(lambda idx, k=k, c=pairs: calibration_metrics([c[0][i] for i in idx],
                                                                             [c[1][i] for i in idx])[k],
                              len(pairs[0]), seed=seed).as_dict(4) for k in ("ece", "auroc")}
        out["stages"][stage] = {**_intervals(stats[stage], len(clips), seed), **calib,
                                "format_ok": result["format_ok"], "mean_labels": result["mean_labels"]}
        if conf_map is not None:
            out["stages"][stage].update(confidence_input=conf_map.source, stated_ece=result["ece"],
                                        stated_auroc=result["auroc"])
    for name, (labels, aus) in _references(manifest, clips).items():
        out["references"][name] = _intervals(_stats(labels, aus, clips), len(clips), seed)
    for a, b in (("sft", "grpo"), ("grpo", "calibrate")):
        out["paired"][f"{b} - {a}"] = {k: paired_bootstrap(stats[a][k], stats[b][k], len(clips), seed=seed).as_dict(4)
                                       for k in ("ew_f", "au_f1")}
    reliability_plot(curves, root / "reliability.png")
    out["bar"] = check_bar(out)
    return out


def check_bar(scores: dict[str, Any]) -> dict[str, Any]:
    """Issue 11's bar, each item ``{"value", "needed", "met"}``, on the demo's own test clips."""
    st, ref, paired = scores["stages"], scores["references"], scores["paired"]
    final, oracle, keyword = st["calibrate"]["ew_f"]["value"], ref["oracle"]["ew_f"]["value"], \
        ref["keyword baseline"]["ew_f"]["value"]

    def item(value: float | None, needed: float, at_most: bool = False) -> dict[str, Any]:
        met = value is not None and (value <= needed if at_most else value >= needed)
        return {"value": value, "needed": round(needed, 4), "met": met}

    return {
        "stage 3 EW-F / oracle EW-F >= 0.85": item(final / oracle if oracle else None, 0.85),
        "stage 3 EW-F - keyword EW-F >= 0.25": item(final - keyword, 0.25),
        "stage 2 - stage 1 EW-F, 95% low > 0": item(paired["grpo - sft"]["ew_f"]["low"], 1e-9),
        "stage 2 - stage 1 AU-F1, 95% low > 0": item(paired["grpo - sft"]["au_f1"]["low"], 1e-9),
        "stage 3 ECE (post-hoc) <= 0.05": item(st["calibrate"]["ece"]["value"], 0.05, at_most=True),
        "stage 3 AUROC (post-hoc) >= 0.75": item(st["calibrate"]["auroc"]["value"], 0.75),
        "stage 3 - stage 2 EW-F >= -0.01": item(paired["calibrate - grpo"]["ew_f"]["value"], -0.01),
    }


# -- use the trained model ------------------------------------------------------------------------------------------
def label_and_chat(root: Path, manifest: Path, seed: int, question: str, k: int) -> dict[str, Any]:
    """``affectllm label`` on ``k`` test clips and one ``affectllm chat`` question about the first, through their
    main functions, with the final (calibrated) model; returns the label rows and the chat transcript."""
    from .data.manifest import select_clips
    from .jsonl import write_jsonl
    from .serve.chat import chat_main
    from .serve.label import LabelJob, label_main

    model = str(root / "calibrate")
    clips = select_clips(str(manifest), "test", k, seed + 1)
    use = root / "use"
    write_jsonl(({"id": c.id, "video": c.video, "audio": c.audio, "transcript": c.transcript, "split": "test"}
                 for c in clips), use / "clips.jsonl")
    # the media stay in the world's folder: name it as an allowed root of this manifest (MANIFEST.roots)
    (use / "clips.roots").write_text(f"{manifest.parent.resolve()}\n")
    if label_main(LabelJob(manifest=str(use / "clips.jsonl"), model=model, out=str(use / "labels"),
                           num_workers=0)) != 0:
        raise RuntimeError(f"affectllm label failed on {use / 'clips.jsonl'} (see above)")
    rows = [json.loads(line) for line in (use / "labels" / "labels.jsonl").read_text().splitlines()]
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        chat_main(model, clips[0].video, clips[0].audio, clips[0].transcript, question)
    print(buffer.getvalue())
    return {"labels": [{"id": r.get("id"), "labels": r.get("labels"), "confidence": r.get("confidence"),
                        "gold": next(c.labels or [c.emotion] for c in clips if c.id == r.get("id"))} for r in rows],
            "chat": {"clip": clips[0].id, "question": question, "transcript": buffer.getvalue().strip()}}


# -- report ---------------------------------------------------------------------------------------------------------
def _cell(d: dict[str, Any] | None, pct: bool = True) -> str:
    """``value [low, high]`` of an interval dict (percent for rates, 3 decimals otherwise)."""
    if not d or d.get("value") is None:
        return "-"
    f = (lambda v: f"{100 * v:.1f}") if pct else (lambda v: f"{v:.3f}")
    return f"{f(d['value'])} [{f(d['low'])}, {f(d['high'])}]" if d.get("low") is not None else f(d["value"])


def write_report(root: Path, results: dict[str, Any]) -> Path:
    """``report.md``: the per-stage table against the oracle and the keyword baseline (95% intervals), the paired
    differences, the bar, the encoder heads, timings, plots, the labelled clips and the chat answer."""
    from .evaluation.report import reward_panels, stage_metrics_plot
    from .jsonl import write_text

    sc = results["scores"]
    refs = {name: {k: v["value"] for k, v in ref.items()} for name, ref in sc["references"].items()}
    stage_metrics_plot(sc["stages"], refs, root / "stage_metrics.png")
    plots = ["stage_metrics.png", "reliability.png"]
    for stage in ("grpo", "calibrate"):
        if reward_panels(root / stage / "metrics.jsonl", root / f"rewards_{stage}.png"):
            plots.append(f"rewards_{stage}.png")
    lines = [f"# affectllm demo: EmoWorld, {results['n']} clips, seed {results['seed']}"
             + (" (--quick: numbers not meaningful)" if results["quick"] else ""), "",
             f"Test clips scored: {sc['n']} (the same for every row). Cells: value [95% bootstrap interval].", "",
             "| system | EW-F | HIT | AU-F1 | ECE | AUROC | format ok |", "|---|---|---|---|---|---|---|"]
    for stage, r in sc["stages"].items():
        lines.append(f"| tiny after {stage} | {_cell(r['ew_f'])} | {_cell(r['hit'])} | {_cell(r['au_f1'])} | "
                     f"{_cell(r['ece'], False)} | {_cell(r['auroc'], False)} | {100 * r['format_ok']:.1f} |")
    for name, r in sc["references"].items():
        lines.append(f"| {name} | {_cell(r['ew_f'])} | {_cell(r['hit'])} | {_cell(r['au_f1'])} | - | - | - |")
    cal = sc["stages"].get("calibrate", {})
    if cal.get("confidence_input"):
        where = "docs/emoworld.md" if cal["confidence_input"] == "evidence" else "the number the LLM wrote"
        lines += ["", f"Stage 3's ECE/AUROC are those of its calibrated confidence: the post-hoc map of the "
                  f"answer's {cal['confidence_input']} ({where}); the number the LLM wrote has ECE "
                  f"{cal['stated_ece'] or 0:.3f}, AUROC {cal['stated_auroc'] or 0:.3f}."]
    lines += ["", "Paired differences (same clips resampled together):", "", "| difference | EW-F | AU-F1 |",
              "|---|---|---|"]
    lines += [f"| {k} | {_cell(v['ew_f'])} | {_cell(v['au_f1'])} |" for k, v in sc["paired"].items()]
    lines += ["", "## The bar", "", "| criterion | value | needed | met |", "|---|---|---|---|"]
    for k, v in sc["bar"].items():
        shown = "-" if v["value"] is None else f"{v['value']:.4f}"
        lines.append(f"| {k} | {shown} | {v['needed']} | {'yes' if v['met'] else 'NO'} |")
    heads = results.get("encoders") or {}
    lines += ["", "## Stage 0 heads (test split)", "",
              ", ".join(f"{k} {v:.3f}" for k, v in heads.items() if isinstance(v, float)) or "-", "",
              f"## Time ({results['threads']} torch threads)", "", "| step | wall s | CPU s | load avg 1 min |",
              "|---|---|---|---|"]
    for k, t in results["timings"].items():
        load = "-" if t.get("reused") else f"{t['load_avg_1m'][0]} -> {t['load_avg_1m'][1]}"
        lines.append(f"| {k}{' (reused)' if t.get('reused') else ''} | {t['wall_s']} | {t['cpu_s']} | {load} |")
    lines += [f"| total this run | {results['seconds']} | | |", "", "## Plots", ""]
    lines += [f"![{p}]({p})" for p in plots]
    lines += ["", "## `affectllm label` on test clips", "", "| clip | labels | confidence | gold |",
              "|---|---|---|---|"]
    for r in results["use"]["labels"]:
        conf = "-" if r["confidence"] is None else f"{r['confidence']:.2f}"
        lines.append(f"| {r['id']} | {', '.join(r['labels'] or [])} | {conf} | {', '.join(r['gold'])} |")
    chat = results["use"]["chat"]
    lines += ["", f"## `affectllm chat` about {chat['clip']}", "", "```", chat["transcript"], "```", ""]
    write_text(root / "report.md", "\n".join(lines))
    return root / "report.md"
