"""Frame sampling index math (affectllm.media.sampling): strategies, edge cases, caps."""

from __future__ import annotations

import numpy as np
import pytest

from affectllm.media.sampling import (
    SamplingConfig,
    fps_indices,
    sample_indices,
    segment_indices,
    uniform_indices,
)


def _ok(idx: np.ndarray, total: int) -> None:
    assert idx.dtype == np.int64
    assert np.all(np.diff(idx) >= 0), "indices must be sorted"
    if len(idx):
        assert idx.min() >= 0 and idx.max() < total


@pytest.mark.parametrize("total,n", [(300, 8), (8, 8), (9, 8), (1000, 1), (17, 5), (2, 2)])
def test_uniform_spreads_evenly_without_repeats(total: int, n: int) -> None:
    idx = uniform_indices(total, n)
    _ok(idx, total)
    assert len(idx) == n and len(np.unique(idx)) == n
    gaps = np.diff(idx)
    if len(gaps):
        assert gaps.max() - gaps.min() <= 1


def test_uniform_fewer_frames_than_asked() -> None:
    assert uniform_indices(3, 8).tolist() == [0, 1, 2]
    padded = uniform_indices(3, 8, repeat=True)
    _ok(padded, 3)
    assert len(padded) == 8 and set(padded.tolist()) == {0, 1, 2}


def test_zero_length_gives_empty() -> None:
    for idx in (uniform_indices(0, 8), fps_indices(0, 30.0, 2.0, 8), segment_indices(0, 4)):
        assert idx.shape == (0,) and idx.dtype == np.int64


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError):
        uniform_indices(10, 0)
    with pytest.raises(ValueError):
        uniform_indices(-1, 3)
    with pytest.raises(ValueError):
        fps_indices(10, 0.0, 2.0, 8)
    with pytest.raises(ValueError, match="unknown sampling strategy"):
        sample_indices(10, 30.0, SamplingConfig(strategy="random"))


def test_fps_grid_and_cap() -> None:
    idx = fps_indices(300, video_fps=30.0, fps=2.0, max_frames=100)
    assert idx.tolist() == list(range(0, 300, 15))
    capped = fps_indices(300, video_fps=30.0, fps=2.0, max_frames=8)
    _ok(capped, 300)
    assert len(capped) == 8
    assert capped[0] < 40 and capped[-1] > 250, "a capped grid still spans the clip"


def test_fps_higher_than_video_rate_does_not_repeat() -> None:
    idx = fps_indices(10, video_fps=5.0, fps=30.0, max_frames=100)
    assert idx.tolist() == list(range(10))
    assert len(fps_indices(10, video_fps=5.0, fps=30.0, max_frames=100, repeat=True)) == 60


def test_fps_short_clip_gives_at_least_one_frame() -> None:
    assert fps_indices(3, video_fps=30.0, fps=1.0, max_frames=8).tolist() == [0]


def test_segments_centred_and_jittered() -> None:
    idx = segment_indices(100, 4)
    assert idx.tolist() == [12, 37, 62, 87]
    two = segment_indices(100, 4, frames_per_segment=2)
    assert len(two) == 8
    a = segment_indices(100, 4, rng=np.random.default_rng(0))
    b = segment_indices(100, 4, rng=np.random.default_rng(0))
    assert a.tolist() == b.tolist(), "jitter is deterministic for a seed"
    for k, i in enumerate(a):
        assert 25 * k <= i < 25 * (k + 1), "a jittered pick stays inside its segment"


def test_dispatch_matches_functions() -> None:
    assert sample_indices(300, 30.0, SamplingConfig()).tolist() == uniform_indices(300, 8).tolist()
    cfg = SamplingConfig(strategy="fps", fps=1.0, max_frames=4)
    assert sample_indices(300, 30.0, cfg).tolist() == fps_indices(300, 30.0, 1.0, 4).tolist()
    cfg = SamplingConfig(strategy="segment", num_frames=3, seed=1)
    assert len(sample_indices(300, 30.0, cfg)) == 3
