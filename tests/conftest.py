"""Shared fixtures: a tiny random model built once per session, synthetic media arrays, and the hypothesis
strategy of model completions (``from conftest import COMPLETION``)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import strategies as st

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Completion-like text: free text, or tags, labels, AU mentions (negated, zero-padded), confidences (plain, percent)
# and separators shuffled together, so the parser and the rewards meet every malformed combination.
COMPLETION_PARTS = ("<think>", "</think>", "<answer>", "</answer>", "<confidence>", "</confidence>", "0.7", "0.5",
                    "85%", "%", "happy", "sad, ", "xyz", "AU", "AU6 ", "AU06", "no AU12", "no ", ",", " and ", "\n")
COMPLETION = st.one_of(st.text(max_size=300), st.lists(st.sampled_from(COMPLETION_PARTS), max_size=30).map("".join))


@pytest.fixture(scope="session")
def tiny():
    """(model, processor) of the tiny preset, eval mode, seed 0."""
    from affectllm.model.build import build_model

    model, processor = build_model(seed=0)
    model.eval()
    return model, processor


def save_tiny_model(out):
    """Save a random tiny model (seed 0) with its processor into ``out``; returns ``out``."""
    from affectllm.model.build import build_model

    model, processor = build_model(seed=0)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A saved tiny model directory (random init, seed 0), shared read-only: tests that change it copy it first."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def model_dir(tiny_model_dir):
    """The saved tiny model, by the name the engine, chat and label tests use (a module may define its own)."""
    return tiny_model_dir


@pytest.fixture(scope="session")
def media():
    """One synthetic clip's media: frames, 16 kHz audio, face crops, AU vectors, the transcript (words tower)."""
    rng = np.random.default_rng(0)
    return {
        "video": rng.integers(0, 255, (6, 40, 48, 3), dtype=np.uint8),
        "audio": (0.1 * rng.standard_normal(16000 * 2)).astype(np.float32),
        "face": rng.integers(0, 255, (6, 24, 24, 3), dtype=np.uint8),
        "au": rng.random((6, 353)).astype(np.float32),
        "words": "Honestly, I feel thrilled about all of this.",
    }


@pytest.fixture(scope="session")
def emoworld(tmp_path_factory):
    """A 12-clip EmoWorld (train/val/test splits) written once per session; returns the manifest path."""
    from affectllm.emoworld.generate import synth_main

    out = tmp_path_factory.mktemp("emoworld")
    assert synth_main(str(out), 12, 0, overrides=["size=48", "fps=8"]) == 0
    return out / "manifest.jsonl"


def pytest_configure(config):
    """One torch thread per test process: with pytest-xdist two workers share 2 cores, and OpenMP threads that
    oversubscribe the cores spin-wait each other into 10-20x slower steps (measured here)."""
    import torch

    torch.set_num_threads(1)

