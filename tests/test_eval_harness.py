"""The evaluation harness: tasks from YAML, scoring with bootstrap intervals, reports, determinism, compare."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from affectllm.data.manifest import read_manifest
from affectllm.evaluation.bootstrap import bootstrap, paired_bootstrap
from affectllm.evaluation.harness import Runner, compare_runs, run_eval
from affectllm.evaluation.label_file import InputError
from affectllm.evaluation.tasks import (
    TaskError,
    TaskSpec,
    first_matching_class,
    load_task,
    prepare_gold,
    sentiment_from_labels,
    shipped_tasks,
)
from affectllm.taxonomy import default_taxonomy
from affectllm.types import Clip

EMOWORLD_TASKS = ["emoworld_ov", "emoworld_basic", "emoworld_au", "emoworld_calibration"]
LABEL_OUTPUT_KEYS = {"id", "labels", "confidence", "explanation", "aus", "raw", "error", "model", "fingerprint"}


def _gold_labeler(manifest: Path, wrong: bool = False):
    """A stand-in model that answers the gold (or, with ``wrong``, always "disgusted" and no AUs)."""
    clips = {c.id: c for c in read_manifest(manifest)[0]}

    def label(batch, question, max_new_tokens):
        rows = []
        for clip in batch:
            gold = clips[clip.id]
            labels = ["disgusted"] if wrong else list(gold.labels or [])
            rows.append({"id": clip.id, "labels": labels, "aus": [] if wrong else list(gold.aus or []),
                         "confidence": 0.9, "confidence_raw": 0.6, "explanation": "", "raw": "", "error": None,
                         "model": "stand-in", "fingerprint": "x"})
        return rows

    return label


def _is_blank(png: Path) -> bool:
    from PIL import Image

    with Image.open(png) as img:
        return len(img.convert("RGB").getcolors(maxcolors=1 << 24) or []) < 2


@pytest.fixture()
def world(emoworld, monkeypatch):
    """The shipped EmoWorld tasks pointed at the 12-clip fixture world, on all its clips (not just 2 test clips)."""
    monkeypatch.setenv("AFFECTLLM_EMOWORLD", str(emoworld.parent))
    return [replace(load_task(name), split=None) for name in EMOWORLD_TASKS]


def test_eval_emoworld_tiny_model_report_and_bytes_identical(tiny, emoworld, monkeypatch, tmp_path):
    from affectllm.evaluation.posthoc import ConfidenceMap
    from affectllm.serve.evaluate import evaluate_main

    model, processor = tiny
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    ConfidenceMap("platt", a=2.0, b=-1.0, n=10).save(model_dir)
    monkeypatch.setenv("AFFECTLLM_EMOWORLD", str(emoworld.parent))
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        assert evaluate_main(str(model_dir), EMOWORLD_TASKS, str(out), limit=3, batch_size=2) == 0
    assert (outs[0] / "results.json").read_bytes() == (outs[1] / "results.json").read_bytes()

    results = json.loads((outs[0] / "results.json").read_text())
    assert results["model"]["calibrated"] is True
    assert set(results["tasks"]) == set(EMOWORLD_TASKS)
    for task in EMOWORLD_TASKS:
        rows = [json.loads(line) for line in (outs[0] / "predictions" / f"{task}.jsonl").read_text().splitlines()]
        assert rows and all(LABEL_OUTPUT_KEYS <= set(r) for r in rows)
        for metric in results["tasks"][task]["metrics"].values():
            assert {"value", "low", "high", "n"} <= set(metric)
    assert "oracle" in results["tasks"]["emoworld_ov"]["references"]
    assert "majority baseline" in results["tasks"]["emoworld_basic"]["references"]
    report = (outs[0] / "report.md").read_text()
    plots = sorted((outs[0] / "plots").glob("*.png"))
    kinds = {p.stem.rsplit("-", 1)[1] for p in plots}
    assert kinds == {"reliability", "confusion", "au_f1", "modality"}
    for png in plots:
        assert not _is_blank(png), png
        assert f"plots/{png.name}" in report
    assert "| model | 95% interval | n | oracle |" in report  # the oracle column beside the model


def test_gold_answers_score_perfectly_and_references_sit_beside(world, emoworld, tmp_path):
    runner = Runner(_gold_labeler(emoworld), batch_size=5)
    results = run_eval(runner, world, tmp_path / "out", {"name": "stand-in"})
    tasks = results["tasks"]
    for task, metric in [("emoworld_ov", "ew_level1"), ("emoworld_ov", "hit_rate"), ("emoworld_basic", "accuracy"),
                         ("emoworld_basic", "uar"), ("emoworld_au", "au_f1_micro")]:
        m = tasks[task]["metrics"][metric]
        assert m["value"] == pytest.approx(1.0), (task, metric)
        assert m["low"] == pytest.approx(1.0) and m["n"] == 12
    assert tasks["emoworld_calibration"]["metrics"]["brier"]["value"] == pytest.approx(0.01)  # calibrated 0.9
    assert tasks["emoworld_calibration"]["metrics"]["brier_raw"]["value"] == pytest.approx(0.16)  # stated 0.6
    oracle = tasks["emoworld_ov"]["references"]["oracle"]["ew_level1"]
    majority = tasks["emoworld_ov"]["references"]["majority baseline"]["ew_level1"]
    assert 0.0 <= majority < oracle <= 1.0
    modality = tasks["emoworld_ov"]["breakdowns"]["modality"]
    assert sum(g["n"] for g in modality.values()) == 12


def test_compare_two_runs_paired_and_interval_fallback(world, emoworld, tmp_path, capsys):
    from affectllm.serve.evaluate import compare_main

    good, bad = tmp_path / "good", tmp_path / "bad"
    run_eval(Runner(_gold_labeler(emoworld)), world[:2], good, {"name": "gold"})
    run_eval(Runner(_gold_labeler(emoworld, wrong=True)), world[:2], bad, {"name": "wrong"})
    rows = {(r["task"], r["metric"]): r for r in compare_runs(good, bad, resamples=200)}
    ew = rows[("emoworld_ov", "ew_level1")]
    assert ew["method"] == "paired" and ew["shared"] == 12
    assert ew["diff"] < 0 and ew["high"] < 0 and ew["significant"]
    same = {(r["task"], r["metric"]): r for r in compare_runs(good, good, resamples=50)}
    assert not same[("emoworld_ov", "ew_level1")]["significant"] and same[("emoworld_ov", "ew_level1")]["diff"] == 0
    shutil.rmtree(bad / "samples")
    fallback = {(r["task"], r["metric"]): r for r in compare_runs(good, bad)}[("emoworld_ov", "ew_level1")]
    assert fallback["method"] == "A's interval" and fallback["significant"]
    (good / "samples" / "emoworld_ov.jsonl").write_text('{"id": "ew00000"\n')
    with pytest.raises(InputError, match=r"emoworld_ov\.jsonl.*1"):
        compare_runs(good, good)
    (bad / "results.json").write_text("{")
    with pytest.raises(InputError, match=r"results\.json: not a results file"):
        compare_runs(good, bad)
    shutil.rmtree(good / "samples")
    assert compare_main(str(good), str(tmp_path / "good"), resamples=50) == 0
    printed = capsys.readouterr().out
    assert "ew_level1" in printed and "emoworld_basic" in printed


@pytest.mark.parametrize(("text", "match"), [
    ("dataset:\n  manifest: m.jsonl\nmetrcs: [ew_level1]\n", r"typo\.yaml.*metrcs.*did you mean 'metrics'"),
    ("dataset:\n  manifst: m.jsonl\nmetrics: [ew_level1]\n", r"typo\.yaml.*dataset\.manifst.*did you mean 'manifest'"),
    ("dataset:\n  manifest: m.jsonl\nmetrics: [ew_levl1]\n", r"typo\.yaml.*metrics\[0\].*did you mean 'ew_level1'"),
    ("dataset:\n  manifest: m.jsonl\nmetrics: [accuracy]\n", r"typo\.yaml.*'classes'"),
    ("dataset:\n  manifest: m.jsonl\nmetrics: [ece]\nbootstrap: {resamples: 0}\n",
     r"typo\.yaml.*'bootstrap'.*resamples must be >= 1"),
])
def test_task_typo_names_file_and_key(tmp_path, text, match):
    path = tmp_path / "typo.yaml"
    path.write_text(text)
    with pytest.raises(TaskError, match=match):
        load_task(str(path))


def test_unknown_task_lists_the_shipped_ones():
    with pytest.raises(TaskError, match="unknown task 'nope'.*emoworld_ov"):
        load_task("nope")


def test_importer_task_selects_the_protocol_split(tmp_path, monkeypatch):
    from affectllm.evaluation.harness import select

    for rel in ("Actor_12/01-01-06-02-02-01-12.mp4", "Actor_21/03-01-03-01-01-02-21.wav",
                "Actor_22/03-01-02-01-01-01-22.wav"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"\0")
    monkeypatch.setenv("RAVDESS_ROOT", str(tmp_path))
    clips = select(load_task("ravdess"))
    assert sorted((c.id, c.emotion) for c in clips) == [("ravdess/01-02-01-01-01-22", "calm"),
                                                        ("ravdess/01-03-01-01-02-21", "happy")]  # actor 12: train
    path = tmp_path / "opt.yaml"
    path.write_text("dataset:\n  importer: ravdess\n  root: /x\n  options: {test_actor: [1]}\nmetrics: [uar]\n"
                    "classes: [calm]\n")
    with pytest.raises(TaskError, match=r"opt\.yaml.*dataset\.options\.test_actor.*test_actors"):
        load_task(str(path))


def test_every_shipped_task_loads(monkeypatch):
    names = shipped_tasks()
    for dataset in ("mer2023", "mer2024", "ovmerd_plus", "mafw", "dfew", "ferv39k", "ravdess", "cremad", "iemocap",
                    "meld", "mosi", "mosei", "sims", "simsv2"):
        assert dataset in names
    for var in ("OVMERD_ROOT", "MER2023_ROOT", "MER2024_ROOT", "IEMOCAP_ROOT", "MELD_ROOT", "MOSI_ROOT", "MOSEI_ROOT",
                "SIMS_ROOT", "SIMSV2_ROOT", "MAFW_ROOT", "DFEW_ROOT", "FERV39K_ROOT", "RAVDESS_ROOT", "CREMAD_ROOT"):
        monkeypatch.setenv(var, "/data/x")
    for name in names:
        spec = load_task(name)
        assert spec.task == name and spec.metrics and spec.description
    monkeypatch.delenv("MELD_ROOT")
    with pytest.raises(TaskError, match=r"meld\.yaml.*dataset\.root.*MELD_ROOT"):
        load_task("meld")


def test_gold_mapping_and_prediction_hooks():
    tax = default_taxonomy()
    iemocap = TaskSpec(task="t", label_map={"excited": "happy"}, classes=["angry", "happy", "sad", "neutral"])
    clips = [Clip("a", audio="a.wav", emotion="excited", labels=["excited"]),
             Clip("b", audio="b.wav", emotion="frustrated", labels=["frustrated"]),
             Clip("c", audio="c.wav", emotion="sad", labels=["sad"])]
    kept = prepare_gold(clips, iemocap)
    assert [(c.id, c.emotion, c.labels) for c in kept] == [("a", "happy", ["happy"]), ("c", "sad", ["sad"])]
    assert first_matching_class(["calm", "joyful"], iemocap, tax) == "happy"  # cluster of "joyful" is happiness
    assert first_matching_class(["banana"], iemocap, tax) == "other"
    sentiment = TaskSpec(task="s", gold=["sentiment_from_valence"], classes=["negative", "positive"])
    clips = [Clip("p", video="v", valence=0.4), Clip("z", video="v", valence=0.0), Clip("n", video="v", valence=-1.0)]
    assert [(c.id, c.emotion) for c in prepare_gold(clips, sentiment)] == [("p", "positive"), ("n", "negative")]
    assert sentiment_from_labels(["happy", "relieved"], sentiment, tax) == "positive"
    assert sentiment_from_labels(["sad", "happy", "angry"], sentiment, tax) == "negative"
    assert sentiment_from_labels(["neutral"], sentiment, tax) == "negative"  # non-positive, as pred > 0
    from affectllm.evaluation.harness import make_record

    row = {"id": "a", "labels": [], "raw": "Happy, relieved", "confidence": None}
    assert make_record(clips[0], row, TaskSpec(task="r", parse="answer_list"), tax)["labels"] == ["happy", "relieved"]
    assert make_record(clips[0], row, TaskSpec(task="r"), tax)["labels"] == []


def test_bootstrap_interval_contains_estimate_narrows_with_n_and_repeats():
    rng = np.random.default_rng(1)

    def mean_of(values):
        return lambda idx: float(np.mean([values[i] for i in idx]))

    widths = []
    for n in (20, 2000):
        hits = (rng.random(n) < 0.7).astype(float).tolist()
        ci = bootstrap(mean_of(hits), n, resamples=300, seed=0)
        assert ci.low <= ci.value <= ci.high and ci.n == n and ci.resamples == 300
        assert ci == bootstrap(mean_of(hits), n, resamples=300, seed=0)
        widths.append(ci.high - ci.low)
    assert widths[1] < widths[0] / 3  # ~sqrt(100) = 10x narrower in theory
    undefined = bootstrap(lambda idx: None if len(set(idx)) < 3 else 1.0, 3, resamples=100, seed=0)
    assert undefined.value == 1.0 and undefined.resamples < 100
    assert bootstrap(lambda idx: 1.0, 0).value is None
    same = paired_bootstrap(mean_of([1.0, 0.0, 1.0]), mean_of([1.0, 0.0, 1.0]), 3, resamples=100)
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap(lambda idx: 1.0, 3, confidence=1.5)
