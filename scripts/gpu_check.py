"""GPU check: the GPU path end to end in minutes, with random weights of the real architectures (nothing downloaded).

Writes random-init backbones of the real shapes to a temp dir (a Qwen2.5-0.5B-sized LLM from ``Qwen2Config`` with
the tiny preset's tokenizer, a SigLIP-base-sized video/face tower, a Whisper-small-sized audio encoder), builds the
model through ``affectllm.model.build`` from those dirs, and runs:

1. ``forward_backward``: bf16 forward/backward with sdpa; with flash-attn 2 installed, the same with it and the
   logits compared;
2. ``sft``: ``affectllm train`` of the SFT recipe, 20 steps;
3. ``grpo_prefill_once`` / ``grpo_plain``: the GRPO recipe, 10 steps each, ``grpo.prefill_once`` on and off;
4. ``label``: ``affectllm label`` of 64 EmoWorld clips with the GRPO model.

One JSON (``--out``, default ``gpu_check.json``) holds every check's pass/fail, error, seconds, tokens/s, steps/s,
clips/s and peak GPU memory. ``--cpu`` runs the same steps at tiny size on the CPU (tests/test_gpu_check.py runs
it, so the script keeps working until a GPU runs it). Exit status 0 when every check passed.

    scripts/gpu_check.sh [--cpu] [--out gpu_check.json] [--clips 64] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from affectllm.cli import main as cli  # noqa: E402
from affectllm.config import ModelConfig  # noqa: E402
from affectllm.jsonl import read_jsonl, write_text  # noqa: E402
from affectllm.model.build import ASSETS, build_model  # noqa: E402

# Qwen2.5-0.5B, SigLIP-base-patch16-224 and Whisper-small (encoder) shapes; the CPU mode's tiny stand-ins.
LLM = {"gpu": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                   num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, rope_theta=1e6),
       "cpu": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, vocab_size=1024, max_position_embeddings=4096)}
VISION = {"gpu": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                      image_size=224, patch_size=16),
          "cpu": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                      patch_size=8)}
AUDIO = {"gpu": dict(d_model=768, encoder_layers=12, encoder_attention_heads=12, encoder_ffn_dim=3072,
                     max_source_positions=1500, chunk_length=30),
         "cpu": dict(d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64,
                     max_source_positions=200, chunk_length=4)}


def write_backbones(root: Path, size: str) -> dict[str, str]:
    """Random-init LLM (+ the tiny preset's tokenizer), SigLIP vision and Whisper encoder dirs; model overrides."""
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2Config,
        Qwen2ForCausalLM,
        SiglipImageProcessor,
        SiglipVisionConfig,
        SiglipVisionModel,
        WhisperConfig,
        WhisperFeatureExtractor,
    )
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    torch.manual_seed(0)
    tok = PreTrainedTokenizerFast.from_pretrained(ASSETS / "tiny_tokenizer")
    Qwen2ForCausalLM(Qwen2Config(**LLM[size], tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                                 eos_token_id=tok.eos_token_id)).save_pretrained(root / "llm")
    tok.save_pretrained(root / "llm")
    vision = VISION[size]
    SiglipVisionModel(SiglipVisionConfig(**vision)).save_pretrained(root / "vision")
    side = vision["image_size"]
    SiglipImageProcessor(size={"height": side, "width": side}).save_pretrained(root / "vision")
    audio = dict(AUDIO[size])
    chunk = audio.pop("chunk_length")
    WhisperEncoder(WhisperConfig(**audio, num_mel_bins=80, decoder_layers=1)).save_pretrained(root / "audio")
    WhisperFeatureExtractor(feature_size=80, chunk_length=chunk).save_pretrained(root / "audio")
    return {"llm": str(root / "llm"), "vision": str(root / "vision"), "face": str(root / "vision"),
            "audio": str(root / "audio")}


class Checks:
    """Runs named checks, recording pass/fail, error, seconds and what each returns; peak GPU memory per check."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.results: dict[str, dict[str, Any]] = {}

    def run(self, name: str, fn: Callable[[], dict[str, Any]]) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        try:
            record = {"pass": True, **fn()}
        except Exception as err:  # a failed check is reported, the others still run
            record = {"pass": False, "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
        record["seconds"] = round(time.perf_counter() - start, 2)
        if self.cuda:
            record["peak_gpu_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
        self.results[name] = record
        print(f"[gpu_check] {name}: {'pass' if record['pass'] else 'FAIL ' + record['error']} "
              f"({record['seconds']} s)", flush=True)


def forward_backward(backbones: dict[str, str], cuda: bool, manifest: Path) -> dict[str, Any]:
    """bf16 (GPU) forward/backward on 8 EmoWorld clips with sdpa; with flash-attn 2, its logits against sdpa's."""
    import importlib.util

    from affectllm.data.manifest import read_manifest
    from affectllm.inputs.collate import build_prompt_inputs
    from affectllm.inputs.store import ClipStore

    dtype = "bfloat16" if cuda else "float32"
    kernels = ["sdpa"] + (["flash_attention_2"] if cuda and importlib.util.find_spec("flash_attn") else [])
    clips, _ = read_manifest(str(manifest))
    out: dict[str, Any] = {"kernels": kernels}
    logits = {}
    for kernel in kernels:
        model, processor = build_model(ModelConfig(preset="tiny", dtype=dtype, attn_implementation=kernel,
                                                   **backbones), seed=0)
        model.to("cuda" if cuda else "cpu").train()
        built = build_prompt_inputs(processor, ClipStore(None, num_frames=8), clips[:8], ["How do they feel?"] * 8,
                                    model.config.enabled_modalities())
        inputs = {k: v.to(model.device) for k, v in built.inputs.items()}
        start = time.perf_counter()
        result = model(**inputs, labels=inputs["input_ids"])
        result.loss.backward()
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        if not torch.isfinite(result.loss):
            raise RuntimeError(f"{kernel}: loss {result.loss.item()}")
        tokens = int(inputs["attention_mask"].sum())
        out[f"{kernel}_tokens_per_s"] = round(tokens / seconds, 1)
        mask = inputs["attention_mask"].bool()
        logits[kernel] = result.logits.detach().float()[mask]  # real positions only (padding differs by kernel)
    if len(logits) == 2:
        gap = (logits["sdpa"] - logits["flash_attention_2"]).abs().max().item()
        scale = logits["sdpa"].abs().max().item()
        out["flash_vs_sdpa_max_abs_logit_gap"] = gap
        if gap > 0.05 * scale:  # bf16 kernels differ in summation order: a few % of the logit range
            raise RuntimeError(f"flash-attn 2 logits differ from sdpa's by {gap:.3g} (scale {scale:.3g})")
    return out


def train_overrides(manifest: Path, out: Path, backbones: dict[str, str], cuda: bool, steps: int) -> list[str]:
    """Overrides shared by the SFT and GRPO runs: data, model dirs, device, no eval/saves/reports."""
    device = ["trainer.use_cpu=false", "trainer.bf16=true"] if cuda else ["trainer.use_cpu=true"]
    return [f"data.manifest={manifest}", f"output_dir={out}", "data.split=null", "eval.enabled=false",
            *(f"model.{k}={v}" for k, v in backbones.items()), f"trainer.max_steps={steps}",
            f"trainer.save_steps={10 * steps}", "trainer.report_to=[]", "trainer.logging_steps=5", *device]


def json_rows(path: Path) -> list[dict[str, Any]]:
    """The objects of a JSONL file the run wrote (an unreadable line is a failed check)."""
    rows, errors = read_jsonl(path)
    if errors:
        raise RuntimeError(f"{path}: unreadable lines {errors[:3]}")
    return [value for _, value in rows]


def train(recipe: str, overrides: list[str], out: Path, steps: int) -> dict[str, Any]:
    """``affectllm train``; steps/s as the trainer measured it (its final log record), the loss finite."""
    if cli(["train", str(ROOT / "recipes" / "tiny" / recipe), *overrides]) != 0:
        raise RuntimeError(f"affectllm train {recipe} failed (see the log above)")
    rows = json_rows(out / "metrics.jsonl")
    final = next(r for r in reversed(rows) if "train_steps_per_second" in r)
    losses = [r["loss"] for r in rows if "loss" in r]
    if not all(math.isfinite(x) for x in losses):
        raise RuntimeError(f"non-finite loss in {out / 'metrics.jsonl'}: {losses}")
    if not (out / "config.json").is_file():
        raise RuntimeError(f"{out}: no final model saved")
    return {"steps": steps, "steps_per_s": float(final["train_steps_per_second"]), "losses": losses}


def label(manifest: Path, model: Path, out: Path, clips: int, cuda: bool) -> dict[str, Any]:
    """``affectllm label`` of every clip; clips/s over the whole command (model load included)."""
    start = time.perf_counter()
    code = cli(["label", str(manifest), "--model", str(model), "--out", str(out), "--batch-size", "16",
                "--num-workers", "2" if cuda else "0", "--no-progress", "--max-new-tokens", "32"])
    seconds = time.perf_counter() - start
    rows = json_rows(out / "labels.jsonl") if (out / "labels.jsonl").is_file() else []
    errors = [r for r in rows if r.get("error")]
    if code != 0 or len(rows) != clips or errors:
        raise RuntimeError(f"label exited {code}, {len(rows)}/{clips} rows, {len(errors)} errors")
    return {"clips": clips, "clips_per_s": round(clips / seconds, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU (the test's mode)")
    parser.add_argument("--out", default="gpu_check.json", help="the JSON written (default gpu_check.json)")
    parser.add_argument("--clips", type=int, default=None, help="EmoWorld clips labelled (default 64; --cpu 12)")
    parser.add_argument("--work", default=None, help="scratch folder (default: a new temp dir)")
    args = parser.parse_args(argv)
    cuda = not args.cpu
    if cuda and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU here; run with --cpu for the tiny CPU mode", file=sys.stderr)
        return 2
    size, clips = ("gpu", args.clips or 64) if cuda else ("cpu", args.clips or 12)
    work = Path(args.work or tempfile.mkdtemp(prefix="affectllm-gpu-check-"))
    from affectllm.emoworld.generate import synth_main

    assert synth_main(str(work / "ew"), clips, 0, overrides=["size=48", "fps=8"]) == 0
    manifest = work / "ew" / "manifest.jsonl"
    backbones = write_backbones(work / "backbones", size)
    checks = Checks(cuda)
    checks.run("forward_backward", lambda: forward_backward(backbones, cuda, manifest))
    sft = work / "sft"
    checks.run("sft", lambda: train("sft.yaml", [*train_overrides(manifest, sft, backbones, cuda, 20),
                                                 "init_from=null", "trainer.per_device_train_batch_size=8"], sft, 20))
    completion = 32 if cuda else 8
    for on in (True, False):
        out = work / f"grpo-{'once' if on else 'plain'}"
        extra = [f"init_from={sft}", f"grpo.prefill_once={str(on).lower()}", "trainer.num_generations=4",
                 "trainer.per_device_train_batch_size=8", f"trainer.max_completion_length={completion}"]
        checks.run(f"grpo_{'prefill_once' if on else 'plain'}",
                   lambda out=out, extra=extra: train("grpo.yaml", [*train_overrides(manifest, out, backbones, cuda,
                                                                                     10), *extra], out, 10))
    checks.run("label", lambda: label(manifest, work / "grpo-once", work / "label", clips, cuda))
    report = {"device": torch.cuda.get_device_name() if cuda else "cpu", "size": size, "torch": torch.__version__,
              "all_pass": all(r["pass"] for r in checks.results.values()), "checks": checks.results}
    write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"[gpu_check] {'all checks passed' if report['all_pass'] else 'FAILED'}; wrote {args.out}")
    return 0 if report["all_pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
