"""Training-step benchmarks, measured side by side in one run (ratios, not absolute times, are the result).

(a) GRPO step time at G=8 with media de-duplication (each clip processed and encoded once per generation batch) vs
    without (every completion's row processed and encoded on its own): ONE trainer whose ``dedup_media`` flips every
    step, so both sides share the model, data and machine load; plus encoder calls and clips encoded per step
    (forward hooks on ``model.model.encoders[m]``).
    Both read clips from a ``data prep`` folder (faces and AUs included), so every modality is present.
(b) SFT forward+backward on the same batch with cached encoder features (``data prep --cache-features``) vs live
    encoders, interleaved repeats; also the collator's time for that batch each way.

Each part runs on the tiny preset and on "small towers" (random CLIP-256x4 / Whisper-256x4 loaded by path like real
backbones, see ``bench/model.py``), since with the tiny towers the encoder cost is mostly overhead.

    .venv/bin/python bench/grpo.py [--steps 6] [--repeats 7] [--clips 24]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from affectllm.config import load_model_config, load_recipe  # noqa: E402
from affectllm.model.build import build_model  # noqa: E402


def small_tower_overrides(root: str) -> list[str]:
    """``bench/model.py``'s small towers, written under ``root``."""
    spec = importlib.util.spec_from_file_location("bench_model", ROOT / "bench" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_small_towers(root)


class EncoderCounter:
    """Counts encoder forward calls and the clips they encode (``values.shape[0]``), per modality."""

    def __init__(self, model: Any) -> None:
        self.calls: dict[str, int] = defaultdict(int)
        self.clips: dict[str, int] = defaultdict(int)
        for m, enc in model.model.encoders.items():
            enc.register_forward_hook(self._hook(m))

    def _hook(self, m: str) -> Any:
        def hook(module: Any, args: tuple, output: Any) -> None:
            self.calls[m] += 1
            self.clips[m] += int(args[0].shape[0])

        return hook

    def take(self) -> tuple[int, int]:
        """(calls, clips) since the last take, over all modalities."""
        out = sum(self.calls.values()), sum(self.clips.values())
        self.calls.clear()
        self.clips.clear()
        return out


def bench_grpo(manifest: Path, prep: Path, overrides: list[str], steps: int,
               work: Path) -> dict[str, dict[str, float]]:
    """Median GRPO step seconds and encoder calls/clips per step, dedup on vs off (alternating steps)."""
    from transformers import TrainerCallback

    from affectllm.train import grpo

    recipe = load_recipe(ROOT / "recipes/tiny/grpo.yaml", [
        f"data.manifest={manifest}", f"data.feature_cache={prep}", f"output_dir={work}", "init_from=null",
        f"trainer.max_steps={2 * steps + 2}",
        "trainer.num_generations=8", "trainer.per_device_train_batch_size=16", "trainer.max_completion_length=32",
        "trainer.logging_steps=1000", "trainer.save_steps=100000", "trainer.report_to=[]"])
    model, processor = build_model(load_model_config(overrides), seed=0)
    trainer = grpo.build_trainer(recipe, model, processor, work)
    counter = EncoderCounter(model)
    record: dict[str, dict[str, list[float]]] = {"dedup": defaultdict(list), "per-row": defaultdict(list)}

    class Flip(TrainerCallback):
        start = 0.0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            trainer.dedup_media = state.global_step % 2 == 0
            counter.take()
            self.start = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            seconds = time.perf_counter() - self.start
            calls, clips = counter.take()
            if state.global_step > 2:  # the first step of each side warms up
                side = record["dedup" if trainer.dedup_media else "per-row"]
                side["seconds"].append(seconds)
                side["calls"].append(calls)
                side["clips"].append(clips)

    trainer.add_callback(Flip())
    trainer.train()
    return {k: {name: statistics.median(v) for name, v in side.items()} for k, side in record.items()}


def prep_with_features(manifest: Path, overrides: list[str], work: Path) -> Path:
    """``data prep --cache-features`` with the (seed-0) model of ``overrides``, saved under ``work``."""
    from affectllm.inputs.prep import prep_main

    model, processor = build_model(load_model_config(overrides), seed=0)
    model.save_pretrained(work / "model")
    processor.save_pretrained(work / "model")
    prep = work / "prep"
    assert prep_main(str(manifest), str(prep), progress=False, cache_features=True, model=str(work / "model")) == 0
    return prep


def sft_batches(manifest: Path, prep: Path, model: Any, processor: Any) -> dict[str, Any]:
    """The same 8 SFT rows collated live and from the feature cache (plus each collation's median seconds)."""
    from affectllm.data.manifest import read_manifest
    from affectllm.data.prompts import QUESTIONS
    from affectllm.inputs.collate import SftCollator
    from affectllm.inputs.store import ClipStore

    clips, _ = read_manifest(str(manifest))
    rows = [{"clip": c, "question": QUESTIONS["brief"], "target": c.caption or "calm"} for c in clips[:8]]
    mods = model.config.enabled_modalities()
    collators = {"live": SftCollator(processor, ClipStore(str(prep)), mods),
                 "cached": SftCollator(processor, ClipStore(str(prep)), mods, model=model)}
    times: dict[str, list[float]] = defaultdict(list)
    batches = {}
    for _ in range(5):
        for k, collate in collators.items():
            start = time.perf_counter()
            batches[k] = collate(rows)
            times[k].append(time.perf_counter() - start)
    assert "media_features" in batches["cached"] and "media_features" not in batches["live"]
    return {"batches": batches, "collate": {k: statistics.median(v) for k, v in times.items()}}


def bench_sft(manifest: Path, prep: Path, overrides: list[str], repeats: int) -> dict[str, Any]:
    """Median forward+backward seconds on one SFT batch, cached features vs live encoders (interleaved)."""
    from affectllm.model.trainable import apply_trainable_policy

    model, processor = build_model(load_model_config(overrides), seed=0)
    apply_trainable_policy(model, llm_mode="full")  # towers frozen, as the recipes train
    made = sft_batches(manifest, prep, model, processor)
    model.train()
    times: dict[str, list[float]] = defaultdict(list)
    losses = {}
    for round_ in range(repeats + 1):
        for k, batch in made["batches"].items():
            start = time.perf_counter()
            loss = model(**batch).loss
            loss.backward()
            seconds = time.perf_counter() - start
            model.zero_grad(set_to_none=True)
            losses[k] = loss.item()
            if round_:
                times[k].append(seconds)
    return {"step": {k: statistics.median(v) for k, v in times.items()}, "collate": made["collate"],
            "loss_gap": abs(losses["live"] - losses["cached"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="GRPO steps measured per side")
    parser.add_argument("--repeats", type=int, default=7, help="SFT forward+backward repeats per side")
    parser.add_argument("--clips", type=int, default=24, help="EmoWorld clips")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from affectllm.emoworld.generate import synth_main

    work = Path(tempfile.mkdtemp(prefix="affectllm-bench-grpo-"))
    assert synth_main(str(work / "ew"), args.clips, 0, overrides=["size=48", "fps=8"]) == 0
    manifest = work / "ew" / "manifest.jsonl"
    variants = {"tiny preset": ["preset=tiny"],
                "small towers (CLIP-256x4, Whisper-256x4)": small_tower_overrides(str(work / "towers"))}
    for i, (label, overrides) in enumerate(variants.items()):
        prep = prep_with_features(manifest, overrides, work / f"variant{i}")
        g = bench_grpo(manifest, prep, overrides, args.steps, work / f"grpo{i}")
        s = bench_sft(manifest, prep, overrides, args.repeats)
        d, p = g["dedup"], g["per-row"]
        print(f"== {label}")
        print(f"(a) GRPO step, G=8, 16 completions/step (median of {args.steps} alternating steps each): "
              f"{1e3 * p['seconds']:.0f} ms without de-dup vs {1e3 * d['seconds']:.0f} ms with -> "
              f"{p['seconds'] / d['seconds']:.2f}x")
        print(f"    encoder calls/step {p['calls']:.0f} vs {d['calls']:.0f}; clips encoded/step {p['clips']:.0f} vs "
              f"{d['clips']:.0f} -> {p['clips'] / max(d['clips'], 1):.1f}x fewer")
        st, co = s["step"], s["collate"]
        print(f"(b) SFT forward+backward, batch 8 (median of {args.repeats}, interleaved): "
              f"{1e3 * st['live']:.1f} ms live encoders vs {1e3 * st['cached']:.1f} ms cached features -> "
              f"{st['live'] / st['cached']:.2f}x (loss gap {s['loss_gap']:.1e})")
        print(f"    collating that batch: {1e3 * co['live']:.1f} ms live vs {1e3 * co['cached']:.1f} ms cached -> "
              f"{co['live'] / co['cached']:.2f}x")


if __name__ == "__main__":
    main()
