"""Multi-process and DeepSpeed runs of the training stages on CPU (slow: each starts fresh Python processes).

DESIGN.md §5: `accelerate launch --num_processes 2 --cpu` silently runs ONE process, so these use torchrun, and the
test asserts that two ranks really took part.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAST = ["trainer.per_device_train_batch_size=2", "trainer.logging_steps=1", "trainer.save_steps=100",
        "eval.enabled=false", "trainer.report_to=[]"]
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("distributed")]


def run(cmd: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "affectllm.cli", "train", *args]


def steps_logged(out: Path) -> list[int]:
    return [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]


def test_two_process_sft(emoworld, tmp_path):
    out = tmp_path / "sft"
    proc = run(torchrun("recipes/tiny/sft.yaml", f"data.manifest={emoworld}", f"output_dir={out}",
                        "trainer.max_steps=2", *FAST))
    assert "world_size=2" in proc.stdout + proc.stderr  # logged by affectllm.train.run on every launch
    assert steps_logged(out) == [1, 2] and (out / "model.safetensors").is_file()


def test_two_process_grpo(emoworld, tmp_path):
    sft_out = tmp_path / "sft"
    run([sys.executable, "-m", "affectllm.cli", "train", "recipes/tiny/sft.yaml", f"data.manifest={emoworld}",
         f"output_dir={sft_out}", "trainer.max_steps=1", *FAST])
    out = tmp_path / "grpo"
    proc = run(torchrun("recipes/tiny/grpo.yaml", f"data.manifest={emoworld}", f"output_dir={out}",
                        f"init_from={sft_out}", "trainer.max_steps=2", "trainer.num_generations=2",
                        "trainer.max_completion_length=8", *FAST))
    assert "world_size=2" in proc.stdout + proc.stderr
    assert steps_logged(out) == [1, 2]


def test_deepspeed_zero2_sft(emoworld, tmp_path):
    """EmoWorld has clips without video or audio: ranks see different modalities in a step (dummy passes)."""
    pytest.importorskip("deepspeed")
    config = ROOT / "recipes/accelerate/zero2.yaml"
    if not config.is_file():
        pytest.fail("recipes/accelerate/zero2.yaml is missing")
    out = tmp_path / "sft"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "--num_processes", "2",
           "-m", "affectllm.cli", "train", "recipes/tiny/sft.yaml", f"data.manifest={emoworld}",
           f"output_dir={out}", "trainer.max_steps=2", "trainer.bf16=false", *FAST, "trainer.save_steps=2"]
    proc = run(cmd, timeout=900)
    assert "world_size=2" in proc.stdout + proc.stderr
    assert steps_logged(out) == [1, 2] and (out / "model.safetensors").is_file()
    # a DeepSpeed engine checkpoint: ZeRO-2 optimizer states sharded per rank
    shards = sorted(p.name for p in (out / "checkpoint-2" / "global_step2").glob("*optim_states.pt"))
    assert len(shards) == 2 and all("zero_pp_rank_" in s for s in shards), shards


def test_deepspeed_zero3_sft_saves_the_whole_model(emoworld, tmp_path):
    """ZeRO-3 partitions every parameter across ranks; the final model must be gathered, not saved as shards."""
    pytest.importorskip("deepspeed")
    import torch
    from safetensors.torch import load_file

    out = tmp_path / "sft"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "recipes/accelerate/zero3.yaml"), "--num_processes", "2", "-m", "affectllm.cli", "train",
           "recipes/tiny/sft.yaml", f"data.manifest={emoworld}", f"output_dir={out}", "trainer.max_steps=2",
           "trainer.bf16=false", *FAST, "trainer.save_steps=2"]
    run(cmd, timeout=900)
    shards = sorted(p.name for p in (out / "checkpoint-2" / "global_step2").glob("zero_pp_rank_*_model_states.pt"))
    assert len(shards) == 2, shards  # parameters really were partitioned over the two ranks
    saved = load_file(out / "model.safetensors")
    assert all(t.numel() > 0 for t in saved.values()), [k for k, t in saved.items() if t.numel() == 0][:5]
    from transformers import AutoModelForCausalLM

    import affectllm.model  # noqa: F401  (registers the Auto classes)

    model = AutoModelForCausalLM.from_pretrained(out)
    assert sum(t.numel() for t in saved.values()) == sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=torch.tensor([[5, 6, 7]])).logits).all()
