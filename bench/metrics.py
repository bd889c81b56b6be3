"""EW scoring throughput (samples/s, level 1): a cold per-label normalisation cache vs a warm one, in one run.

The first pass starts with an empty cache (``Taxonomy.clear_cache``), so every new label string is normalised once;
the second pass over the same samples finds every label cached. Both must give the same Fs.

Usage: ``python bench/metrics.py [--n 100000] [--wheel-dir DIR] [--quick]``. Uses the MER tables (5 wheels) when
found at ``--wheel-dir`` (default ``../shared/data/emotion_wheel`` beside the repo), else the built-in taxonomy
(3 wheels). Samples draw 1-4 predicted and 1-3 gold labels from the taxonomy's vocabulary plus 10% unknown words.
``--quick`` scores 2,000 samples (a smoke run).
"""

from __future__ import annotations

import argparse
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
    """(samples per second, Fs) of one full scoring pass with the cache as it is."""
    start = time.perf_counter()
    f = ew_scores(preds, golds, tax, "level1")["f"]
    return len(preds) / (time.perf_counter() - start), f


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--wheel-dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--quick", action="store_true", help="2,000 samples")
    args = parser.parse_args()
    n = 2_000 if args.quick else args.n
    tax = get_taxonomy(args.wheel_dir if args.wheel_dir.is_dir() else None)
    preds, golds = make_samples(tax, n)
    tax.clear_cache()
    cold, f_cold = timed(tax, preds, golds)
    warm, f_warm = timed(tax, preds, golds)
    assert f_cold == f_warm, "the cache changed the score"
    print(f"EW level1, taxonomy={tax.name}, wheels={len(tax.wheels)}, samples={n:,}")
    print(f"{'cold cache':>10}: {cold:>12,.0f} samples/s")
    print(f"{'warm cache':>10}: {warm:>12,.0f} samples/s   (ratio {warm / cold:.1f}x, Fs={f_warm:.4f})")


if __name__ == "__main__":
    main()
