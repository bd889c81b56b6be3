"""``affectllm chat``: one-shot answers on an EmoWorld clip, a still image and a frame folder; the conversation loop;
an undecodable clip gives one clear line and a non-zero exit, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from affectllm.data.manifest import read_manifest
from affectllm.serve import chat
from affectllm.serve.engine import Engine, GenerationOptions

GEN = GenerationOptions(max_new_tokens=8)


@pytest.fixture(scope="module")
def clip(emoworld):
    return read_manifest(emoworld)[0][0]


@pytest.fixture(scope="module")
def still(tmp_path_factory):
    path = tmp_path_factory.mktemp("still") / "face.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(path)
    return path


def test_one_shot_on_an_emoworld_clip(model_dir, clip, capsys):
    assert chat.chat_main(str(model_dir), clip.video, clip.audio, clip.transcript, "How does the person feel?",
                          GEN, device="cpu") == 0
    out = capsys.readouterr().out
    assert "labels" in out and "confidence" in out and "AUs" in out


def test_one_shot_on_a_still_image_and_a_frame_folder(model_dir, still, tmp_path, capsys):
    assert chat.chat_main(str(model_dir), str(still), question="How does the person feel?", gen=GEN,
                          device="cpu") == 0
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        Image.open(still).save(frames / f"frame_{i}.png")
    assert chat.chat_main(str(model_dir), str(frames), question="And here?", gen=GEN, device="cpu") == 0
    assert capsys.readouterr().out.count("labels") == 2


def test_render_names_the_aus_and_shows_both_confidences(capsys):
    from rich.console import Console

    row = {"explanation": "cheeks raised", "labels": ["happy"], "confidence": 0.36, "confidence_raw": 0.8,
           "aus": ["AU6", "AU12"]}
    chat.render(Console(width=200), row)
    out = capsys.readouterr().out
    assert "AU6 cheek raiser" in out and "AU12 lip corner puller" in out
    assert "0.36 (stated 0.80)" in out and "happy" in out and "cheeks raised" in out


def test_conversation_keeps_history_and_switches_clip(model_dir, clip, still, monkeypatch, capsys):
    engine = Engine.load(model_dir, device="cpu")
    seen = []
    original = Engine.stream

    def spy(self, c, question=None, history=None, gen=None):
        seen.append((c.video, question, list(history or [])))
        return original(self, c, question, history, gen)

    monkeypatch.setattr(Engine, "stream", spy)
    lines = iter(["How does she feel?", "Why?", f"/clip {still}", "And now?", "/quit", "never read"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    from rich.console import Console

    assert chat.interactive(engine, Console(), chat.make_clip(clip.video, clip.audio), GEN) == 0
    assert [(v, q, len(h)) for v, q, h in seen] == [(clip.video, "How does she feel?", 0), (clip.video, "Why?", 2),
                                                    (str(still), "And now?", 0)]
    assert seen[1][2][0] == {"role": "user", "content": "How does she feel?"}


def test_undecodable_clip_is_one_line_and_exit_1_without_traceback(model_dir, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "affectllm.cli", "chat", "--model", str(model_dir), "--video",
                           str(broken), "--question", "How?", "--max-new-tokens", "4", "--device", "cpu"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    line = [s for s in proc.stderr.splitlines() if s.startswith("affectllm chat:")]
    assert len(line) == 1 and "broken.mp4" in line[0]
