"""Model benchmarks, measured side by side in one run (ratios, not absolute times, are the result).

1. Encoder time per GRPO group (G clips rows sharing one clip) with and without media de-duplication, and the
   number of clip encodings each way (expect G x fewer).
2. Peak memory (RSS high-water mark above the pre-step baseline) of one tiny forward/backward, in a fresh process.

    .venv/bin/python bench/model.py [--group 8] [--repeats 5] [--quick]

``--quick`` is a smoke run (tiny preset only, G=4, one repeat): it measures nothing worth quoting.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

MODS = {"video": "videos", "audio": "audios", "face": "faces", "au": "au_features", "words": "words"}


def group_inputs(processor, g: int, dedup: bool):
    rng = np.random.default_rng(0)
    clip = {"videos": rng.integers(0, 255, (8, 64, 64, 3), dtype=np.uint8),
            "audios": (0.1 * rng.standard_normal(16000 * 3)).astype(np.float32),
            "faces": rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8),
            "au_features": rng.random((8, 353)).astype(np.float32),
            "words": "Honestly, I feel thrilled about all of this."}
    from affectllm.model import media_prefix

    msgs = [{"role": "user", "content": media_prefix(list(MODS)) + "How does this person feel?"}]
    text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    return processor([text] * g, clip_ids=["c"] * g if dedup else None, **{v: [clip[v]] * g for v in MODS.values()})


def encode_group(model, inputs) -> int:
    """Run every encoder the way forward does; return the number of clip encodings."""
    from affectllm.model.configuration import MASK_INPUT_NAMES, MEDIA_INPUT_NAMES

    n = 0
    for m, name in MEDIA_INPUT_NAMES.items():
        model.encode_media(m, inputs[name], inputs.get(MASK_INPUT_NAMES.get(m, "")))
        n += inputs[name].shape[0]
    return n


def bench_dedup(g: int, repeats: int, preset_overrides: list[str]) -> dict:
    from affectllm.config import load_model_config
    from affectllm.model.build import build_model

    model, processor = build_model(load_model_config(preset_overrides))
    model.eval()
    variants = {"per-row": group_inputs(processor, g, False), "dedup": group_inputs(processor, g, True)}
    times: dict[str, list[float]] = {k: [] for k in variants}
    calls: dict[str, int] = {}
    with torch.no_grad():
        for k, inputs in variants.items():  # warm-up
            calls[k] = encode_group(model, inputs)
            model(**inputs)
        for _ in range(repeats):
            for k, inputs in variants.items():  # interleaved, so drift hits both sides alike
                t = time.perf_counter()
                encode_group(model, inputs)
                times[k].append(time.perf_counter() - t)
        fwd: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(repeats):
            for k, inputs in variants.items():
                t = time.perf_counter()
                model(**inputs)
                fwd[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    fmed = {k: statistics.median(v) for k, v in fwd.items()}
    return {"group": g, "encodings_per_row": calls["per-row"], "encodings_dedup": calls["dedup"],
            "encoder_ms_per_row": 1e3 * med["per-row"], "encoder_ms_dedup": 1e3 * med["dedup"],
            "encoder_speedup": med["per-row"] / med["dedup"],
            "forward_ms_per_row": 1e3 * fmed["per-row"], "forward_ms_dedup": 1e3 * fmed["dedup"],
            "forward_speedup": fmed["per-row"] / fmed["dedup"]}


def write_small_towers(root: str) -> list[str]:
    """Random-init 'small' CLIP vision and Whisper towers saved as local dirs: loaded by path like real backbones."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModel,
        WhisperConfig,
        WhisperFeatureExtractor,
    )
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    vision = CLIPVisionConfig(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                              image_size=112, patch_size=16)
    CLIPVisionModel(vision).save_pretrained(f"{root}/vision")
    CLIPImageProcessor(size={"shortest_edge": 112}, crop_size={"height": 112, "width": 112}).save_pretrained(
        f"{root}/vision")
    audio = WhisperConfig(d_model=256, encoder_layers=4, encoder_attention_heads=4, encoder_ffn_dim=1024,
                          decoder_layers=1, num_mel_bins=80, max_source_positions=150)
    WhisperEncoder(audio).save_pretrained(f"{root}/audio")
    WhisperFeatureExtractor(feature_size=80, chunk_length=3).save_pretrained(f"{root}/audio")
    return [f"vision={root}/vision", f"face={root}/vision", f"audio={root}/audio"]


def peak_memory_child() -> None:
    """Runs in a fresh process: build, then one forward/backward while a thread samples RSS every 0.5 ms."""
    import threading

    import psutil

    from affectllm.model.build import build_model
    from affectllm.model.trainable import apply_trainable_policy

    model, processor = build_model()
    model = apply_trainable_policy(model, llm_mode="lora")
    inputs = group_inputs(processor, 4, False)
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    out = model(**inputs, labels=inputs["input_ids"].clone())
    out.loss.backward()
    done.set()
    sampler.join()
    mib = 1024 * 1024
    print(json.dumps({"baseline_mib": base / mib, "peak_mib": peak[0] / mib,
                      "fwd_bwd_increase_mib": (peak[0] - base) / mib}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny preset only, G=4, one repeat")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.group, args.repeats = 4, 1
    if args.child:
        peak_memory_child()
        return
    torch.set_num_threads(1)
    print(f"== media de-duplication, GRPO group G={args.group} (median of {args.repeats}, interleaved)")
    # "small" towers make the encoder cost visible (tiny towers are mostly Python overhead).
    import tempfile

    variants = [("tiny preset", ["preset=tiny"])]
    if not args.quick:
        small = write_small_towers(tempfile.mkdtemp(prefix="affectllm-bench-"))
        variants.append(("small towers (CLIP-256x4, Whisper-256x4)", small))
    for label, overrides in variants:
        r = bench_dedup(args.group, args.repeats, overrides)
        print(f"{label}: clip encodings {r['encodings_per_row']} per-row vs {r['encodings_dedup']} dedup "
              f"({r['encodings_per_row'] / r['encodings_dedup']:.1f}x fewer)")
        print(f"  encoder time per group: {r['encoder_ms_per_row']:.1f} ms per-row vs {r['encoder_ms_dedup']:.1f} ms "
              f"dedup -> {r['encoder_speedup']:.2f}x")
        print(f"  full forward per group: {r['forward_ms_per_row']:.1f} ms per-row vs {r['forward_ms_dedup']:.1f} ms "
              f"dedup -> {r['forward_speedup']:.2f}x")
    print("== peak memory of one tiny forward/backward (LoRA, batch 4, all modalities), fresh process")
    child = subprocess.run([sys.executable, __file__, "--child"], capture_output=True, text=True, check=True)
    mem = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"  RSS baseline {mem['baseline_mib']:.0f} MiB, peak {mem['peak_mib']:.0f} MiB, "
          f"forward/backward adds {mem['fwd_bwd_increase_mib']:.1f} MiB")


if __name__ == "__main__":
    main()
