"""Server benchmark: throughput and latency percentiles at 1, 4 and 16 concurrent clients, batched generation vs one
request at a time, side by side in one run (the ratio is the result; absolute times depend on the machine).

Two servers (`affectllm serve`'s app, batched and one at a time: ``max_batch_size=1``) run in this process on free
loopback ports with the tiny random model, and each level runs on both in turn, so the machine's drift hits both.
The clients share ``--requests`` chat completions (one EmoWorld clip as a file URL, greedy, ``--max-tokens`` new
tokens), each sending its share one after another.
Every request sends the same clip, so after the first it comes from the server's decode cache and the numbers are
generation plus HTTP; ``--decode-cache 0`` decodes every request (then, with video, the face tracking in the decode
workers is the bottleneck on CPU and batching cannot show).

    .venv/bin/python bench/serve.py [--requests 32] [--max-tokens 32] [--media video|audio] [--decode-cache 16]
                                    [--quick]

``--quick`` is a smoke run (1 and 4 clients, 4 requests, 4 new tokens): it measures nothing worth quoting.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) of ``values`` by linear interpolation."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def run_clients(base: str, model: str, part: dict, clients: int, requests: int, max_tokens: int) -> dict:
    """``clients`` threads sending ``requests`` chat completions in all (each its share, one after another):
    requests per second over the wall time and latency percentiles in seconds."""
    import openai

    client = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0, timeout=600)
    messages = [{"role": "user", "content": [part, {"type": "text", "text": "How does this person feel?"}]}]
    latencies: list[float] = []
    lock = threading.Lock()

    def one_client() -> None:
        for _ in range(requests // clients):
            start = time.perf_counter()
            resp = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)
            assert resp.choices[0].finish_reason in ("stop", "length")
            with lock:
                latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=one_client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {"rps": len(latencies) / wall, "p50": percentile(latencies, 0.5), "p90": percentile(latencies, 0.9),
            "p99": percentile(latencies, 0.99)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=32, help="requests per setting, shared by the clients (32)")
    parser.add_argument("--max-tokens", type=int, default=32, help="new tokens per answer (default 32)")
    parser.add_argument("--media", choices=("video", "audio"), default="video",
                        help="the clip part: video (face tracking per request) or audio (cheap to decode)")
    parser.add_argument("--decode-cache", type=int, default=16, help="the server's decode cache (0: off)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 and 4 clients, 4 requests, 4 tokens")
    args = parser.parse_args()
    levels, requests, max_tokens = ((1, 4), 4, 4) if args.quick else ((1, 4, 16), args.requests, args.max_tokens)

    import torch

    torch.set_num_threads(1)
    from affectllm.emoworld.generate import synth_main
    from affectllm.model.build import build_model
    from affectllm.serve.engine import Engine
    from affectllm.serve.server import ServerConfig, serve_in_thread

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "clips"
        synth_main(str(root), 2, 0, overrides=["size=48", "fps=8"])
        model_dir = Path(tmp) / "tiny-emo"
        model, processor = build_model(seed=0)
        model.save_pretrained(model_dir)
        processor.save_pretrained(model_dir)
        engine = Engine.load(model_dir, device="cpu")
        clip = next((root / args.media).glob("*.mp4" if args.media == "video" else "*.wav"))
        part = {"type": f"{args.media}_url", f"{args.media}_url": {"url": clip.as_uri()}}
        rows = {}
        modes = {"batched": max(levels), "one at a time": 1}
        with contextlib.ExitStack() as stack:  # both servers up at once, run in turn per level: drift hits both
            bases = {}
            for mode, batch in modes.items():
                config = ServerConfig(model=str(model_dir), media_root=str(root), device="cpu",
                                      max_batch_size=batch, max_wait_ms=20.0, decode_workers=2,
                                      decode_cache=args.decode_cache)
                bases[mode] = stack.enter_context(serve_in_thread(config, engine))[0]
                run_clients(bases[mode], "tiny-emo", part, 1, 1, max_tokens)  # warm-up: first decode and generate
            for clients in levels:
                for mode in modes:
                    rows[mode, clients] = run_clients(bases[mode], "tiny-emo", part, clients, requests, max_tokens)
    print(f"tiny random model, CPU, {args.media} clips, {max_tokens} new tokens, {requests} requests per setting, "
          f"decode cache {args.decode_cache}, torch threads {torch.get_num_threads()}")
    print(f"{'clients':>7} | {'batched req/s':>13} {'p50 s':>7} {'p90 s':>7} {'p99 s':>7} | "
          f"{'1-at-a-time req/s':>17} {'p50 s':>7} {'p90 s':>7} {'p99 s':>7} | speed-up")
    for clients in levels:
        b, o = rows["batched", clients], rows["one at a time", clients]
        print(f"{clients:>7} | {b['rps']:>13.2f} {b['p50']:>7.2f} {b['p90']:>7.2f} {b['p99']:>7.2f} | "
              f"{o['rps']:>17.2f} {o['p50']:>7.2f} {o['p90']:>7.2f} {o['p99']:>7.2f} | {b['rps'] / o['rps']:.2f}x")
    ratios = [rows["batched", c]["rps"] / rows["one at a time", c]["rps"] for c in levels]
    print(f"median throughput ratio batched / one at a time: {statistics.median(ratios):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
