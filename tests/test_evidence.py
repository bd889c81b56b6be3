"""Evidence confidence: the transcript readout, the towers' fused posterior, an answer's evidence, the map that
reads it, and the calibration stage and engine that use it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from affectllm.data.manifest import read_manifest
from affectllm.evaluation.evidence import Evidence, TranscriptReadout, tower_readouts
from affectllm.evaluation.posthoc import ConfidenceMap
from affectllm.evaluation.runner import Correctness, confidence_pairs
from affectllm.inputs.store import ClipStore
from affectllm.model.configuration import MEDIA_INPUT_NAMES
from affectllm.parsing import gold_labels, parse_completion
from affectllm.types import Clip

EMOTIONS = ["angry", "happy", "sad"]
WORDS = {"angry": "I am furious and annoyed", "happy": "I feel so glad and delighted",
         "sad": "I am miserable and down"}


def _clip(i: int, emotion: str, transcript: str | None) -> Clip:
    return Clip(id=f"c{i}", transcript=transcript, emotion=emotion, labels=[emotion])


def test_transcript_readout_reads_words_and_keeps_no_opinion_without_them():
    train = [_clip(i, e, f"{WORDS[e]} today {i % 3}") for i in range(30) for e in EMOTIONS]
    text = TranscriptReadout.fit([c.transcript for c in train], [c.emotion for c in train], EMOTIONS)
    lp = text.log_probs(["so glad and delighted", "furious, annoyed", None, "  "])
    assert [EMOTIONS[k] for k in lp[:2].argmax(1)] == ["happy", "angry"]
    assert np.allclose(np.exp(lp[:2]).sum(1), 1.0) and not lp[2:].any()  # no words: a row of zeros
    # plain numbers round-trip through JSON and give the same outputs
    again = TranscriptReadout(**json.loads(json.dumps(text.__dict__)))
    assert np.allclose(again.log_probs(["so glad"]), text.log_probs(["so glad"]))
    # too little to fit on: one emotion only
    assert TranscriptReadout.fit(["a b", "a b"], ["sad", "sad"], EMOTIONS) is None


def test_an_answers_evidence_is_the_mass_of_the_emotions_it_would_be_right_for():
    ev = Evidence(EMOTIONS)
    post = np.log(np.array([0.1, 0.6, 0.3]))
    judge = Correctness()
    assert ev.probability(["joyful"], post, judge) == pytest.approx(0.6)  # right only if the gold were happy
    assert ev.probability(["sad"], post, judge) == pytest.approx(0.3)
    assert ev.probability([], post, judge) == 0.0


@pytest.fixture(scope="module")
def readout_model(tiny_model_dir, tmp_path_factory):
    """The tiny model with random video and audio readouts over EMOTIONS (as stage 0 leaves them), saved."""
    from transformers import AutoModelForCausalLM, AutoProcessor

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    for m in ("video", "audio"):
        readout = model.model.attach_readout(m, [], EMOTIONS)
        torch.nn.init.normal_(readout.linear.weight, std=2.0)
    out = tmp_path_factory.mktemp("readout_model")
    model.save_pretrained(out)
    AutoProcessor.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


def test_posterior_combines_towers_and_words_counting_the_prior_once(readout_model, emoworld):
    from affectllm.model.build import load_pretrained

    model, processor = load_pretrained(readout_model, device="cpu")
    clips = read_manifest(emoworld)[0][:4]
    assert tower_readouts(model.config) == {"video": EMOTIONS, "audio": EMOTIONS}
    train = [_clip(i, e, WORDS[e]) for i in range(4) for e in EMOTIONS] + [_clip(99, "happy", WORDS["happy"])]
    ev = Evidence.fit(model.config, train)
    prior = np.exp(ev.log_prior)
    assert prior.argmax() == EMOTIONS.index("happy") and prior.sum() == pytest.approx(1.0)
    store = ClipStore(None, num_frames=4)
    got = ev.posteriors(model, processor, store, clips)
    for clip, row in zip(clips, got, strict=True):
        from affectllm.inputs.collate import build_prompt_inputs

        inputs = build_prompt_inputs(processor, store, [clip], [""], model.config.enabled_modalities()).inputs
        media = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
        towers = model.model.readout_emotions(**media)
        experts = [lp[0].numpy() for _, lp in towers.values()]
        if clip.transcript:
            experts.append(ev.text.log_probs([clip.transcript])[0])
        want = sum(experts) - (len(experts) - 1) * np.asarray(ev.log_prior)
        want = np.exp(want - want.max())
        assert np.allclose(np.exp(row), want / want.sum(), atol=1e-5)
        assert set(towers) == {m for m in ("video", "audio") if MEDIA_INPUT_NAMES[m] in inputs}
    # one expert only: the posterior is that expert's own distribution
    single = Evidence(EMOTIONS, None, ["video"], ev.log_prior)
    video_only = [Clip(id=f"{c.id}-v", video=c.video, labels=c.labels, emotion=c.emotion) for c in clips if c.video]
    assert video_only
    for clip, row in zip(video_only, single.posteriors(model, processor, store, video_only), strict=True):
        inputs = build_prompt_inputs(processor, store, [clip], [""], model.config.enabled_modalities()).inputs
        assert MEDIA_INPUT_NAMES["audio"] not in inputs
        (_, lp), = model.model.readout_emotions(**inputs).values()
        assert np.allclose(row, lp[0].numpy(), atol=1e-5)


def test_a_map_of_the_evidence_is_never_applied_to_a_stated_number(tmp_path, emoworld):
    m = ConfidenceMap.fit([0.1, 0.2, 0.8, 0.9], [False, False, True, True], "platt", source="evidence")
    m.save(tmp_path)
    again = ConfidenceMap.load(tmp_path)
    assert again.reads_evidence and again.apply(0.9) == pytest.approx(m.apply(0.9))
    assert not ConfidenceMap.fit([0.1, 0.9], [False, True]).reads_evidence  # the default reads the stated number
    with pytest.raises(ValueError, match="posthoc input"):
        ConfidenceMap.fit([0.1, 0.9], [False, True], source="words")
    clips = read_manifest(emoworld)[0][:2]
    preds = [parse_completion(f"<answer>{gold_labels(c)[0]}</answer><confidence>0.5</confidence>") for c in clips]
    with pytest.raises(ValueError, match="evidence"):
        confidence_pairs(preds, clips, Correctness(), m)
    conf, _ = confidence_pairs(preds, clips, Correctness(), m, evidence=[0.1, 0.9])
    assert conf == pytest.approx([m.apply(0.1), m.apply(0.9)])
    assert confidence_pairs(preds, clips, Correctness(), evidence=[0.1, 0.9])[0] == [0.1, 0.9]  # unmapped
    with pytest.raises(ValueError, match="stated number"):
        confidence_pairs(preds, clips, Correctness(), ConfidenceMap.fit([0.1, 0.9], [False, True]), [0.1, 0.9])
    from affectllm.serve.openai_batch import response_to_row

    body = {"custom_id": "a", "response": {"body": {"choices": [{"message": {
        "content": "<answer>happy</answer><confidence>0.70</confidence>"}}]}}}
    assert response_to_row(body, m)["confidence"] == pytest.approx(0.7)  # no media in a response: stated kept


def test_calibration_stage_maps_the_evidence_and_the_engine_labels_with_it(emoworld, tmp_path):
    """The real path: the calibration stage fits the transcript readout and the map of the answers' evidence; the
    engine then gives each row that map of its answer's evidence (and the stated number as confidence_raw)."""
    from pathlib import Path

    from affectllm.config import load_recipe
    from affectllm.serve.engine import Engine, GenerationOptions
    from affectllm.train import calibrate, sft

    root = Path(__file__).resolve().parents[1]
    fast = ["trainer.per_device_train_batch_size=4", "trainer.logging_steps=1", "trainer.save_steps=100",
            "eval.samples=2", "eval.max_new_tokens=8", "trainer.report_to=[]"]
    sft_out, out = tmp_path / "sft", tmp_path / "cal"
    sft.main(load_recipe(root / "recipes/tiny/sft.yaml", [f"data.manifest={emoworld}", f"output_dir={sft_out}",
                                                          *fast, "trainer.max_steps=1", "eval.enabled=false"]))
    recipe = load_recipe(root / "recipes/tiny/calibrate.yaml", [
        f"data.manifest={emoworld}", f"output_dir={out}", *fast, f"init_from={sft_out}", "trainer.max_steps=0",
        "trainer.num_generations=4",
        "calibrate.posthoc=isotonic", "calibrate.posthoc_input=evidence"])
    report = calibrate.main(recipe)
    conf_map, evidence = ConfidenceMap.load(out), Evidence.load(out)
    assert conf_map.reads_evidence and evidence is not None and evidence.text is not None
    assert report["posthoc_fit"]["input"] == "evidence" and "after + post-hoc" in report["calibration"]
    engine = Engine.load(out, device="cpu")
    clips = read_manifest(emoworld)[0][:3]
    rows = engine.label(clips, gen=GenerationOptions(max_new_tokens=24))
    post = evidence.posteriors(engine.model, engine.processor, ClipStore(None, num_frames=8), clips)
    judge = Correctness.from_recipe(recipe)
    for row, lp in zip(rows, post, strict=True):
        assert row["confidence"] == pytest.approx(conf_map.apply(evidence.probability(row["labels"], lp, judge)))
    # the map without its evidence model cannot be used
    (out / "evidence.json").unlink()
    with pytest.raises(FileNotFoundError, match="evidence.json"):
        Engine.load(out, device="cpu")
