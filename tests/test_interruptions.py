"""Interruptions: ``data prep`` and training killed (SIGKILL) and resumed give the output of a run that was never
stopped; a full disk stops a job with a clear message and keeps every finished row."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from affectllm import jsonl
from affectllm.inputs import prep
from affectllm.inputs.prep import PREP_FILE, PrepConfig, prep_main
from tests.bad_inputs import prep_outputs
from tests.media_fixtures import write_corrupt, write_video

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}

# Runs `affectllm ARGS...` with a SIGKILL planted at row MODE/N (argv[1], argv[2]): before row N is written, half
# way through writing it, right after it, or half way through writing its arrays (a real atomic_write, cut).
KILLER = """
import os, signal, sys
from affectllm.inputs import prep
from affectllm.jsonl import atomic_write
mode, n = sys.argv[1], int(sys.argv[2])
written = [0]
real_append, real_savez = prep._append, prep._atomic_savez

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def append(fh, row):
    if written[0] == n and mode in ("before-row", "mid-row"):
        if mode == "mid-row":
            line = prep.dumps_row(row)
            fh.write(line[: len(line) // 2]); fh.flush(); os.fsync(fh.fileno())
        die()
    real_append(fh, row)
    written[0] += 1
    if written[0] == n + 1 and mode == "after-row":
        die()

def savez(path, arrays):
    if written[0] >= n and mode == "mid-arrays":  # a row without arrays (a failed clip) moves it on
        with atomic_write(path, "wb") as fh:
            fh.write(b"PK\\x03\\x04 cut"); fh.flush(); die()
    real_savez(path, arrays)

prep._append, prep._atomic_savez = append, savez
from affectllm.cli import main
sys.exit(main(sys.argv[3:]))
"""


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("kill")
    rows = []
    for i in range(6):
        write_video(d / f"v{i}.mp4", seconds=0.5, fps=8, size=(48, 64), hz=200 + 50 * i, audio=i % 2 == 0,
                    sample_rate=16000, channels=1)
        rows.append({"id": f"v{i}", "video": f"v{i}.mp4"})
    write_corrupt(d / "bad.mp4")
    rows.insert(3, {"id": "bad", "video": "bad.mp4"})
    path = d / "manifest.jsonl"
    jsonl.write_jsonl(rows, path)
    return path


def _prep_args(manifest: Path, out: Path) -> list[str]:
    return ["data", "prep", str(manifest), "--out", str(out), "--no-faces", "--no-progress", "--num-frames", "4"]


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, (row, arrays) in a.items():
        assert b[key][0] == row, key
        assert arrays.keys() == b[key][1].keys() and all(np.array_equal(v, b[key][1][k]) for k, v in arrays.items())


@pytest.fixture(scope="module")
def straight(manifest: Path) -> dict:
    out = manifest.parent / "straight"
    run = subprocess.run([sys.executable, "-m", "affectllm.cli", *_prep_args(manifest, out)], env=ENV, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr[-2000:]  # bad.mp4 fails; the batch finishes
    return prep_outputs(out)


POINTS = [(mode, random.Random(f"14-{mode}").randrange(7)) for mode in ("before-row", "mid-row", "after-row",
                                                                         "mid-arrays")]


@pytest.mark.parametrize(("mode", "row"), POINTS)
def test_prep_killed_at_a_seeded_point_and_resumed_equals_a_straight_run(manifest: Path, straight: dict, mode: str,
                                                                          row: int, tmp_path: Path) -> None:
    out = tmp_path / "out"
    killed = subprocess.run([sys.executable, "-c", KILLER, mode, str(row), *_prep_args(manifest, out)], env=ENV,
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed = subprocess.run([sys.executable, "-m", "affectllm.cli", *_prep_args(manifest, out)], env=ENV, cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 1 and "Traceback" not in resumed.stderr, resumed.stderr[-2000:]
    _same(straight, prep_outputs(out))
    assert not list((out / "arrays").glob(".*.tmp")), "a cut array file is cleared on resume"


def test_prep_killed_at_seeded_random_times_resumes_to_a_straight_run(manifest: Path, straight: dict,
                                                                      tmp_path: Path) -> None:
    out = tmp_path / "out"
    rng = random.Random(14)
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-m", "affectllm.cli", *_prep_args(manifest, out)], env=ENV, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 4.0))  # while it imports, decodes or writes: wherever it is
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    final = subprocess.run([sys.executable, "-m", "affectllm.cli", *_prep_args(manifest, out)], env=ENV, cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert final.returncode == 1, final.stderr[-2000:]
    _same(straight, prep_outputs(out))


def test_a_full_disk_stops_prep_with_a_clear_message_and_keeps_finished_rows(manifest: Path, tmp_path: Path,
                                                                            monkeypatch, capsys) -> None:
    real = prep._atomic_savez
    calls = []

    def savez(path: Path, arrays: dict) -> None:
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, arrays)

    monkeypatch.setattr(prep, "_atomic_savez", savez)
    out = tmp_path / "out"
    config = PrepConfig(progress=False, faces=False, num_frames=4)
    assert prep_main(str(manifest), str(out), config) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "every row written so far is kept" in err
    kept = [json.loads(x) for x in (out / PREP_FILE).read_text().splitlines()]
    assert [r["id"] for r in kept] == ["v0", "v1"] and all(r["error"] is None for r in kept)
    monkeypatch.setattr(prep, "_atomic_savez", real)
    assert prep_main(str(manifest), str(out), config) == 1  # resumes; only bad.mp4 fails
    assert len((out / PREP_FILE).read_text().splitlines()) == 7


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "rows.jsonl"
    jsonl.write_jsonl([{"id": "old"}], target)

    def rows():
        yield {"id": "new"}
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        jsonl.write_jsonl(rows(), target)
    assert target.read_text() == '{"id": "old"}\n' and [p.name for p in tmp_path.iterdir()] == ["rows.jsonl"]


def test_a_half_written_checkpoint_is_never_the_one_resumed(tmp_path: Path) -> None:
    from affectllm.train.stage import last_complete_checkpoint

    for step, state in ((2, "{}"), (4, None), (6, '{"global_st')):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"\0" * 16)
        if state is not None:
            (folder / "trainer_state.json").write_text(state)
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")
    (tmp_path / "checkpoint-6" / "trainer_state.json").write_text("{}")
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-6")


def _train(emoworld: Path, out: Path, *extra: str) -> subprocess.Popen:
    args = ["train", "recipes/tiny/sft.yaml", f"data.manifest={emoworld}", f"output_dir={out}",
            "trainer.max_steps=4", "trainer.save_steps=2", "trainer.logging_steps=1", "trainer.learning_rate=0.005",
            "trainer.lr_scheduler_type=constant", "trainer.warmup_steps=0", "trainer.per_device_train_batch_size=4",
            "trainer.report_to=[]", "eval.enabled=false", *extra]
    return subprocess.Popen([sys.executable, "-m", "affectllm.cli", *args], env=ENV, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _losses(out: Path) -> dict[int, float]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}  # a step logged twice: the resumed run's value


@pytest.mark.slow
def test_training_killed_mid_run_resumes_from_the_last_complete_checkpoint(emoworld: Path, tmp_path: Path) -> None:
    straight = _train(emoworld, tmp_path / "a")
    log, _ = straight.communicate(timeout=540)
    assert straight.returncode == 0, log[-3000:]
    out = tmp_path / "b"
    run = _train(emoworld, out)
    deadline = time.monotonic() + 400
    while not (out / "checkpoint-2" / "trainer_state.json").is_file():
        assert run.poll() is None and time.monotonic() < deadline, "training ended before its first checkpoint"
        time.sleep(0.05)
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=30)
    cut = out / "checkpoint-4"  # what a kill while saving step 4 leaves: weights begun, no trainer state
    cut.mkdir(exist_ok=True)
    (cut / "model.safetensors").write_bytes(b"\0" * 64)
    (cut / "trainer_state.json").unlink(missing_ok=True)
    resumed = _train(emoworld, out, "resume=true")
    log, _ = resumed.communicate(timeout=540)
    assert resumed.returncode == 0, log[-3000:]
    assert "checkpoint-4 is incomplete" in log
    a, b = _losses(tmp_path / "a"), _losses(out)
    for step in (3, 4):
        assert b[step] == pytest.approx(a[step], rel=1e-5, abs=1e-6), step


def test_training_curves_survive_a_metrics_line_a_kill_cut(tmp_path: Path) -> None:
    from affectllm.evaluation.report import plot_curves, reward_panels

    # a run killed mid-append, then resumed: the resumed run's first row lands on the torn line
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo{"step": 2, "loss": 1.5}\n'
                                            '{"step": 3, "loss": 1.0}\n')
    assert [p.name for p in plot_curves(tmp_path)] == ["loss_curves.png"]
    assert reward_panels(tmp_path / "metrics.jsonl", tmp_path / "rewards.png") is None  # read, no reward in it


CRASHING_PREP = """
import sys
from affectllm.inputs.prep import PrepConfig, prep_main
from tests.bad_inputs import crash_on_clip_named_crash
retry = sys.argv[3] == "retry"
config = PrepConfig(progress=False, faces=False, num_frames=4, retry_errors=retry)
sys.exit(prep_main(sys.argv[1], sys.argv[2], config, feature_fn=crash_on_clip_named_crash))
"""


def test_a_clip_that_crashes_prep_fails_alone_on_the_rerun_and_on_retry(manifest: Path, tmp_path: Path) -> None:
    rows = [{"id": "v0", "video": str(manifest.parent / "v0.mp4")}, {"id": "crash", "video": str(manifest.parent /
            "v1.mp4")}, {"id": "v2", "video": str(manifest.parent / "v2.mp4")}]
    crashing = tmp_path / "m.jsonl"
    jsonl.write_jsonl(rows, crashing)
    out = tmp_path / "out"

    def run(mode: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", CRASHING_PREP, str(crashing), str(out), mode], env=ENV,
                              cwd=ROOT, capture_output=True, text=True, timeout=180)

    assert run("plain").returncode == -signal.SIGKILL  # the crash takes the process down once
    for mode in ("plain", "retry"):  # then it is that row's error, and retrying it does not kill the job
        again = run(mode)
        assert again.returncode == 1 and "Traceback" not in again.stderr, (mode, again.stderr[-2000:])
        found = {r["id"]: r for r in map(json.loads, (out / PREP_FILE).read_text().splitlines())}
        assert sorted(found) == ["crash", "v0", "v2"] and found["v2"]["error"] is None, mode
        assert "worker failed" in found["crash"]["error"], found["crash"]["error"]
