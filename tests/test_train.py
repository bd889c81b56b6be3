"""Training stages on the tiny preset: each runs, changes exactly its trainable parameters, resumes exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from affectllm.config import load_recipe

ROOT = Path(__file__).resolve().parents[1]
FAST = ["trainer.per_device_train_batch_size=4", "trainer.logging_steps=1", "trainer.save_steps=100",
        "eval.samples=2", "eval.max_new_tokens=8", "trainer.report_to=[]"]


def recipe(stage: str, manifest: Path, out: Path, *extra: str):
    return load_recipe(ROOT / f"recipes/tiny/{stage}.yaml",
                       [f"data.manifest={manifest}", f"output_dir={out}", *FAST, *extra])


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed(before: dict[str, torch.Tensor], model) -> set[str]:
    after = model.state_dict()
    return {k for k, v in before.items() if not torch.equal(v, after[k])}


def test_sft_lora_changes_exactly_the_trainable_parameters(emoworld, tmp_path):
    from affectllm.train import sft
    from affectllm.train.stage import load_stage_model

    r = recipe("sft", emoworld, tmp_path / "sft", "trainer.max_steps=3", "model.llm_mode=lora",
               "model.train_encoders=false", "trainer.learning_rate=0.01")
    model, processor = load_stage_model(r)
    trainer = sft.build_trainer(r, model, processor, tmp_path / "sft")
    peft_model = trainer.model
    names = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    before = snapshot(peft_model)
    trainer.train()
    moved = changed(before, peft_model)
    trainable = {n for n in before if any(n == t for t in names)}
    assert moved <= trainable, sorted(moved - trainable)[:5]  # nothing frozen moved
    assert any("lora_B" in n for n in moved) and any("projectors" in n for n in moved)
    assert not any("encoders.video" in n or "embed_tokens" in n for n in moved)
    rows = [json.loads(x) for x in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]


def test_sft_main_writes_a_loadable_model_and_plots(emoworld, tmp_path):
    from transformers import AutoModelForCausalLM

    from affectllm.train import sft

    out = tmp_path / "sft"
    result = sft.main(recipe("sft", emoworld, out, "trainer.max_steps=2"))
    assert set(result) >= {"ew_f", "au_f1", "ece", "format_ok"} and result["n"] == 2
    assert (out / "recipe.yaml").is_file() and (out / "loss_curves.png").is_file()
    assert (out / "eval" / "predictions.jsonl").is_file()
    assert type(AutoModelForCausalLM.from_pretrained(out)).__name__ == "AffectLlmForConditionalGeneration"


@pytest.fixture(scope="module")
def sft_dir(emoworld, tmp_path_factory):
    from affectllm.train import sft

    out = tmp_path_factory.mktemp("sft")
    sft.main(recipe("sft", emoworld, out, "trainer.max_steps=2", "eval.enabled=false"))
    return out


def test_grpo_steps_change_exactly_the_trainable_parameters(emoworld, sft_dir, tmp_path):
    from affectllm.train import grpo
    from affectllm.train.stage import load_stage_model

    r = recipe("grpo", emoworld, tmp_path / "grpo", f"init_from={sft_dir}", "trainer.max_steps=2",
               "trainer.max_completion_length=12", "model.llm_mode=lora", "model.train_encoders=false",
               "trainer.learning_rate=0.01",
               "trainer.temperature=1.5")
    model, processor = load_stage_model(r)
    trainer = grpo.build_trainer(r, model, processor, tmp_path / "grpo")
    names = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    before = snapshot(trainer.model)
    trainer.train()
    moved = changed(before, trainer.model)
    assert moved <= names, sorted(moved - names)[:5]
    logged = [json.loads(x) for x in (tmp_path / "grpo" / "metrics.jsonl").read_text().splitlines()]
    keys = set().union(*logged)
    for key in ("rewards/ew/mean", "rewards/au/std", "affect/parse_failure_rate", "affect/labels_per_answer",
                "frac_reward_zero_std", "entropy", "completions/mean_length"):
        assert key in keys, (key, sorted(keys))


def test_calibrate_stage_fits_a_posthoc_map_and_reports(emoworld, sft_dir, tmp_path):
    from affectllm.evaluation.posthoc import ConfidenceMap
    from affectllm.train import calibrate

    out = tmp_path / "cal"
    r = recipe("calibrate", emoworld, out, f"init_from={sft_dir}", "trainer.max_steps=1",
               "trainer.max_completion_length=8", "calibrate.posthoc_samples=4", "calibrate.posthoc=isotonic")
    report = calibrate.main(r)
    assert set(report["calibration"]) == {"before", "after", "after + post-hoc"}
    assert ConfidenceMap.load(out) is not None and (out / "reliability.png").is_file()


def _run_sft(emoworld, out, stop_at=None, resume=False):
    from transformers import TrainerCallback

    from affectllm.train import sft
    from affectllm.train.stage import load_stage_model

    r = recipe("sft", emoworld, out, "trainer.max_steps=4", "trainer.save_steps=2", "trainer.learning_rate=0.005",
               "trainer.lr_scheduler_type=constant", "trainer.warmup_steps=0", "eval.enabled=false")
    model, processor = load_stage_model(r)
    trainer = sft.build_trainer(r, model, processor, out)
    seen: dict[int, list[str]] = {}

    class Record(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            seen[state.global_step] = list(trainer.last_loss_ids)  # the batch compute_loss saw
            if stop_at is not None and state.global_step == stop_at:
                control.should_training_stop = True  # an interruption right after a checkpoint

    trainer.add_callback(Record())
    from transformers.trainer_utils import get_last_checkpoint

    trainer.train(resume_from_checkpoint=get_last_checkpoint(str(out)) if resume else None)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: row["loss"] for row in rows if "loss" in row}, seen


def test_interrupted_then_resumed_sft_sees_the_same_batches_and_losses(emoworld, tmp_path):
    straight_losses, straight_ids = _run_sft(emoworld, tmp_path / "a")
    _, first_ids = _run_sft(emoworld, tmp_path / "b", stop_at=2)
    assert sorted(first_ids) == [1, 2] and (tmp_path / "b" / "checkpoint-2").is_dir()
    resumed_losses, resumed_ids = _run_sft(emoworld, tmp_path / "b", resume=True)
    assert sorted(resumed_ids) == [3, 4]
    for step in (3, 4):
        assert resumed_ids[step] == straight_ids[step], step
        assert resumed_losses[step] == pytest.approx(straight_losses[step], rel=1e-5, abs=1e-6), step
