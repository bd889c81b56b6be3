"""Every bench script runs in ``--quick`` mode (benches that nothing runs rot: bench/grpo.py did)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHES = sorted(p.name for p in (ROOT / "bench").glob("*.py"))
# Over ~30 s on one core even when quick: they train (grpo) or run the face pipeline in worker processes (decode,
# label: four label jobs incl. torchrun).
SLOW = {"decode.py", "grpo.py", "label.py"}


def test_every_bench_is_listed_here():
    assert {"decode.py", "grpo.py", "metrics.py", "model.py"} <= set(BENCHES)


@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.slow] if n in SLOW else []) for n in BENCHES])
def test_bench_runs_quick(name, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / name), "--quick"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip(), "a bench prints what it measured"
