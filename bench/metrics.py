"""EW scoring throughput (samples/s, level 1) with vs without the per-label normalisation cache, in one run.

Without: the taxonomy instance normalises every label afresh (``Taxonomy.normalize_uncached`` per wheel, what
``normalize_all`` does on a miss); with: ``normalize_all`` as the metrics call it, its cache emptied first. Both
must give the same Fs.

Usage: ``python bench/metrics.py [--n 100000] [--wheel-dir DIR] [--quick]``. Uses the MER tables (5 wheels) when
found at ``--wheel-dir`` (default ``../shared/data/emotion_wheel`` beside the repo), else the built-in taxonomy
(3 wheels). Samples draw 1-4 predicted and 1-3 gold labels from the taxonomy's vocabulary plus 10% unknown words.
``--quick`` scores 2,000 samples (a smoke run).
"""

from __future__ import annotations

import argparse
import copy
import random
import time
from pathlib import Path

from affectllm.metrics import ew_scores
from affectllm.taxonomy import Taxonomy, get_taxonomy

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "emotion_wheel"


def make_samples(tax: Taxonomy, n: int, seed: int = 0) -> tuple[list[list[str]], list[list[str]]]:
    """``n`` (pred, gold) label lists drawn from the vocabulary, with unknown words and odd casing mixed in."""
    rng = random.Random(seed)
    vocab = sorted(tax.vocabulary())
    vocab += [f"unknownword{i}" for i in range(len(vocab) // 10)]

    def draw(k: int) -> list[str]:
        return [w.title() if rng.random() < 0.2 else w for w in rng.sample(vocab, k)]

    return [draw(rng.randint(1, 4)) for _ in range(n)], [draw(rng.randint(1, 3)) for _ in range(n)]


def timed(tax: Taxonomy, preds: list[list[str]], golds: list[list[str]]) -> tuple[float, float]:
    """(samples per second, Fs) of one full scoring pass."""
    start = time.perf_counter()
    f = ew_scores(preds, golds, tax, "level1")["f"]
    return len(preds) / (time.perf_counter() - start), f


def uncached(tax: Taxonomy) -> Taxonomy:
    """``tax`` whose ``normalize_all`` skips the cache (instance attribute over the method)."""

    def normalize_all(label: str, level: str = "level1") -> tuple[str | None, ...]:
        return tuple(tax.normalize_uncached(label, w.name, level) for w in tax.wheels)

    tax.normalize_all = normalize_all  # type: ignore[method-assign]
    return tax


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--wheel-dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--quick", action="store_true", help="2,000 samples")
    args = parser.parse_args()
    n = 2_000 if args.quick else args.n
    tax = get_taxonomy(args.wheel_dir if args.wheel_dir.is_dir() else None)
    preds, golds = make_samples(tax, n)
    plain = uncached(copy.copy(tax))  # a shallow copy: the shared (cached) instance keeps its own method
    slow, f_slow = timed(plain, preds, golds)
    tax.clear_cache()
    fast, f_fast = timed(tax, preds, golds)
    assert f_slow == f_fast, "the cache changed the score"
    print(f"EW level1, taxonomy={tax.name}, wheels={len(tax.wheels)}, samples={n:,}")
    print(f"{'uncached':>10}: {slow:>12,.0f} samples/s")
    print(f"{'cached':>10}: {fast:>12,.0f} samples/s   (ratio {fast / slow:.1f}x, Fs={f_fast:.4f})")

if __name__ == "__main__":
    main()
