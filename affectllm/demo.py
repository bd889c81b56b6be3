"""`affectllm demo`: the built-in end-to-end run on one CPU.

Until the training stages land this is a smoke of what exists: build the tiny model, save and reload it through the
Auto classes, and generate for clips with different sets of modalities, de-duplicating a GRPO-style group.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def _clip(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "videos": rng.integers(0, 255, (8, 64, 64, 3), dtype=np.uint8),
        "audios": (0.1 * rng.standard_normal(16000 * 3)).astype(np.float32),
        "faces": rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8),
        "au_features": rng.random((8, 353)).astype(np.float32),
    }


def demo_main(out: str = "runs/demo", n: int = 24, seed: int = 0) -> int:
    """Build, save, reload and generate; print what happened at each stage."""
    from rich.console import Console
    from rich.table import Table
    from transformers import AutoModelForCausalLM, AutoProcessor

    from .model import media_prefix
    from .model.build import build_model

    console = Console()
    out_dir = Path(out)
    t0 = time.perf_counter()
    console.log("[1/3] building the tiny preset")
    model, processor = build_model(seed=seed)
    model.save_pretrained(out_dir / "model")
    processor.save_pretrained(out_dir / "model")
    console.log(f"[2/3] saved to {out_dir / 'model'}; reloading through AutoModelForCausalLM/AutoProcessor")
    model = AutoModelForCausalLM.from_pretrained(out_dir / "model").eval()
    processor = AutoProcessor.from_pretrained(out_dir / "model")
    rng = np.random.default_rng(seed)
    mods = {"videos": "video", "audios": "audio", "faces": "face", "au_features": "au"}
    rows = [list(mods), ["audios"], ["videos", "faces"], []]
    clips = [_clip(rng) for _ in range(max(1, min(n, len(rows))))]
    texts, kwargs = [], {k: [] for k in mods}
    for i, present in enumerate(rows):
        msgs = [{"role": "user", "content": media_prefix([mods[k] for k in present]) + "How does this person feel?"}]
        texts.append(processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False))
        for k in mods:
            kwargs[k].append(clips[i % len(clips)][k] if k in present else None)
    console.log("[3/3] generating for clips with 4, 1, 2 and 0 modalities")
    inputs = processor(texts, **kwargs)
    generated = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    table = Table("modalities", "prompt tokens", "generated (random weights)")
    for present, row in zip(rows, generated, strict=False):
        text = processor.decode(row[inputs["input_ids"].shape[1]:], skip_special_tokens=False)
        table.add_row(", ".join(mods[k] for k in present) or "text only", str(inputs["input_ids"].shape[1]),
                      repr(text[:40]))
    console.print(table)
    console.log(f"demo finished in {time.perf_counter() - t0:.1f} s; model directory: {out_dir / 'model'}")
    return 0
