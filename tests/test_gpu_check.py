"""scripts/gpu_check.sh in its CPU mode (tiny sizes): every check runs and passes, and the JSON has what it reports."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKS = {"forward_backward", "sft", "grpo_prefill_once", "grpo_plain", "label"}


@pytest.mark.slow  # ~2 min on one core: it trains SFT 20 steps and GRPO 2 x 10 steps
def test_gpu_check_cpu_mode_passes_every_check(tmp_path):
    out = tmp_path / "check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    proc = subprocess.run([str(ROOT / "scripts" / "gpu_check.sh"), "--cpu", "--out", str(out), "--clips", "8",
                           "--work", str(tmp_path / "work")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["all_pass"] and set(report["checks"]) == CHECKS
    checks = report["checks"]
    assert all(c["pass"] for c in checks.values())
    assert checks["forward_backward"]["sdpa_tokens_per_s"] > 0
    assert checks["sft"]["steps"] == 20 and checks["sft"]["steps_per_s"] > 0
    assert checks["grpo_prefill_once"]["steps"] == checks["grpo_plain"]["steps"] == 10
    assert checks["label"]["clips"] == 8 and checks["label"]["clips_per_s"] > 0
    config = json.loads((tmp_path / "work" / "sft" / "config.json").read_text())
    assert config["text_config"]["model_type"] == "qwen2"  # built from the written random backbones
    assert config["vision_config"]["model_type"] == "siglip_vision_model"


def test_gpu_check_without_a_gpu_says_to_use_cpu_mode(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    proc = subprocess.run([str(ROOT / "scripts" / "gpu_check.sh"), "--out", str(tmp_path / "x.json")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--cpu" in proc.stderr
    assert not (tmp_path / "x.json").exists()
