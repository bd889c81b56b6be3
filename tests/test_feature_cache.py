"""Encoder feature cache: prep writes it, training uses it only when it matches, and results do not change."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    """A 6-clip EmoWorld, the tiny model (seed 0) saved to a dir, and ``data prep --cache-features`` with it."""
    from affectllm.cli import main as cli
    from affectllm.emoworld.generate import synth_main
    from affectllm.model.build import build_model

    root = tmp_path_factory.mktemp("feature_cache")
    assert synth_main(str(root / "ew"), 6, 0, overrides=["size=48", "fps=8"]) == 0
    model, processor = build_model(seed=0)
    model.eval()
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    manifest = root / "ew" / "manifest.jsonl"
    rc = cli(["data", "prep", str(manifest), "--out", str(root / "prep"), "--cache-features", "--model",
              str(root / "model"), "--no-progress"])
    assert rc == 0
    return {"root": root, "manifest": manifest, "prep": root / "prep", "model": model, "processor": processor}


def sft_rows(manifest: Path) -> list[dict]:
    """SFT rows over the manifest's clips, the first two repeated (rows sharing a clip, as in a GRPO group)."""
    from affectllm.data.manifest import read_manifest

    clips, _ = read_manifest(str(manifest))
    rows = [{"clip": c, "question": "How does this person feel?", "target": "<answer>joy</answer>"} for c in clips]
    return rows + rows[:2]


def test_prep_writes_tower_features_with_the_fingerprint(cached):
    from affectllm.inputs.features import encoder_fingerprint

    model, processor = cached["model"], cached["processor"]
    rows = [json.loads(x) for x in (cached["prep"] / "prep.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(r["error"] is None and r["features"] for r in rows)
    expected = encoder_fingerprint(model, processor)
    seen = set()
    for row in rows:
        with np.load(cached["prep"] / row["features"]) as z:
            assert str(z["fingerprint"]) == expected and str(z["model"]) == str(cached["root"] / "model")
            for m in ("video", "audio", "face"):
                if m in z.files:
                    seen.add(m)
                    assert z[m].dtype == np.float32 and z[m].ndim == 2
                    assert z[m].shape[1] == model.model.encoders[m].hidden_size
            assert "au" not in z.files  # the AU encoder trains: nothing to cache
    assert seen == {"video", "audio", "face"}


def test_fingerprint_ignores_dtype_and_save_load_but_not_weights(cached):
    from transformers import AutoModelForCausalLM, AutoProcessor

    import affectllm.model  # noqa: F401
    from affectllm.inputs.features import encoder_fingerprint

    model, processor = cached["model"], cached["processor"]
    fp = encoder_fingerprint(model, processor)
    loaded = AutoModelForCausalLM.from_pretrained(cached["root"] / "model", dtype=torch.bfloat16)
    assert encoder_fingerprint(loaded, AutoProcessor.from_pretrained(cached["root"] / "model")) == fp
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.model.encoders["face"].parameters():
            p.add_(0.01)
    assert encoder_fingerprint(other, processor) != fp


def test_cached_features_give_the_same_loss_as_live_encoders(cached):
    from affectllm.inputs.collate import SftCollator
    from affectllm.inputs.store import ClipStore

    model, processor = cached["model"], cached["processor"]
    for p in model.model.encoders.parameters():
        p.requires_grad = False
    mods = model.config.enabled_modalities()
    rows = sft_rows(cached["manifest"])
    live = SftCollator(processor, ClipStore(str(cached["prep"])), mods)(rows)
    collate = SftCollator(processor, ClipStore(str(cached["prep"])), mods, model=model)
    fast = collate(rows)
    features = {"video_features", "audio_features", "face_features"}
    assert not features & set(live) and "pixel_values_videos" in live
    assert features <= set(fast)
    assert not {"pixel_values_videos", "audio_values", "face_pixel_values"} & set(fast)
    assert "au_features" in fast  # the AU encoder trains, so AUs stay raw
    for key in ("input_ids", "attention_mask", "labels", "video_index", "audio_index", "face_index"):
        assert torch.equal(live[key], fast[key]), key
    with torch.no_grad():
        torch.testing.assert_close(model(**fast).loss, model(**live).loss, atol=1e-5, rtol=0)
    for p in model.model.encoders["video"].parameters():  # a trained tower: its cache must not be used
        p.requires_grad = True
    mixed = collate(rows)
    assert "pixel_values_videos" in mixed and features & set(mixed) == {"audio_features", "face_features"}
    with torch.no_grad():
        torch.testing.assert_close(model(**mixed).loss, model(**live).loss, atol=1e-5, rtol=0)
    for p in model.model.encoders.parameters():
        p.requires_grad = False


def test_generation_from_cached_features_matches_live_encoders(cached):
    """Scoring reads the cache (the demo's evaluation): the same prompts, features in place of media, the same
    greedy completions and first-step logits as running the towers."""
    from affectllm.data.manifest import read_manifest
    from affectllm.evaluation.runner import generate_completions
    from affectllm.inputs.collate import build_prompt_inputs
    from affectllm.inputs.store import ClipStore

    model, processor = cached["model"], cached["processor"]
    for p in model.model.encoders.parameters():
        p.requires_grad = False
    clips, _ = read_manifest(str(cached["manifest"]))
    mods = model.config.enabled_modalities()
    live_store, fast_store = ClipStore(str(cached["prep"])), ClipStore(str(cached["prep"]))
    assert fast_store.features_for(model, processor)
    live = build_prompt_inputs(processor, live_store, clips, ["How?"] * len(clips), mods, model=model).inputs
    fast = build_prompt_inputs(processor, fast_store, clips, ["How?"] * len(clips), mods, model=model).inputs
    assert "pixel_values_videos" in live and "video_features" not in live  # features_for not called: live towers
    assert {"video_features", "audio_features"} <= set(fast) and "pixel_values_videos" not in fast
    assert torch.equal(live["input_ids"], fast["input_ids"])
    with torch.no_grad():
        torch.testing.assert_close(model(**fast).logits[:, -1], model(**live).logits[:, -1], atol=1e-5, rtol=0)
    kwargs = {"question": "How?", "batch_size": 4, "max_new_tokens": 6}
    assert (generate_completions(model, processor, clips, fast_store, **kwargs)
            == generate_completions(model, processor, clips, live_store, **kwargs))


def test_a_stale_cache_is_refused_with_a_clear_message(cached):
    from affectllm.inputs.collate import SftCollator
    from affectllm.inputs.store import ClipStore

    model, processor = cached["model"], cached["processor"]
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.model.encoders["video"].parameters():
            p.mul_(1.5)
    store = ClipStore(str(cached["prep"]))
    from affectllm.inputs.features import FeatureCacheError

    with pytest.raises(FeatureCacheError, match=r"stale encoder feature cache: made by .*model .*--cache-features"):
        SftCollator(processor, store, model.config.enabled_modalities(), model=other)
    assert ClipStore(str(cached["prep"])).features_for(model, processor)
    assert ClipStore(None).features_for(model, processor) is False  # no prep folder: live encoders


def test_prep_without_a_model_directory_says_so(cached, tmp_path, capsys):
    from affectllm.inputs.prep import PrepConfig, prep_main

    for model in (None, str(tmp_path / "nowhere")):
        config = PrepConfig(progress=False, cache_features=True, model=model)
        assert prep_main(str(cached["manifest"]), str(tmp_path / "out"), config) == 2
        assert "cache_features" in capsys.readouterr().err


def test_grpo_media_dedup_switch_changes_encoding_not_inputs(cached, tmp_path):
    from affectllm.config import load_recipe
    from affectllm.train import grpo
    from affectllm.train.stage import load_stage_model

    r = load_recipe(ROOT / "recipes/tiny/grpo.yaml", [
        f"data.manifest={cached['manifest']}", f"data.feature_cache={cached['prep']}", f"output_dir={tmp_path}",
        f"init_from={cached['root'] / 'model'}", "data.split=null", "trainer.max_steps=1",
        "trainer.per_device_train_batch_size=4", "trainer.num_generations=4", "trainer.max_completion_length=8",
        "trainer.report_to=[]", "grpo.dedup_media=false",
        "model.train_encoders=true"])  # raw media reach the processor (frozen towers would come as features)
    model, processor = load_stage_model(r)
    trainer = grpo.build_trainer(r, model, processor, tmp_path)
    assert trainer.dedup_media is False
    rows = [trainer.train_dataset[i] for i in (0, 0, 1, 1)]
    out = {}
    for dedup in (True, False):
        trainer.dedup_media = dedup
        trainer._batch_ids = [r["id"] for r in rows]
        ids, _, fields = trainer._tokenize_prompts([r["prompt"] for r in rows])
        out[dedup] = (ids, fields, dict(trainer._scoring.values))
    (ids_d, fields_d, media_d), (ids_r, fields_r, media_r) = out[True], out[False]
    assert ids_d == ids_r
    assert fields_d["pixel_values_videos"].shape[0] < fields_r["pixel_values_videos"].shape[0]
    assert "video_index" in fields_d and "video_index" not in fields_r
    assert media_d.keys() == media_r.keys()
    for key in media_d:
        torch.testing.assert_close(media_d[key], media_r[key], atol=1e-5, rtol=0)
    trainer.dedup_media = False
    trainer.train()
    logged = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any(np.isfinite(row["reward"]) and any(k.startswith("rewards/") for k in row) for row in logged
               if "reward" in row)
