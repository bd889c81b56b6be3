"""Training-step benchmarks, measured side by side in one run (ratios, not absolute times, are the result).

(a) GRPO step time at G=8 with media de-duplication (each clip processed and encoded once per generation batch) vs
    without (every completion's row processed and encoded on its own): ONE trainer whose ``dedup_media`` flips every
    step, so both sides share the model, data and machine load; plus encoder calls and clips encoded per step
    (forward hooks on ``model.model.encoders[m]``).
    Both read clips from a ``data prep`` folder (faces and AUs included), so every modality is present.
(b) SFT forward+backward on the same batch with cached encoder features (``data prep --cache-features``) vs live
    encoders, interleaved repeats; also the collator's time for that batch each way.
(c) Peak memory of a GRPO step's loss pass (log-probs, loss, backward; generation runs the same code on both sides):
    log-probs through TRL's fused LM head (what ``affectllm.train.grpo`` runs) vs the pre-fused fork it replaced
    (full ``[b, c, V]`` logits, temperature-scaled copy, log-softmax; kept only here, for this comparison). Peak
    tensor bytes above the pass's start from the torch profiler's CPU memory timeline (tensors only: allocator
    caching and other processes do not blur it), on the tiny preset and on SmolLM2-135M (the real backbone,
    vocabulary 49k) with 256-wide towers. Learning rate 0 and fixed-length completions, so both sides score the
    same sequences. On CPU TRL's kernel scores every position (prompt included; only Triton devices skip the
    masked ones), so this measures the CPU path.

(d) Rollout time per generation batch (2 clips x G rows, fixed-length completions), prefill-once (each clip's prompt
    through the LLM once, its KV cache copied to the G rows) vs plain (G prefills), interleaved, at G = 4, 8, 16; and
    the prompt positions the LLM computes per rollout (forward hook on the backbone). Tiny preset and SmolLM2-135M
    with 256-wide towers, clips given as cached features.
(e) Our layer over stock TRL: ``GRPOTrainer`` on the same backbone (same weights) with text-only prompts of the same
    token length vs ``AffectGRPOTrainer`` on clips whose media are cached features; same ``GRPOConfig``
    (G=4, 2 clips a step, fixed-length completions): median step time (the two take turns, a few steps each) and
    the peak tensor memory of one whole step (torch profiler CPU memory timeline), and their ratios.

Parts (a) and (b) run on the tiny preset and on "small towers" (random CLIP-256x4 / Whisper-256x4 loaded by path like
real backbones, see ``bench/model.py``), since with the tiny towers the encoder cost is mostly overhead.

    .venv/bin/python bench/grpo.py [--steps 6] [--repeats 7] [--clips 24] [--completion 128] [--only memory]
                                   [--models tiny small] [--quick]

``--only`` runs some of the parts (``dedup`` = a, ``sft`` = b, ``memory`` = c, ``rollout`` = d, ``trl`` = e),
``--models`` some of the models (``small``: the 256-wide towers, with SmolLM2-135M in parts c, d, e). ``--quick`` is a
smoke run (tiny preset only, G=4, 1 step, short completions): it checks the bench still runs and measures nothing
worth quoting.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
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
from affectllm.train import grpo  # noqa: E402
from affectllm.types import MODALITY_TABLE  # noqa: E402

FEATURE_KEYS = {m.feature_input for m in MODALITY_TABLE if m.feature_input}
PARTS = ("dedup", "sft", "memory", "rollout", "trl")


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


def grpo_recipe(manifest: Path, prep: Path | None, work: Path, *extra: str) -> Any:
    """The tiny GRPO recipe on the bench's EmoWorld, from a fresh model, nothing saved or reported."""
    return load_recipe(ROOT / "recipes/tiny/grpo.yaml", [
        f"data.manifest={manifest}", f"output_dir={work}", "init_from=null",
        *([f"data.feature_cache={prep}"] if prep else []),
        "trainer.save_steps=100000", "trainer.report_to=[]", "trainer.logging_steps=1000", *extra])


def bench_grpo(manifest: Path, prep: Path, overrides: list[str], steps: int, group: int, completion: int,
               work: Path) -> dict[str, dict[str, float]]:
    """Median GRPO step seconds and encoder calls/clips per step, dedup on vs off (alternating steps), G=``group``
    completions of each of 2 clips per step."""
    from transformers import TrainerCallback

    recipe = grpo_recipe(manifest, prep, work, f"trainer.max_steps={2 * steps + 2}",
                         f"trainer.num_generations={group}", f"trainer.per_device_train_batch_size={2 * group}",
                         f"trainer.max_completion_length={completion}")
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
    from affectllm.inputs.prep import PrepConfig, prep_main

    model, processor = build_model(load_model_config(overrides), seed=0)
    model.save_pretrained(work / "model")
    processor.save_pretrained(work / "model")
    prep = work / "prep"
    config = PrepConfig(progress=False, cache_features=True, model=str(work / "model"))
    assert prep_main(str(manifest), str(prep), config) == 0
    return prep


def sft_batches(manifest: Path, prep: Path, model: Any, processor: Any, repeats: int) -> dict[str, Any]:
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
    for _ in range(repeats):
        for k, collate in collators.items():
            start = time.perf_counter()
            batches[k] = collate(rows)
            times[k].append(time.perf_counter() - start)
    assert FEATURE_KEYS & set(batches["cached"]) and not FEATURE_KEYS & set(batches["live"])
    return {"batches": batches, "collate": {k: statistics.median(v) for k, v in times.items()}}


def bench_sft(manifest: Path, prep: Path, overrides: list[str], repeats: int) -> dict[str, Any]:
    """Median forward+backward seconds on one SFT batch, cached features vs live encoders (interleaved)."""
    from affectllm.model.trainable import apply_trainable_policy

    model, processor = build_model(load_model_config(overrides), seed=0)
    apply_trainable_policy(model, llm_mode="full")  # towers frozen, as the recipes train
    made = sft_batches(manifest, prep, model, processor, max(repeats, 2))
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


class ForkedLogps(grpo.AffectGRPOTrainer):
    """The log-prob override as it was before it called TRL's fused path (kept here only, as the baseline of (c)):
    full ``[b, c + 1, V]`` logits, a temperature-scaled copy, log-softmax in the autocast dtype, entropy without a
    gradient, no MoE aux loss."""

    def _get_per_token_logps_and_entropies(self, model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                                           logits_to_keep: int, batch_size: int | None = None,
                                           compute_entropy: bool = False, compute_aux_loss: bool = False,
                                           **_: Any) -> tuple[torch.Tensor, torch.Tensor | None, None]:
        from trl.trainer.utils import entropy_from_logits, selective_log_softmax

        batch_size = batch_size or input_ids.size(0)
        logps, entropies = [], []
        for start in range(0, input_ids.size(0), batch_size):
            end = min(start + batch_size, input_ids.size(0))
            ids = input_ids[start:end]
            with self.accelerator.autocast():
                logits = model(input_ids=ids, attention_mask=attention_mask[start:end],
                               logits_to_keep=logits_to_keep + 1, use_cache=False,
                               **self._scoring.slice(start, end, self.dedup_media)).logits
            logits = logits[:, :-1, :][:, -logits_to_keep:] / self.temperature  # [b, c, V]
            logps.append(selective_log_softmax(logits, ids[:, -logits_to_keep:]))
            if compute_entropy:
                with torch.no_grad():
                    entropies.append(entropy_from_logits(logits))
        return torch.cat(logps), torch.cat(entropies) if compute_entropy else None, None


def peak_loss_memory(trainer: Any, work: Path) -> float:
    """Train two steps; return the peak tensor MiB above its start of step 2's loss pass (log-probs, loss,
    backward: what the two sides do differently; generation is the same code), from the torch profiler's CPU
    memory timeline."""
    from torch.profiler import ProfilerActivity, profile
    from transformers import TrainerCallback

    state: dict[str, Any] = {}
    compute_loss = trainer.compute_loss

    def profiled_loss(*args: Any, **kwargs: Any) -> Any:
        if trainer.state.global_step == 1 and "prof" not in state:  # step 1 warms up (optimizer state, caches)
            state["prof"] = profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                                    with_stack=True)
            state["prof"].__enter__()
        return compute_loss(*args, **kwargs)

    class StopAfterBackward(TrainerCallback):
        def on_pre_optimizer_step(self, args: Any, st: Any, control: Any, **kwargs: Any) -> None:
            if "prof" in state and "done" not in state:
                state["prof"].__exit__(None, None, None)
                state["done"] = True

    trainer.compute_loss = profiled_loss
    trainer.add_callback(StopAfterBackward())
    trainer.train()
    path = work / "memory.json"
    state["prof"].export_memory_timeline(str(path), device="cpu")
    _, sizes = json.loads(path.read_text())  # [times, per time the bytes of each tensor category]
    totals = [sum(s) for s in sizes]
    return (max(totals) - totals[0]) / 2**20


def bench_memory(manifest: Path, overrides: list[str], batch: int, completion: int, work: Path) -> dict[str, Any]:
    """Peak memory of a GRPO step's loss pass, TRL's fused log-probs vs the fork, same sequences; plus the vocab."""
    out: dict[str, Any] = {}
    for name, cls in (("fork", ForkedLogps), ("fused", grpo.AffectGRPOTrainer)):
        recipe = grpo_recipe(manifest, None, work / name, "trainer.max_steps=2", "trainer.learning_rate=0.0",
                             f"trainer.per_device_train_batch_size={batch}", "trainer.num_generations=4",
                             f"trainer.max_completion_length={completion}",
                             f"trainer.generation_kwargs={{min_new_tokens: {completion}}}",
                             "model.llm_mode=lora", "model.train_encoders=false")
        model, processor = build_model(load_model_config(overrides), seed=0)
        trainer = grpo.build_trainer(recipe, model, processor, work / name, trainer_cls=cls)
        out[name] = peak_loss_memory(trainer, work / name)
        out["vocab"] = model.config.text_config.vocab_size
    return out


def llm_shapes(model: Any) -> list[tuple[int, int]]:
    """``(rows, positions)`` of every LLM backbone forward from now on."""
    shapes: list[tuple[int, int]] = []
    model.model.language_model.register_forward_hook(
        lambda mod, args, kwargs, out: shapes.append(tuple(kwargs["inputs_embeds"].shape[:2])), with_kwargs=True)
    return shapes


def fixed_length(completion: int, *extra: str) -> list[str]:
    """Recipe overrides for 2 clips a step and completions of exactly ``completion`` tokens (both sides alike)."""
    return [f"trainer.max_completion_length={completion}", "model.train_encoders=false",
            f"trainer.generation_kwargs={{min_new_tokens: {completion}}}", *extra]


def bench_rollout(manifest: Path, prep: Path, overrides: list[str], groups: list[int], completion: int,
                  repeats: int, work: Path) -> dict[int, dict[str, Any]]:
    """Per G: median rollout seconds and prompt positions computed, prefill-once vs plain (interleaved)."""
    model, processor = build_model(load_model_config(overrides), seed=0)
    shapes = llm_shapes(model)
    out = {}
    for g in groups:
        recipe = grpo_recipe(manifest, prep, work / f"g{g}", "trainer.max_steps=1", f"trainer.num_generations={g}",
                             f"trainer.per_device_train_batch_size={2 * g}", *fixed_length(completion))
        trainer = grpo.build_trainer(recipe, model, processor, work / f"g{g}")
        rows = [r for r in list(trainer.train_dataset)[:2] for _ in range(g)]
        trainer._batch_ids = [r["id"] for r in rows]
        prompt_ids, _, fields = trainer._tokenize_prompts([r["prompt"] for r in rows])
        times: dict[str, list[float]] = defaultdict(list)
        positions = {}
        for _ in range(repeats + 1):  # round 0 warms up
            for side in ("prefill-once", "plain"):
                trainer.prefill_once = side == "prefill-once"
                shapes.clear()
                start = time.perf_counter()
                with torch.no_grad():
                    trainer._generate_single_turn(prompt_ids, None, fields, g)
                times[side].append(time.perf_counter() - start)
                rows_, width = shapes[0]
                positions[side] = rows_ * width + (len(rows) if trainer.prefill_once else 0)  # + last prompt token
        out[g] = {"seconds": {k: statistics.median(v[1:]) for k, v in times.items()}, "positions": positions,
                  "prompt": max(len(p) for p in prompt_ids)}
    return out


def stock_trl_trainer(model: Any, processor: Any, recipe: Any, prompt_len: int, work: Path) -> Any:
    """Stock TRL ``GRPOTrainer`` on ``model``'s backbone and weights, text-only prompts of ``prompt_len`` tokens."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import GRPOTrainer

    lm = AutoModelForCausalLM.from_config(model.config.text_config)
    lm.model.load_state_dict(model.model.language_model.state_dict())
    lm.lm_head.load_state_dict(model.lm_head.state_dict())
    tokenizer = processor.tokenizer
    words = prompt_len
    while len(tokenizer(" a" * words)["input_ids"]) > prompt_len:
        words -= 1
    text = " a" * words
    rows = [{"prompt": text + f" {i}" * (prompt_len - len(tokenizer(text)["input_ids"]))} for i in range(8)]
    args = grpo.grpo_args(recipe, work, list(model.config.media_token_ids.values()))
    args.reward_weights = None  # one reward here (cheap, like ours): the step is the measured part
    return GRPOTrainer(model=lm, reward_funcs=[lambda completions, **_: [float(len(c)) for c in completions]],
                       args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)


def step_seconds(trainer: Any) -> list[float]:
    """Train (again: ``max_steps`` from the start); the seconds of each step after the first (warm-up)."""
    from transformers import TrainerCallback

    seconds: list[float] = []
    clock: dict[str, float] = {}

    class Clock(TrainerCallback):
        def on_step_begin(self, args: Any, st: Any, control: Any, **kwargs: Any) -> None:
            clock["start"] = time.perf_counter()

        def on_step_end(self, args: Any, st: Any, control: Any, **kwargs: Any) -> None:
            if st.global_step > 1:
                seconds.append(time.perf_counter() - clock["start"])

    callback = Clock()
    trainer.add_callback(callback)
    trainer.train()
    trainer.remove_callback(callback)
    return seconds


def peak_step_memory(trainer: Any) -> float:
    """Peak tensor MiB above its start of one whole step (generation, rewards, loss, backward, optimizer) after a
    warm-up step, from the torch profiler's CPU memory timeline."""
    from torch.profiler import ProfilerActivity, profile
    from transformers import TrainerCallback

    state: dict[str, Any] = {}

    class Profiled(TrainerCallback):
        def on_step_begin(self, args: Any, st: Any, control: Any, **kwargs: Any) -> None:
            if st.global_step == 1:
                state["prof"] = profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                                        with_stack=True)
                state["prof"].__enter__()

        def on_step_end(self, args: Any, st: Any, control: Any, **kwargs: Any) -> None:
            if st.global_step == 2:
                state["prof"].__exit__(None, None, None)
                control.should_training_stop = True

    callback = Profiled()
    trainer.add_callback(callback)
    trainer.train()
    trainer.remove_callback(callback)
    path = Path(trainer.args.output_dir) / "memory.json"
    state["prof"].export_memory_timeline(str(path), device="cpu")
    totals = [sum(s) for s in json.loads(path.read_text())[1]]
    return (max(totals) - totals[0]) / 2**20


def bench_vs_trl(manifest: Path, prep: Path, overrides: list[str], steps: int, completion: int, rounds: int,
                 work: Path) -> dict[str, Any]:
    """Step time and peak step memory, AffectGRPOTrainer (cached features) vs stock TRL (text of the same length)."""
    recipe = grpo_recipe(manifest, prep, work / "ours", f"trainer.max_steps={steps + 1}", "trainer.num_generations=4",
                         "trainer.per_device_train_batch_size=8", *fixed_length(completion))
    model, processor = build_model(load_model_config(overrides), seed=0)
    ours = grpo.build_trainer(recipe, model, processor, work / "ours")
    rows = list(ours.train_dataset)[:2]
    ours._batch_ids = [r["id"] for r in rows]
    prompt_len = max(len(p) for p in ours._tokenize_prompts([r["prompt"] for r in rows])[0])
    ours._scoring = None
    trainers = {"stock": stock_trl_trainer(model, processor, recipe, prompt_len, work / "stock"), "ours": ours}
    seconds: dict[str, list[float]] = defaultdict(list)
    for _ in range(rounds):  # the sides take turns, so machine load drifts onto both
        for name, trainer in trainers.items():
            seconds[name] += step_seconds(trainer)
    return {"prompt": prompt_len, **{name: {"seconds": statistics.median(seconds[name]),
                                            "peak_mib": peak_step_memory(trainer)}
                                     for name, trainer in trainers.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="GRPO steps measured per side in (a)")
    parser.add_argument("--repeats", type=int, default=7, help="SFT forward+backward repeats per side in (b)")
    parser.add_argument("--clips", type=int, default=24, help="EmoWorld clips")
    parser.add_argument("--completion", type=int, default=128, help="completion tokens per row in (c)")
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS), help="parts to run")
    parser.add_argument("--models", nargs="+", choices=("tiny", "small"), default=["tiny", "small"],
                        help="tiny preset; small: 256-wide towers (SmolLM2-135M with them in part c)")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny preset only, 1 step, short rows")
    args = parser.parse_args()
    group, dedup_completion, batch = 8, 32, 8
    if args.quick:
        args.steps, args.repeats, args.clips, args.completion = 1, 1, 8, 4
        group, dedup_completion, batch = 4, 4, 4
    torch.set_num_threads(1)
    from affectllm.emoworld.generate import synth_main

    work = Path(tempfile.mkdtemp(prefix="affectllm-bench-grpo-"))
    assert synth_main(str(work / "ew"), args.clips, 0, overrides=["size=48", "fps=8"]) == 0
    manifest = work / "ew" / "manifest.jsonl"
    variants, memory_variants = model_variants(args.models if not args.quick else ["tiny"], work)
    for i, (label, overrides) in enumerate(variants.items()):
        if not {"dedup", "sft"} & set(args.only):
            break
        print(f"== {label}")
        prep = prep_with_features(manifest, overrides, work / f"variant{i}")
        if "dedup" in args.only:
            g = bench_grpo(manifest, prep, overrides, args.steps, group, dedup_completion, work / f"grpo{i}")
            print_dedup(g, args.steps, group)
        if "sft" in args.only:
            print_sft(bench_sft(manifest, prep, overrides, args.repeats), args.repeats)
    for i, (label, overrides) in enumerate(memory_variants.items()):
        if "memory" not in args.only:
            break
        mem = bench_memory(manifest, overrides, batch, args.completion, work / f"memory{i}")
        print(f"(c) {label}: peak tensor memory of a GRPO step's loss pass, {batch} rows x {args.completion} "
              "completion tokens, "
              f"vocab {mem['vocab']}: {mem['fork']:.0f} MiB forked log-probs vs {mem['fused']:.0f} MiB TRL fused "
              f"head (fused / fork {mem['fused'] / max(mem['fork'], 1e-9):.2f})")
    run_llm_parts(args, manifest, memory_variants, work, groups=[4] if args.quick else [4, 8, 16],
                  completion=dedup_completion)


def run_llm_parts(args: argparse.Namespace, manifest: Path, variants: dict[str, list[str]], work: Path,
                  groups: list[int], completion: int) -> None:
    """Parts (d) and (e), on the backbones of part (c), clips as cached features."""
    for i, (label, overrides) in enumerate(variants.items()):
        if not {"rollout", "trl"} & set(args.only):
            break
        print(f"== {label}")
        prep = prep_with_features(manifest, overrides, work / f"llm{i}")
        if "rollout" in args.only:
            for g, r in bench_rollout(manifest, prep, overrides, groups, completion, args.repeats,
                                      work / f"rollout{i}").items():
                sec, pos = r["seconds"], r["positions"]
                print(f"(d) rollout G={g}, 2 clips, {2 * g} x {completion} tokens, prompt {r['prompt']} tokens "
                      f"(median of {args.repeats}): plain {1e3 * sec['plain']:.0f} ms vs prefill-once "
                      f"{1e3 * sec['prefill-once']:.0f} ms -> {sec['plain'] / sec['prefill-once']:.2f}x; prompt "
                      f"positions computed {pos['plain']} vs {pos['prefill-once']} "
                      f"({pos['plain'] / pos['prefill-once']:.1f}x fewer)")
        if "trl" in args.only:
            rounds = 1 if args.quick else 3
            t = bench_vs_trl(manifest, prep, overrides, args.steps, completion, rounds, work / f"trl{i}")
            st, ou = t["stock"], t["ours"]
            print(f"(e) GRPO step vs stock TRL, G=4, 2 prompts of {t['prompt']} tokens, {completion}-token "
                  f"completions (median of {rounds} x {args.steps} alternating): stock {1e3 * st['seconds']:.0f} ms "
                  f"vs ours {1e3 * ou['seconds']:.0f} ms -> {ou['seconds'] / st['seconds']:.2f}x; peak step tensor "
                  f"memory {st['peak_mib']:.0f} vs {ou['peak_mib']:.0f} MiB -> "
                  f"{ou['peak_mib'] / max(st['peak_mib'], 1e-9):.2f}x")


def model_variants(models: list[str], work: Path) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Model overrides by label for parts (a, b) and for part (c)."""
    variants, memory_variants = {}, {}
    if "tiny" in models:
        variants["tiny preset"] = memory_variants["tiny preset"] = ["preset=tiny"]
    if "small" in models:
        small = small_tower_overrides(str(work / "towers"))
        variants["small towers (CLIP-256x4, Whisper-256x4)"] = small
        memory_variants["SmolLM2-135M, 256-wide towers"] = ["preset=smollm2-135m", *small]
    return variants, memory_variants


def print_dedup(g: dict[str, dict[str, float]], steps: int, group: int) -> None:
    d, p = g["dedup"], g["per-row"]
    print(f"(a) GRPO step, G={group}, {2 * group} completions/step (median of {steps} alternating steps each): "
          f"{1e3 * p['seconds']:.0f} ms without de-dup vs {1e3 * d['seconds']:.0f} ms with -> "
          f"{p['seconds'] / d['seconds']:.2f}x")
    print(f"    encoder calls/step {p['calls']:.0f} vs {d['calls']:.0f}; clips encoded/step {p['clips']:.0f} vs "
          f"{d['clips']:.0f} -> {p['clips'] / max(d['clips'], 1):.1f}x fewer")


def print_sft(s: dict[str, Any], repeats: int) -> None:
    st, co = s["step"], s["collate"]
    print(f"(b) SFT forward+backward, batch 8 (median of {repeats}, interleaved): "
          f"{1e3 * st['live']:.1f} ms live encoders vs {1e3 * st['cached']:.1f} ms cached features -> "
          f"{st['live'] / st['cached']:.2f}x (loss gap {s['loss_gap']:.1e})")
    print(f"    collating that batch: {1e3 * co['live']:.1f} ms live vs {1e3 * co['cached']:.1f} ms cached -> "
          f"{co['live'] / co['cached']:.2f}x")


if __name__ == "__main__":
    main()
