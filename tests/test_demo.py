"""`affectllm demo`: the tiny recipes it runs ship inside the package (a wheel install has no recipes/ folder), and
`affectllm demo --quick` runs the whole pipeline (EmoWorld -> SFT -> GRPO -> calibration -> summary) end to end."""

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
    assert shipped == ["calibrate.yaml", "grpo.yaml", "sft.yaml"]
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
        assert {f"affectllm/recipes/tiny/{s}.yaml" for s in ("sft", "grpo", "calibrate")} <= names
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
    assert proc.stdout.strip().splitlines()[-1] == "['sft', 'grpo', 'calibrate']"


@pytest.mark.slow
@pytest.mark.xdist_group("demo")
def test_demo_quick_runs_every_stage_and_writes_the_summary(tmp_path):
    from affectllm.cli import main

    assert main(["demo", "--quick", "--n", "16", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert list(summary["stages"]) == ["sft", "grpo", "calibrate"]
    assert set(summary["stages"]["sft"]) == {"ew_f", "hit", "au_f1", "ece", "format_ok"}
    assert "oracle" in summary["emoworld"] and (tmp_path / "summary.png").is_file()
    for stage in ("sft", "grpo", "calibrate"):
        assert (tmp_path / stage / "model.safetensors").is_file()
