"""`affectllm demo`: the tiny recipes it runs ship inside the package (a wheel install has no recipes/ folder), and
`affectllm demo --quick` runs the whole job end to end (EmoWorld -> prep -> encoders -> feature cache -> SFT -> GRPO
-> calibration -> scores on one set of test clips -> label + chat -> report.md, results.json), reusing what is done."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "affectllm" / "recipes" / "tiny"


def test_recipes_tiny_is_an_exact_copy_of_the_shipped_recipes():
    """One source of truth: affectllm/recipes/tiny/ (package data); recipes/tiny/ must not drift from it."""
    shipped = sorted(p.name for p in SHIPPED.glob("*.yaml"))
    assert shipped == ["calibrate.yaml", "encoders.yaml", "grpo.yaml", "sft.yaml"]
    assert sorted(p.name for p in (ROOT / "recipes" / "tiny").glob("*.yaml")) == shipped
    for name in shipped:
        assert (ROOT / "recipes" / "tiny" / name).read_bytes() == (SHIPPED / name).read_bytes(), (
            f"recipes/tiny/{name} differs from affectllm/recipes/tiny/{name}: edit the package file, then "
            "`cp affectllm/recipes/tiny/*.yaml recipes/tiny/`"
        )


def test_the_wheel_ships_the_tiny_recipes_and_the_demo_reads_them_without_the_repository(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(dist)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = dist.glob("affectllm-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert {f"affectllm/recipes/tiny/{s}.yaml" for s in ("encoders", "sft", "grpo", "calibrate")} <= names
        z.extractall(tmp_path / "site")
    # run from a folder with no recipes/ anywhere, importing the unpacked wheel, not this checkout
    code = (
        "import affectllm, affectllm.demo as d; from pathlib import Path; "
        "assert Path(affectllm.__file__).is_relative_to(Path.cwd() / 'site'), affectllm.__file__; "
        "print([d.load_tiny_recipe(s).stage for s in d.STAGES])"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "['encoders', 'sft', 'grpo', 'calibrate']"


@pytest.mark.slow
@pytest.mark.xdist_group("demo")
def test_demo_quick_runs_every_step_writes_every_artifact_and_reuses_them(tmp_path, capsys):
    from affectllm.cli import main

    assert main(["demo", "--quick", "--n", "24", "--out", str(tmp_path), "--threads", "1"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    scores = results["scores"]
    assert list(scores["stages"]) == ["sft", "grpo", "calibrate"]
    for stage in scores["stages"].values():
        assert {"ew_f", "hit", "au_f1", "ece", "auroc", "format_ok"} <= set(stage)
        assert {"value", "low", "high"} <= set(stage["ew_f"])
    assert set(scores["references"]) == {"oracle", "keyword baseline"}
    assert set(scores["paired"]) == {"grpo - sft", "calibrate - grpo"} and len(scores["bar"]) == 7
    assert {"emotion_acc", "au_f1", "confidence_auroc"} <= set(results["encoders"])
    assert len(results["use"]["labels"]) == 4 and results["use"]["chat"]["transcript"]
    steps = ["emoworld", "prep", "encoders", "features", "sft", "grpo", "calibrate", "scores", "use"]
    assert list(results["timings"]) == steps and all("cpu_s" in t for t in results["timings"].values())
    for stage in ("encoders", "sft", "grpo", "calibrate"):
        assert (tmp_path / stage / "model.safetensors").is_file()
    assert (tmp_path / "encoders" / "confidence.jsonl").is_file()
    assert any((tmp_path / "features" / "features").iterdir())  # the warm-started towers' cached outputs
    report = (tmp_path / "report.md").read_text()
    assert "| tiny after calibrate |" in report and "## The bar" in report and "affectllm chat" in report
    for png in ("stage_metrics.png", "reliability.png", "rewards_grpo.png"):
        assert (tmp_path / png).is_file() and f"]({png})" in report
    # a second run reuses every step
    capsys.readouterr()
    assert main(["demo", "--quick", "--n", "24", "--out", str(tmp_path), "--threads", "1"]) == 0
    again = json.loads((tmp_path / "results.json").read_text())
    assert all(t.get("reused") for t in again["timings"].values())
    assert again["scores"] == scores


def _iv(value, low=None, high=None):
    return {"value": value, "low": low, "high": high}


def test_the_bar_is_read_item_by_item_from_the_scores():
    from affectllm.demo import check_bar

    scores = {
        "stages": {"calibrate": {"ew_f": _iv(0.80), "ece": _iv(0.04), "auroc": _iv(0.70)}},
        "references": {"oracle": {"ew_f": _iv(0.92)}, "keyword baseline": {"ew_f": _iv(0.41)}},
        "paired": {"grpo - sft": {"ew_f": _iv(0.02, 0.005, 0.04), "au_f1": _iv(0.01, -0.01, 0.03)},
                   "calibrate - grpo": {"ew_f": _iv(-0.02, -0.04, 0.0)}},
    }
    bar = {k: v["met"] for k, v in check_bar(scores).items()}
    assert bar == {
        "stage 3 EW-F / oracle EW-F >= 0.85": True,  # 0.80 / 0.92 = 0.87
        "stage 3 EW-F - keyword EW-F >= 0.25": True,  # 0.39
        "stage 2 - stage 1 EW-F, 95% low > 0": True,
        "stage 2 - stage 1 AU-F1, 95% low > 0": False,  # its interval reaches below zero
        "stage 3 ECE (post-hoc) <= 0.05": True,
        "stage 3 AUROC (post-hoc) >= 0.75": False,
        "stage 3 - stage 2 EW-F >= -0.01": False,  # lost 0.02
    }


def test_default_threads_leave_the_cores_other_jobs_use(monkeypatch):
    import torch

    from affectllm import demo

    before = torch.get_num_threads()
    monkeypatch.setattr(demo.os, "sched_getaffinity", lambda _: {0, 1})
    try:
        monkeypatch.setattr(demo.os, "getloadavg", lambda: (4.5, 4.0, 4.0))
        assert demo.set_threads(None) == 1  # two busy cores: one thread, never zero
        monkeypatch.setattr(demo.os, "getloadavg", lambda: (0.1, 0.1, 0.1))
        assert demo.set_threads(None) == 2
        assert demo.set_threads(1) == 1
    finally:
        torch.set_num_threads(before)


def test_resample_statistics_equal_the_metric_functions():
    """The demo's bootstrap sums per-clip shares computed once: on any resample (repeats included) they equal
    ew_scores / hit_rate / au_f1 run on those clips."""
    import random

    from affectllm.demo import _stats
    from affectllm.metrics import au_f1, ew_scores, hit_rate
    from affectllm.types import Clip

    rng = random.Random(0)
    words = ["happy", "sad", "angry", "surprised", "worried", "calm", "neutral", "glad", "nonsense"]
    units = ["AU1", "AU02", "AU4", "AU6", "AU12", "AU15", "AU25", "AU26"]
    clips = [Clip(id=str(i), labels=rng.sample(words, rng.randint(0, 3)), emotion=rng.choice(words[:6] + [None]),
                  aus=rng.sample(units, rng.randint(0, 4)) if i % 5 else None) for i in range(60)]
    labels = [rng.sample(words, rng.randint(0, 4)) for _ in clips]
    aus = [rng.sample(units, rng.randint(0, 5)) for _ in clips]
    stats = _stats(labels, aus, clips)
    from affectllm.parsing import gold_labels

    for _ in range(20):
        idx = [rng.randrange(len(clips)) for _ in clips]
        assert stats["ew_f"](idx) == pytest.approx(ew_scores([labels[i] for i in idx],
                                                             [gold_labels(clips[i]) for i in idx])["f"], abs=1e-12)
        with_emotion = [i for i in idx if clips[i].emotion]
        assert stats["hit"](idx) == pytest.approx(hit_rate([labels[i] for i in with_emotion],
                                                           [clips[i].emotion for i in with_emotion]), abs=1e-12)
        with_aus = [i for i in idx if clips[i].aus]
        assert stats["au_f1"](idx) == au_f1([aus[i] for i in with_aus], [clips[i].aus for i in with_aus])["micro"]
    assert _stats(labels, aus, [Clip(id=c.id, labels=c.labels, emotion=c.emotion) for c in clips])["au_f1"](
        range(len(clips))) is None
