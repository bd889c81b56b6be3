"""`stage: encoders`: the towers learn from the manifest's gold, the rest of the model is untouched, and the stage
writes the per-clip confidence SFT then says."""

from __future__ import annotations

import json

import pytest
import torch

from affectllm.config import RecipeError, load_recipe
from affectllm.data.manifest import select_clips
from affectllm.data.prompts import read_confidences, target_confidence
from affectllm.jsonl import read_jsonl
from affectllm.train.encoders import Vocab
from affectllm.types import Clip


def _recipe(manifest, out, *extra):
    return load_recipe("recipes/tiny/encoders.yaml", [f"data.manifest={manifest}", f"output_dir={out}",
                                                      "trainer.max_steps=3", "trainer.per_device_train_batch_size=4",
                                                      *extra])


def test_encoders_stage_trains_only_the_towers_and_writes_confidences(emoworld, tmp_path):
    from transformers import AutoModelForCausalLM

    from affectllm.model.build import build_model
    from affectllm.train.run import run_recipe

    recipe = _recipe(emoworld, tmp_path / "enc")
    before, _ = build_model(recipe.model, seed=recipe.seed)
    result = run_recipe(recipe)
    after = AutoModelForCausalLM.from_pretrained(tmp_path / "enc")
    old = dict(before.named_parameters())
    changed = {n.split(".")[2] if n.startswith("model.encoders.") else n.split(".")[1]
               for n, b in after.named_parameters()
               if not n.startswith("model.projectors.") and (n not in old or not torch.equal(old[n], b))}
    # the demo world has no faces without the face tracker; the words tower reads the transcripts; LLM untouched
    assert changed == {"video", "audio", "words"}
    # each trained tower keeps its head as its readout, saved with it; the voice and the words predict no AUs
    vocab = Vocab(select_clips(str(emoworld), "train", None, 0))
    video, audio = after.model.encoders["video"].readout, after.model.encoders["audio"].readout
    words = after.model.encoders["words"].readout
    assert video.aus == vocab.aus and video.emotions == vocab.emotions == audio.emotions and audio.aus == []
    assert words.emotions == vocab.emotions and words.aus == []
    assert after.model.projectors["words"].extra_dim == words.width
    assert after.config.vision_config.readout_emotions == vocab.emotions
    # the preset's projectors read the readout (rebuilt for its width); the face tower saw no gold: no readout
    assert after.model.projectors["video"].extra_dim == video.width
    assert after.model.projectors["audio"].extra_dim == audio.width
    assert after.model.encoders["face"].readout is None and after.model.projectors["face"].extra_dim == 0
    rows, errors = read_jsonl(tmp_path / "enc" / "confidence.jsonl")
    rows = [r for _, r in rows]
    assert not errors and len(rows) == 12 and all(0.0 <= r["confidence"] <= 1.0 for r in rows)
    assert {"emotion_acc", "au_f1", "valence_r", "confidence_auroc"} <= set(result)
    assert json.loads((tmp_path / "enc" / "eval.json").read_text())["n"] == result["n"]


def test_training_clips_get_out_of_fold_confidence(emoworld, tmp_path, monkeypatch):
    """Every training clip's confidence comes from towers trained on the other folds only (same start, fresh
    copies); held-out clips get the saved towers' value; one fold is in-sample."""
    from affectllm.train import encoders

    trained_on: list[set[str]] = []
    real = encoders.build_trainer

    def spy(recipe, model, processor, out, clips=None):
        trainer, heads = real(recipe, model, processor, out, clips)
        trained_on.append({r["id"] for r in trainer.train_dataset})
        return trainer, heads

    monkeypatch.setattr(encoders, "build_trainer", spy)
    recipe = _recipe(emoworld, tmp_path / "enc", "encoders.confidence_folds=2")
    result = encoders.main(recipe)
    train = {c.id for c in select_clips(str(emoworld), "train", None, 0)}
    full, *folds = trained_on
    assert full == train and len(folds) == 2
    assert folds[0] | folds[1] == train and not folds[0] & folds[1]  # each fold trains on the other's clips
    oof = encoders.cross_fitted_confidence(recipe, tmp_path / "again")
    assert set(oof) == train
    assert {"train_confidence_in_sample", "train_confidence_cross_fitted"} <= set(result)
    one = _recipe(emoworld, tmp_path / "one", "encoders.confidence_folds=1")
    assert encoders.cross_fitted_confidence(one, tmp_path / "one") == {}
    with pytest.raises(RecipeError, match="confidence_folds"):
        _recipe(emoworld, tmp_path / "bad", "encoders.confidence_folds=0")


def test_rank_scale_keeps_the_order_and_spreads_the_training_clips(emoworld, tmp_path):
    from affectllm.train import encoders

    def confidences(name, *extra):
        encoders.main(_recipe(emoworld, tmp_path / name, "encoders.confidence_folds=1", *extra))
        return {r["id"]: r["confidence"] for _, r in read_jsonl(tmp_path / name / "confidence.jsonl")[0]}

    prob, rank = confidences("prob"), confidences("rank", "encoders.confidence_scale=rank")
    train = [c.id for c in select_clips(str(emoworld), "train", None, 0)]
    assert all(0.05 <= v <= 0.95 for v in rank.values())
    ordered = sorted(train, key=lambda i: prob[i])
    assert [rank[i] for i in ordered] == sorted(rank[i] for i in ordered)  # same order as the probabilities
    values = sorted(rank[i] for i in train)  # mid-ranks of the training clips: evenly spread over 0.05..0.95
    assert values[0] < 0.2 and values[-1] > 0.8
    with pytest.raises(RecipeError, match="confidence_scale"):
        _recipe(emoworld, tmp_path / "bad", "encoders.confidence_scale=logit")


def test_sft_targets_say_the_clip_confidence_of_the_file(emoworld, tmp_path):
    from affectllm.train.sft import sft_rows

    clips = select_clips(str(emoworld), "train")
    path = tmp_path / "conf.jsonl"
    path.write_text("".join(json.dumps({"id": c.id, "confidence": 0.31 + 0.5 * (i % 2)}) + "\n"
                            for i, c in enumerate(clips)))
    rows = sft_rows(clips, {"single": 1.0}, 0, 0.8, read_confidences(str(path)))
    said = {r["target"].split("<confidence>")[1].split("<")[0] for r in rows}
    assert said == {"0.30", "0.80"} or said == {"0.3", "0.8"}
    assert target_confidence("other", {}, 0.8) == 0.8


def test_target_confidences_never_say_one_or_zero():
    """0.00 and 1.00 share the decimal token "00": with it the model wrote 0.00 when unsure of the first digit."""
    table = {"a": 0.998, "b": 0.02, "c": 0.46}
    assert [target_confidence(k, table, 0.8) for k in "abc"] == [0.9, 0.1, 0.5]


def test_a_bad_confidence_row_names_file_and_line(tmp_path):
    path = tmp_path / "conf.jsonl"
    path.write_text('{"id": "a", "confidence": 0.5}\n{"id": "b", "confidence": 1.5}\n')
    with pytest.raises(ValueError, match=r"conf.jsonl:2: expected"):
        read_confidences(str(path))


def test_vocab_needs_an_emotion_and_builds_masked_targets():
    with pytest.raises(ValueError, match="emotion"):
        Vocab([Clip(id="a")])
    vocab = Vocab([Clip(id="a", emotion="happy", aus=["AU12"], valence=0.5), Clip(id="b", emotion="sad")])
    t = vocab.targets([Clip(id="a", emotion="happy", aus=["AU12"], valence=0.5), Clip(id="b", emotion="sad")])
    assert t["emotion"].tolist() == [0, 1] and t["au"].tolist() == [[1.0], [0.0]]
    assert t["au_known"].tolist() == [True, False] and t["va_known"].tolist() == [[True, False], [False, False]]


def test_an_encoders_recipe_needs_no_rewards_but_a_trainer_key_it_lacks_fails(tmp_path):
    with pytest.raises(RecipeError, match="trainer.num_generations"):
        _recipe("m.jsonl", tmp_path, "+trainer.num_generations=4")
