"""Training stages on the tiny preset: each runs, changes exactly its trainable parameters, resumes exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from affectllm.config import load_recipe

ROOT = Path(__file__).resolve().parents[1]
FAST = ["trainer.per_device_train_batch_size=4", "trainer.logging_steps=1", "trainer.save_steps=100", "eval.samples=2",
        "eval.max_new_tokens=8", "trainer.report_to=[]"]


def recipe(stage: str, manifest: Path, out: Path, *extra: str):
    return load_recipe(
        ROOT / f"recipes/tiny/{stage}.yaml", [f"data.manifest={manifest}", f"output_dir={out}", *FAST, *extra]
    )


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed(before: dict[str, torch.Tensor], model) -> set[str]:
    after = model.state_dict()
    return {k for k, v in before.items() if not torch.equal(v, after[k])}


def test_sft_lora_changes_exactly_the_trainable_parameters(emoworld, tmp_path):
    from affectllm.train import sft
    from affectllm.train.stage import load_stage_model

    r = recipe(
        "sft",
        emoworld,
        tmp_path / "sft",
        "trainer.max_steps=3",
        "model.llm_mode=lora",
        "model.train_encoders=false",
        "trainer.learning_rate=0.01",
    )
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


def _miscalibrated_predictions(path, clips, recipe, evidence=None):
    """Stand-in for the stage's greedy completions: right answers stated at 0.55, wrong ones at 0.95 (a model
    whose confidence says nothing), so the raw ECE is far from 0 whatever the 2-step model would have written."""
    from affectllm.evaluation.runner import Correctness
    from affectllm.parsing import gold_labels, parse_completion

    judge, preds = Correctness(), []
    for i, clip in enumerate(clips):
        wrong = next(e for e in ("happy", "sad", "angry", "fearful") if judge([e], gold_labels(clip)) is False)
        label, conf = (gold_labels(clip)[0], 0.55) if i % 2 == 0 else (wrong, 0.95)
        preds.append(parse_completion(f"<think>AU6</think><answer>{label}</answer><confidence>{conf}</confidence>"))
    return preds, None


def test_calibrate_stage_fits_a_posthoc_map_and_reports(emoworld, sft_dir, tmp_path, monkeypatch):
    from affectllm.evaluation.posthoc import ConfidenceMap
    from affectllm.train import calibrate

    monkeypatch.setattr(calibrate, "_completions", _miscalibrated_predictions)
    out = tmp_path / "cal"
    r = recipe(
        "calibrate",
        emoworld,
        out,
        f"init_from={sft_dir}",
        "trainer.max_steps=1",
        "trainer.num_generations=4",
        "trainer.max_completion_length=8",
        "calibrate.posthoc_samples=4",
        "calibrate.posthoc=isotonic",
        "calibrate.posthoc_input=stated",  # the map of the stated number (the evidence's: tests/test_evidence.py)
    )
    report = calibrate.main(r)
    assert set(report["calibration"]) == {"before", "after", "after + post-hoc"}
    assert ConfidenceMap.load(out) is not None and (out / "reliability.png").is_file()
    assert (out / "model.safetensors").is_file() and (out / "metrics.jsonl").is_file()  # the GRPO step ran
    # the property a post-hoc map must have: on the split it was fitted on, it is no worse calibrated than the raw
    # confidences (isotonic maps each pooled block of confidences to that block's accuracy)
    fit = report["posthoc_fit"]
    assert fit["split"] == "val" and fit["n"] >= 2 and fit["raw"]["ece"] > 0.1
    assert fit["mapped"]["ece"] <= fit["raw"]["ece"] + 1e-9, fit
    assert json.loads((out / "calibration_report.json").read_text())["posthoc_fit"] == fit


def test_nonfinite_guard_skips_the_step_and_names_the_batch_the_loss_was_computed_on(emoworld, tmp_path):
    """accelerate collates one batch ahead, so the collator's last batch is the NEXT one: the guard must name the
    clips of the batch whose loss went non-finite, skip that step (no parameter moves) and keep training."""
    from transformers import TrainerCallback

    from affectllm.train import sft
    from affectllm.train.callbacks import NonFiniteGuard
    from affectllm.train.stage import load_stage_model

    out = tmp_path / "sft"
    r = recipe("sft", emoworld, out, "trainer.max_steps=3", "eval.enabled=false", "trainer.learning_rate=0.01")
    model, processor = load_stage_model(r)
    trainer = sft.build_trainer(r, model, processor, out)
    poisoned: list[list[str]] = []

    def compute_loss(model, inputs, *args, **kwargs):
        ids = list(inputs["ids"])
        loss = sft.AffectSFTTrainer.compute_loss(trainer, model, inputs, *args, **kwargs)
        if trainer.state.global_step == 1:  # the second optimizer step's batch
            poisoned.append(ids)
            return loss * float("nan")
        return loss

    trainer.compute_loss = compute_loss
    weights: dict[int, torch.Tensor] = {}

    class Weights(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            weights[state.global_step] = trainer.model.lm_head.weight.detach().clone()

    trainer.add_callback(Weights())
    trainer.train()
    guard = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, NonFiniteGuard))
    assert len(poisoned) == 1 and guard.bad_steps == [{"step": 2, "ids": poisoned[0]}]
    assert torch.equal(weights[1], weights[2]) and not torch.equal(weights[2], weights[3])  # skipped, then trains
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def _run_sft(emoworld, out, stop_at=None, resume=False):
    from transformers import TrainerCallback

    from affectllm.train import sft
    from affectllm.train.stage import load_stage_model

    r = recipe(
        "sft",
        emoworld,
        out,
        "trainer.max_steps=4",
        "trainer.save_steps=2",
        "trainer.learning_rate=0.005",
        "trainer.lr_scheduler_type=constant",
        "trainer.warmup_steps=0",
        "eval.enabled=false",
    )
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


DEEPSPEED_GUARD = """
import json, sys
from pathlib import Path
import torch
from affectllm.config import load_recipe
from affectllm.train import sft
from affectllm.train.callbacks import NonFiniteGuard
from affectllm.train.stage import load_stage_model

manifest, out = sys.argv[1], Path(sys.argv[2])
r = load_recipe("recipes/tiny/sft.yaml", [f"data.manifest={manifest}", f"output_dir={out}", "trainer.max_steps=3",
    "trainer.per_device_train_batch_size=2", "trainer.deepspeed=recipes/deepspeed/zero2.json", "trainer.bf16=false",
    "trainer.save_steps=100", "trainer.report_to=[]", "eval.enabled=false", "trainer.learning_rate=0.01"])
model, processor = load_stage_model(r)
trainer = sft.build_trainer(r, model, processor, out)
poisoned, weights, grads_seen = [], {}, []

def compute_loss(model, inputs, *args, **kwargs):
    ids = list(inputs["ids"])
    loss = sft.AffectSFTTrainer.compute_loss(trainer, model, inputs, *args, **kwargs)
    if trainer.state.global_step == 1:
        poisoned.append(ids)
        return loss * float("nan")
    return loss

from transformers import TrainerCallback

class Record(TrainerCallback):
    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        grads_seen.append(any(p.grad is not None for p in model.parameters()))

    def on_step_end(self, args, state, control, **kwargs):
        weights[state.global_step] = trainer.accelerator.unwrap_model(trainer.model).lm_head.weight.detach().clone()

trainer.compute_loss = compute_loss
trainer.add_callback(Record())
trainer.train()
guard = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, NonFiniteGuard))
print("RESULT " + json.dumps({"bad": guard.bad_steps, "poisoned": poisoned, "grads_seen": grads_seen,
    "skipped_kept": torch.equal(weights[1], weights[2]), "trained_after": not torch.equal(weights[2], weights[3])}))
"""


@pytest.mark.slow
def test_nonfinite_guard_under_deepspeed_zero2_reads_the_engines_skip(emoworld, tmp_path):
    """Under DeepSpeed p.grad is None and the engine steps inside backward: the guard reports DeepSpeed's own skip
    of the poisoned step, with that batch's ids (one process, ZeRO-2, CPU)."""
    pytest.importorskip("deepspeed")
    import os
    import subprocess
    import sys

    script = tmp_path / "guard.py"
    script.write_text(DEEPSPEED_GUARD)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "1",
        str(script),
        str(emoworld),
        str(tmp_path / "out"),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    result = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))[len("RESULT ") :])
    assert result["grads_seen"] == [False, False, False]  # the reason a p.grad check never fires under DeepSpeed
    assert result["bad"] == [{"step": 2, "ids": result["poisoned"][0]}]
    assert result["skipped_kept"] and result["trained_after"]


def test_max_steps_zero_trains_nothing_and_saves_the_starting_model(emoworld, sft_dir, tmp_path):
    """TRL reads max_steps=0 as "train by epochs"; the stage body reads it as "no training" (calibration then runs
    its post-hoc fit alone)."""
    from safetensors.torch import load_file

    from affectllm.train import sft

    out = tmp_path / "zero"
    assert (
        sft.main(recipe("sft", emoworld, out, f"init_from={sft_dir}", "trainer.max_steps=0", "eval.enabled=false"))
        == {}
    )
    assert not (out / "metrics.jsonl").exists() and not list(out.glob("checkpoint-*"))
    start, saved = load_file(sft_dir / "model.safetensors"), load_file(out / "model.safetensors")
    assert start.keys() == saved.keys() and all(torch.equal(start[k], saved[k]) for k in start)
