"""The inference engine: load once, label rows, calibration map, fingerprint, streaming, bad clips."""

from __future__ import annotations

import json
import shutil

import pytest

from affectllm.data.manifest import read_manifest
from affectllm.evaluation.posthoc import ConfidenceMap
from affectllm.serve.engine import Engine, GenerationOptions
from affectllm.types import Clip

ROW_KEYS = {"id", "labels", "confidence", "confidence_raw", "explanation", "aus", "raw", "error", "model",
            "fingerprint"}
GEN = GenerationOptions(max_new_tokens=12)


@pytest.fixture(scope="module")
def engine(model_dir):
    return Engine.load(model_dir, device="cpu")


@pytest.fixture(scope="module")
def clips(emoworld):
    return read_manifest(emoworld)[0]


def test_label_rows_follow_the_contract_and_are_deterministic(engine, clips):
    rows = engine.label(clips[:3], gen=GEN)
    assert [r["id"] for r in rows] == [c.id for c in clips[:3]]
    assert all(set(r) == ROW_KEYS for r in rows)
    assert all(r["error"] is None and r["model"] == engine.model_name for r in rows)
    assert engine.label(clips[:3], gen=GEN) == rows  # greedy: same rows again


def test_an_undecodable_clip_gives_an_error_row_and_the_others_are_labeled(engine, clips, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    bad = [Clip(id="missing", video=str(tmp_path / "nope.mp4")), Clip(id="broken", video=str(broken))]
    rows = engine.label([clips[0], *bad, clips[1]], gen=GEN)
    assert [r["id"] for r in rows] == [clips[0].id, "missing", "broken", clips[1].id]
    assert rows[0]["error"] is None and rows[3]["error"] is None
    assert "nope.mp4" in rows[1]["error"] and "broken.mp4" in rows[2]["error"]
    assert engine.label([clips[0]], gen=GEN)[0] == rows[0]  # its neighbours' failures do not change a row


def test_stream_gives_the_same_text_as_label(engine, clips):
    one = Engine(engine.model, engine.processor, engine.model_dir, engine.media, batch_size=1)
    streamed = "".join(one.stream(clips[0], gen=GEN))
    assert streamed == one.label([clips[0]], gen=GEN)[0]["raw"]


def test_stream_keeps_history_in_the_prompt(engine, clips):
    decoded = engine.decode(clips[0])
    history = [{"role": "user", "content": "What do you see?"}, {"role": "assistant", "content": "A face."}]
    inputs = engine.chat_inputs(clips[0], decoded, "And the voice?", history)
    text = engine.processor.tokenizer.decode(inputs["input_ids"][0])
    assert text.index("What do you see?") < text.index("A face.") < text.index("And the voice?")
    assert text.count("<video>") == engine.model.config.media_tokens["video"]  # media only in the first turn


def test_media_policy_follows_the_saved_recipe(model_dir, tmp_path):
    from affectllm.config import Recipe, recipe_to_yaml

    trained = tmp_path / "trained"
    shutil.copytree(model_dir, trained)
    recipe = Recipe(stage="sft", output_dir=str(trained), task="brief")
    recipe.data.num_frames = 3
    (trained / "recipe.yaml").write_text(recipe_to_yaml(recipe))
    engine = Engine.load(trained, device="cpu")
    assert engine.media.num_frames == 3 and engine.task == "brief"
    assert Engine.load(model_dir, device="cpu").media.num_frames == 8
    assert Engine.load(trained, device="cpu", num_frames=5).media.num_frames == 5


def test_calibration_map_changes_the_stated_confidence(model_dir, tmp_path, clips, monkeypatch):
    calibrated = tmp_path / "calibrated"
    shutil.copytree(model_dir, calibrated)
    ConfidenceMap("isotonic", x=[0.0, 1.0], y=[0.2, 0.4]).save(calibrated)
    text = "<think>AU6 and AU12.</think><answer>happy</answer><confidence>0.80</confidence>"
    monkeypatch.setattr(Engine, "generate", lambda self, c, d, q, g: [[text] for _ in c])
    row = Engine.load(calibrated, device="cpu").label(clips[:1], gen=GEN)[0]
    assert row["confidence_raw"] == pytest.approx(0.8)
    assert row["confidence"] == pytest.approx(0.36)  # 0.2 + 0.8 * (0.4 - 0.2)
    assert row["labels"] == ["happy"] and row["aus"] == ["AU6", "AU12"]
    plain = Engine.load(model_dir, device="cpu").label(clips[:1], gen=GEN)[0]
    assert plain["confidence"] == plain["confidence_raw"] == pytest.approx(0.8)


def test_fingerprint_names_model_prompt_decoding_and_frames(model_dir, tmp_path, engine):
    base = engine.fingerprint
    assert engine.fingerprint_for("Another question?") != base
    assert engine.fingerprint_for(gen=GenerationOptions(max_new_tokens=7)) != base
    assert Engine.load(model_dir, device="cpu", num_frames=4).fingerprint != base
    other = tmp_path / "other"
    shutil.copytree(model_dir, other)
    config = json.loads((other / "generation_config.json").read_text())
    config["max_length"] = 1234
    (other / "generation_config.json").write_text(json.dumps(config))
    assert Engine.load(other, device="cpu").fingerprint != base
    assert Engine.load(model_dir, device="cpu").fingerprint == base


def test_sampling_is_seeded(engine, clips):
    gen = GenerationOptions(max_new_tokens=12, do_sample=True, temperature=1.5, seed=3, n=2)
    rows = engine.label(clips[:2], gen=gen)
    assert engine.label(clips[:2], gen=gen) == rows
    assert all(len(r["samples"]) == 1 for r in rows)


@pytest.mark.parametrize("bad", [{"n": 2}, {"max_new_tokens": 0}, {"do_sample": True, "temperature": 0.0},
                                 {"do_sample": True, "top_p": 1.5}])
def test_generation_options_refuse_what_generate_cannot_do(bad):
    with pytest.raises(ValueError):
        GenerationOptions(**bad)


def test_n_answers_per_clip_prefill_each_prompt_once(engine, clips):
    """With n > 1 the prompt of each clip (with its media) runs through the model once; its cache serves n answers."""
    shapes: list[tuple[int, int]] = []

    def record(module, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None:
            shapes.append(tuple(ids.shape))

    hook = engine.model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        rows = engine.label(clips[:2], gen=GenerationOptions(max_new_tokens=4, do_sample=True, seed=0, n=3))
    finally:
        hook.remove()
    assert len(rows) == 2 and all(len(r["samples"]) == 2 for r in rows)
    prompt_passes = [s for s in shapes if s[1] > 1]
    assert len(prompt_passes) == 1 and prompt_passes[0][0] == 2  # 2 clips prefilled once, not 6 rows
    assert any(s == (6, 1) for s in shapes)  # then 3 answers per clip decode from the copied cache
