"""`affectllm demo --quick`: the whole pipeline (EmoWorld -> SFT -> GRPO -> calibration -> summary) end to end."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("demo")]


def test_demo_quick_runs_every_stage_and_writes_the_summary(tmp_path):
    from affectllm.cli import main

    assert main(["demo", "--quick", "--n", "16", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert list(summary["stages"]) == ["sft", "grpo", "calibrate"]
    assert set(summary["stages"]["sft"]) == {"ew_f", "hit", "au_f1", "ece", "format_ok"}
    assert "oracle" in summary["emoworld"] and (tmp_path / "summary.png").is_file()
    for stage in ("sft", "grpo", "calibrate"):
        assert (tmp_path / stage / "model.safetensors").is_file()
