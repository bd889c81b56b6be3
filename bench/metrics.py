"""EW scoring throughput (samples/s, level 1) with vs without the per-label normalisation cache.

Usage: ``python bench/metrics.py [--n 100000] [--wheel-dir DIR]``. Uses the MER tables (5 wheels) when found at
``--wheel-dir`` (default ``../shared/data/emotion_wheel`` beside the repo), else the built-in taxonomy (3 wheels).
Samples draw 1-4 predicted and 1-3 gold labels from the taxonomy's vocabulary plus 10% unknown words.
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


def uncached_copy(tax: Taxonomy) -> Taxonomy:
    """A copy of ``tax`` whose ``normalize_all`` recomputes every label (the cache switched off, for comparison)."""
    plain = copy.copy(tax)
    plain.normalize_all = lambda label, level="level1": tuple(  # type: ignore[method-assign]
        tax.normalize_uncached(label, w, level) for w in tax.wheel_names
    )
    return plain


def timed(tax: Taxonomy, preds: list[list[str]], golds: list[list[str]], cached: bool) -> tuple[float, float]:
    """(samples per second, Fs) of one full scoring pass; the cache starts empty."""
    tax.clear_cache()
    scored = tax if cached else uncached_copy(tax)
    start = time.perf_counter()
    f = ew_scores(preds, golds, scored, "level1")["f"]
    return len(preds) / (time.perf_counter() - start), f


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--wheel-dir", type=Path, default=DEFAULT_DIR)
    args = parser.parse_args()
    tax = get_taxonomy(args.wheel_dir if args.wheel_dir.is_dir() else None)
    preds, golds = make_samples(tax, args.n)
    uncached, f_u = timed(tax, preds, golds, cached=False)
    cached, f_c = timed(tax, preds, golds, cached=True)
    assert f_u == f_c, "cache changed the score"
    print(f"EW level1, taxonomy={tax.name}, wheels={len(tax.wheels)}, samples={args.n:,}")
    print(f"{'uncached':>10}: {uncached:>12,.0f} samples/s")
    print(f"{'cached':>10}: {cached:>12,.0f} samples/s   (ratio {cached / uncached:.1f}x, Fs={f_c:.4f})")


if __name__ == "__main__":
    main()
