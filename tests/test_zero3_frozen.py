"""ZeRO-3 with frozen towers on CPU (slow: two fresh processes under accelerate + DeepSpeed).

ZeRO-3 partitions frozen parameters too, and gathering a module's parameters when it runs is a collective: if the
rank whose batch has video runs the frozen video tower while the other rank's text-only batch skips it, the ranks
wait on each other for ever (or pair up the wrong collectives). The model runs every absent modality's tower on a
dummy input under ZeRO-3 (``AffectLlmModel._dummy_pass``); this test fails by timeout when it does not.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("distributed")]
# A normal run takes about 2 minutes on 2 loaded cores; a hang is detected at the limit.
LIMIT_S = 480


def mixed_manifest(emoworld: Path, out: Path) -> Path:
    """Two train clips, one with video + audio and one text-only: with 2 ranks and batch size 1, every step has one
    rank with media and one without (the sampler splits each epoch's two clips over the ranks)."""
    row = json.loads(emoworld.read_text().splitlines()[0])
    media = {k: str((emoworld.parent / row[k]).resolve()) for k in ("video", "audio")}
    text_only = {k: v for k, v in row.items() if k not in ("video", "audio")}
    rows = [{**row, **media, "id": "with-media", "split": "train"}, {**text_only, "id": "text-only", "split": "train"}]
    path = out / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    path.with_suffix(".roots").write_text(f"{emoworld.parent.resolve()}\n")  # data prep reads media only there
    return path


def run_bounded(cmd: list[str], limit_s: int) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group; kill the whole group (launcher and ranks) past ``limit_s``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=limit_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"ZeRO-3 run did not finish in {limit_s} s (ranks waiting on each other?):\n{out[-4000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


def cache_features(manifest: Path, out: Path) -> Path:
    """``data prep --cache-features`` with the tiny preset at the recipe's seed (the towers the stage builds)."""
    from affectllm.cli import main
    from affectllm.inputs.store import ClipStore
    from affectllm.model.build import load_pretrained

    assert main(["model", "init", "--preset", "tiny", "--seed", "0", "--out", str(out / "model")]) == 0
    main(["data", "prep", str(manifest), "--out", str(out / "prep"), "--no-faces", "--no-progress", "--cache-features",
          "--model", str(out / "model")])
    store = ClipStore(str(out / "prep"))
    assert store.features_for(*load_pretrained(out / "model", device="cpu"))
    assert set(store.features("with-media")) == {"video", "audio"}
    return out / "prep"


@pytest.mark.parametrize("features", ["live", "cached"])
def test_zero3_frozen_towers_with_different_modalities_per_rank(emoworld, tmp_path, features):
    """Live: the media rank encodes video and audio, the text-only rank must run the towers on a dummy. Cached:
    neither runs the towers on clips (the media rank has cached features), and both must run them on a dummy."""
    pytest.importorskip("deepspeed")
    manifest = mixed_manifest(emoworld, tmp_path)
    cache = [f"data.feature_cache={cache_features(manifest, tmp_path)}"] if features == "cached" else []
    out = tmp_path / "sft"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "recipes/accelerate/zero3.yaml"), "--num_processes", "2", "-m", "affectllm.cli", "train",
           "recipes/tiny/sft.yaml", f"data.manifest={manifest}", f"output_dir={out}", "model.train_encoders=false",
           *cache, "trainer.max_steps=2", "trainer.per_device_train_batch_size=1", "trainer.logging_steps=1",
           "trainer.save_steps=100", "trainer.bf16=false", "trainer.report_to=[]", "eval.enabled=false"]
    proc = run_bounded(cmd, LIMIT_S)
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert "world_size=2" in proc.stdout
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert steps == [1, 2] and (out / "model.safetensors").is_file()
