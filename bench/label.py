"""Batch labeling throughput, side by side in one run, on EmoWorld clips with the tiny model (CPU).

(a) clips/s with decoding overlapped with generation (``--num-workers 2``: DataLoader worker processes decode while
    the main process generates) vs decoding in the main process (``--num-workers 0``), one process each; and the
    split of one chunk's time into decoding and generation, which says whether a job is decode- or model-bound.
(b) clips/s with 2 ``torchrun`` processes vs 1 (each with one decode worker).
(c) decoding throughput once the workers run (2 DataLoader workers vs the main process), without the start-up
    (forkserver, imports, face graphs: seconds) that a short job pays and a long one does not notice.

clips/s is the whole job's (the summary line of ``affectllm label``: model load and worker start-up included, as a
user waits for them; Python start-up and imports excluded). Every run labels the same clips into a fresh folder;
the rows of all runs are checked equal.

Run: ``.venv/bin/python bench/label.py [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
RATE = re.compile(r"([\d.]+) clips/s this run")


def setup(tmp: Path, n: int) -> tuple[Path, Path]:
    """An EmoWorld manifest of ``n`` clips and a saved tiny model, in ``tmp``."""
    from affectllm.emoworld.generate import synth_main
    from affectllm.model.build import init_main

    synth_main(str(tmp / "ew"), n, 0, overrides=["size=96", "fps=12"])
    init_main("tiny", str(tmp / "model"))
    return tmp / "ew" / "manifest.jsonl", tmp / "model"


def run(cmd: list[str], out: Path) -> float:
    """Run one label job; returns its clips/s."""
    proc = subprocess.run([*cmd, "--out", str(out), "--no-progress"], env=ENV, capture_output=True, text=True)
    found = RATE.search(proc.stderr)
    if proc.returncode != 0 or not found:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return float(found.group(1))


def split(manifest: Path, model: Path, batch: int, tokens: int) -> tuple[float, float]:
    """Seconds to decode one chunk and to generate it, in this process."""
    from affectllm.data.manifest import read_manifest
    from affectllm.serve.engine import Engine, GenerationOptions

    engine = Engine.load(model, device="cpu")
    clips = read_manifest(manifest)[0][:batch]
    engine.label(clips[:1], gen=GenerationOptions(max_new_tokens=2))  # warm-up (face graphs, kernels)
    start = time.perf_counter()
    decoded = [engine.decode(c) for c in clips]
    mid = time.perf_counter()
    engine.generate(clips, decoded, engine.question(), GenerationOptions(max_new_tokens=tokens))
    return mid - start, time.perf_counter() - mid


def steady_decode(manifest: Path, model: Path, batch: int, workers: int) -> float:
    """Decoded clips/s once running (the first chunk, which pays the worker start-up, is not counted)."""
    import torch

    from affectllm.data.manifest import read_manifest
    from affectllm.serve.engine import ModelSettings
    from affectllm.serve.label import _as_is, _worker_context, _worker_init, chunked
    from affectllm.serve.media_policy import ChunkDecoder

    chunks = chunked(read_manifest(manifest)[0], batch)
    data = ChunkDecoder(chunks, ModelSettings.read(model).media)
    extra = {"worker_init_fn": _worker_init, "multiprocessing_context": _worker_context()} if workers else {}
    batches = iter(torch.utils.data.DataLoader(data, batch_size=None, num_workers=workers, collate_fn=_as_is,
                                               **extra))
    next(batches)
    start = time.perf_counter()
    count = sum(len(items) for items in batches)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="12 clips, short answers")
    args = parser.parse_args()
    n, tokens, batch = (12, 8, 4) if args.quick else (48, 32, 8)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        manifest, model = setup(tmp, n)
        base = ["-m", "affectllm.cli", "label", str(manifest), "--model", str(model), "--batch-size", str(batch),
                "--max-new-tokens", str(tokens)]
        one = [sys.executable, *base]
        torchrun = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node", "2", *base]
        rates = {"overlapped (2 workers)": run([*one, "--num-workers", "2"], tmp / "a"),
                 "main-process decoding": run([*one, "--num-workers", "0"], tmp / "b"),
                 "1 process": run([*one, "--num-workers", "1"], tmp / "c"),
                 "2 processes (torchrun)": run([*torchrun, "--num-workers", "1"], tmp / "d")}
        labels = {k: (tmp / k / "labels.jsonl").read_bytes() for k in "abcd"}
        decode_s, generate_s = split(manifest, model, batch, tokens)
        steady = {w: steady_decode(manifest, model, batch, w) for w in (0, 2)}
    print(f"label bench: {n} EmoWorld clips (96 px, 12 fps), tiny model, batch {batch}, {tokens} new tokens, "
          f"{os.cpu_count()} CPU cores")
    for name, rate in rates.items():
        print(f"  {name:<24} {rate:6.2f} clips/s")
    overlap = rates["overlapped (2 workers)"] / rates["main-process decoding"]
    print(f"  (a) overlapped / main-process decoding: {overlap:.2f}x")
    print(f"  (b) 2 processes / 1 process:            {rates['2 processes (torchrun)'] / rates['1 process']:.2f}x")
    print(f"  one chunk of {batch}: decode {decode_s:.2f} s, generate {generate_s:.2f} s "
          f"({'decode' if decode_s > generate_s else 'model'}-bound when decoding is not overlapped)")
    print(f"  (c) decoding once running (first chunk not counted): 2 workers {steady[2]:.2f} clips/s vs main "
          f"process {steady[0]:.2f} clips/s ({steady[2] / steady[0]:.2f}x)")
    print(f"  rows identical across the four runs: {len(set(labels.values())) == 1}")


if __name__ == "__main__":
    main()
