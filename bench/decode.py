"""Decoding and prep throughput, side by side in one run (clips are written to a temp dir first).

(a) 8 uniform frames from a 10 s, 30 fps, 640x360 clip, each backend vs the raw floor (PyAV demux + decode of
    every frame, no conversion; the faster of PyAV's default and frame-threaded decoding). Aim: within 1.2x.
(b) 8 frames from a 5-minute clip with a keyframe every 2 s: seek-based (each backend) vs decoding every frame.
    Aim: at least 5x faster.
(c) ``data prep`` throughput (clips/s, faces and AUs on) with 2 workers vs 1.

Run: ``.venv/bin/python bench/decode.py [--quick]``. Times are the best of several repeats (wall clock).
``--quick`` is a smoke run (a 2 s short clip, a 20 s long one, one repeat, 2 prep clips): it measures nothing worth
quoting.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from affectllm.inputs.prep import PrepConfig, prep_main  # noqa: E402
from affectllm.media.decode import DecodeConfig, _decord_available, decode_video  # noqa: E402
from tests.media_fixtures import write_video  # noqa: E402


def interleaved_best(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Fastest wall time of each function; the functions take turns in every round, so a load spike from
    other processes on a shared machine hits all of them alike (one warm-up round first)."""
    best = {name: float("inf") for name in fns}
    for round_ in range(repeats + 1):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if round_:
                best[name] = min(best[name], time.perf_counter() - start)
    return best


def decode_all(path: Path, threaded: bool) -> int:
    """The floor: demux and decode every frame, no pixel conversion."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if threaded:
            stream.thread_type = "AUTO"
        return sum(1 for _ in container.decode(stream))


def backends() -> list[str]:
    return (["decord"] if _decord_available() else []) + ["pyav"]


def bench_sampling(path: Path, repeats: int, label: str) -> None:
    fns: dict[str, Callable[[], object]] = {
        "floor": lambda: decode_all(path, False),
        "floor-threaded": lambda: decode_all(path, True),
    }
    for backend in backends():
        cfg = DecodeConfig(backend=backend, fallback=False)
        fns[backend] = lambda cfg=cfg: decode_video(path, cfg)
    best = interleaved_best(fns, repeats)
    floor = min(best["floor"], best["floor-threaded"])
    print(f"{label}: floor (decode every frame) {floor * 1000:8.1f} ms")
    for backend in backends():
        t = best[backend]
        print(
            f"{label}: {backend:6s} 8 frames      {t * 1000:8.1f} ms   "
            f"{t / floor:5.2f}x floor   {floor / t:6.1f}x faster"
        )


def bench_prep(tmp: Path, clips: int) -> None:
    from skimage import data

    video = write_video(tmp / "face.mp4", seconds=2.0, fps=15, size=(360, 480), audio=True, image=data.astronaut())
    manifest = tmp / "prep.jsonl"
    manifest.write_text("".join(json.dumps({"id": f"c{i}", "video": str(video)}) + "\n" for i in range(clips)))
    rates = {}
    for workers in (1, 2):
        start = time.perf_counter()
        prep_main(str(manifest), str(tmp / f"out{workers}"), PrepConfig(workers=workers, progress=False))
        rates[workers] = clips / (time.perf_counter() - start)
        rows = [json.loads(line) for line in (tmp / f"out{workers}" / "prep.jsonl").read_text().splitlines()]
        per_clip = sum(r["seconds"] for r in rows) / len(rows)
        print(
            f"(c) prep, {workers} worker(s): {rates[workers]:6.2f} clips/s ({clips} clips, incl. worker start-up; "
            f"{per_clip * 1000:.0f} ms per clip inside a worker)"
        )
    print(f"(c) 2 workers vs 1: {rates[2] / rates[1]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: short clips, one repeat, 2 prep clips")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    short_s, long_s, prep_clips = (2, 20, 2) if args.quick else (10, 300, 24)
    if args.quick:
        args.repeats = 1
    with tempfile.TemporaryDirectory(prefix="affectllm-bench-") as d:
        tmp = Path(d)
        start = time.perf_counter()
        short = write_video(tmp / "short.mp4", seconds=short_s, fps=30, size=(360, 640), preset="medium")
        long = write_video(tmp / "long.mp4", seconds=long_s, fps=30, size=(360, 640), gop=60, distinct=90)
        print(f"wrote clips in {time.perf_counter() - start:.1f} s; backends: {', '.join(backends())}")
        bench_sampling(short, args.repeats, f"(a) {short_s} s 640x360")
        bench_sampling(long, max(1 if args.quick else 2, args.repeats // 2), f"(b) {long_s} s, key/2 s")
        bench_prep(tmp, prep_clips)


if __name__ == "__main__":
    main()
