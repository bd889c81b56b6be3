"""GRPO stage: log-probs through TRL's fused path, media per row, rows by clip id, build-time checks, training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from affectllm.config import RewardSpec, load_recipe
from affectllm.registry import REWARDS
from affectllm.rewards.common import reward
from affectllm.train import grpo

ROOT = Path(__file__).resolve().parents[1]
FAST = ["trainer.per_device_train_batch_size=4", "trainer.num_generations=4", "trainer.logging_steps=1",
        "trainer.save_steps=100", "trainer.report_to=[]", "eval.enabled=false", "init_from=null"]


@REWARDS.register("test_text_length")
def text_length(completions: list, **kwargs) -> list[float]:
    """Characters of each completion: differs between completions of a group, so advantages are never all zero."""
    return [float(len(str(c))) / 100 for c in completions]


MIXED = {"ew00001": ("video",), "ew00002": ("video", "audio")}  # clip id -> media removed


@reward("test_needs_valence", columns=("valence",))
def needs_valence(completions: list, *, valence: list, **kwargs) -> list[float]:
    """Reads a column the GRPO rows do not carry."""
    return [0.0 for _ in completions]


@pytest.fixture(scope="module")
def mixed(emoworld, tmp_path_factory) -> Path:
    """The EmoWorld manifest with mixed modalities (:data:`MIXED`: one clip without video, one text only)."""
    rows = [json.loads(line) for line in emoworld.read_text().splitlines()]
    for row in rows:
        for key in ("video", "audio"):
            if row.get(key):
                row[key] = str(emoworld.parent / row[key])
        for key in MIXED.get(row["id"], ()):
            row.pop(key, None)
    out = tmp_path_factory.mktemp("mixed") / "manifest.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out.with_suffix(".roots").write_text(f"{emoworld.parent.resolve()}\n")  # training reads media only there
    return out


def grpo_recipe(manifest: Path, out: Path, *extra: str):
    return load_recipe(ROOT / "recipes/tiny/grpo.yaml", [f"data.manifest={manifest}", f"output_dir={out}", *FAST,
                                                         *extra])


def build(recipe, out: Path) -> grpo.AffectGRPOTrainer:
    from affectllm.train.stage import load_stage_model

    model, processor = load_stage_model(recipe)
    return grpo.build_trainer(recipe, model, processor, out)


def rollout(trainer: grpo.AffectGRPOTrainer, n: int = 4, completion: int = 5) -> dict:
    """A generation batch by hand: ``n`` rows of different clips (left-padded prompts), random completions of
    different lengths (right-padded), zero advantages; media attached as ``_generate_and_score_completions`` does."""
    by_id = {r["id"]: r for r in trainer.train_dataset}
    rows = [by_id[f"ew0000{i}"] for i in range(n)]  # with audio only and text only among them (MIXED)
    trainer._batch_ids = [r["id"] for r in rows]
    prompt_ids, _, _ = trainer._tokenize_prompts([r["prompt"] for r in rows])
    media, trainer._scoring = trainer._scoring, None
    width = max(len(p) for p in prompt_ids)
    pad = trainer.processing_class.tokenizer.pad_token_id
    prompt = torch.tensor([[pad] * (width - len(p)) + p for p in prompt_ids])
    prompt_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompt_ids])
    gen = torch.Generator().manual_seed(0)
    completion_ids = torch.randint(10, 200, (n, completion), generator=gen)
    completion_mask = torch.ones_like(completion_ids)
    completion_mask[0, 3:] = 0
    completion_ids[completion_mask == 0] = pad
    return {"prompt_ids": prompt, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
            "completion_mask": completion_mask, "advantages": torch.zeros(n),
            "num_items_in_batch": completion_mask.sum(), **media.columns()}


def forked_logps(trainer: grpo.AffectGRPOTrainer, batch: dict) -> torch.Tensor:
    """The log-probs of the pre-fused override: full ``[b, c, V]`` logits, temperature, log-softmax, gather."""
    media = grpo.GroupMedia.from_columns(batch)
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    c = batch["completion_ids"].size(1)
    with trainer.accelerator.autocast():
        logits = trainer.model(input_ids=ids, attention_mask=mask, logits_to_keep=c + 1, use_cache=False,
                               **media.slice(0, ids.size(0), dedup=False)).logits
    logits = logits[:, :-1][:, -c:] / trainer.temperature
    return logits.log_softmax(-1).gather(-1, ids[:, -c:, None]).squeeze(-1)


def test_rows_carry_ids_and_the_prompt_the_model_sees(mixed, tmp_path):
    trainer = build(grpo_recipe(mixed, tmp_path, "model.llm_mode=lora"), tmp_path)
    data = trainer.train_dataset
    assert "clip" not in data.column_names and {"prompt", "id", "question", "labels"} <= set(data.column_names)
    by_id = {r["id"]: r["prompt"] for r in data}
    full, no_video, text_only = by_id["ew00000"], by_id["ew00001"], by_id["ew00002"]
    assert "<video>" in full and "<audio>" in full and "<|im_start|>assistant" in full
    assert "<video>" not in no_video and "<audio>" in no_video
    assert not any(m in text_only for m in ("<video>", "<audio>", "<face>", "<au>"))
    assert trainer.clips["ew00002"].transcript in text_only


def test_logps_through_trls_fused_path_equal_the_forked_ones(mixed, tmp_path):
    # fp32 (no bf16 autocast): the fork's log-softmax ran in the autocast dtype, TRL's kernel runs in fp32
    trainer = build(grpo_recipe(mixed, tmp_path, "model.llm_mode=lora", "model.train_encoders=false",
                                "trainer.temperature=0.7", "trainer.bf16=false"), tmp_path)
    trainer.model.eval()
    batch = rollout(trainer)
    assert batch[f"{grpo.MEDIA_PREFIX}video_features_has"].tolist() == [True, False, False, True]  # MIXED
    assert f"{grpo.MEDIA_PREFIX}video_features" in batch  # frozen tower: features, encoded once
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    trainer._scoring = grpo.GroupMedia.from_columns(batch)
    with torch.no_grad():
        logps, entropies, aux = trainer._get_per_token_logps_and_entropies(
            trainer.model, ids, mask, batch["completion_ids"].size(1), batch_size=3, compute_entropy=True)
        reference = forked_logps(trainer, batch)
    keep = batch["completion_mask"].bool()
    torch.testing.assert_close(logps[keep], reference[keep], atol=1e-5, rtol=0)
    assert entropies.shape == logps.shape and aux is None


@pytest.mark.parametrize("coef", [0.0, 0.5])
def test_entropy_bonus_has_a_gradient_and_loss_ids_are_recorded(mixed, tmp_path, coef):
    trainer = build(grpo_recipe(mixed, tmp_path, "model.llm_mode=lora", f"trainer.entropy_coef={coef}"), tmp_path)
    batch = rollout(trainer)
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train
    loss = trainer._compute_loss(trainer.model, batch)  # zero advantages: only the entropy bonus has a gradient
    loss.backward()
    grads = [p.grad.abs().sum() for p in trainer.model.parameters() if p.grad is not None]
    moved = float(torch.stack(grads).sum()) if grads else 0.0
    assert (moved > 0) == (coef != 0), moved
    assert trainer.last_loss_ids == batch[grpo.IDS_COLUMN] and trainer._scoring is None


def test_group_media_dedup_slice_equals_per_row():
    ids = ["a", "a", "b", "b", "c"]
    values = torch.arange(5 * 3, dtype=torch.float).view(5, 3)
    values[1], values[3] = values[0], values[2]  # rows of one clip carry the same media
    has = torch.tensor([True, True, True, True, False])
    media = grpo.GroupMedia(ids, {"au_features": values}, {"au_features": has})
    for start, end in ((0, 5), (1, 4), (4, 5)):
        per_row = media.slice(start, end, dedup=False)
        deduped = media.slice(start, end, dedup=True)
        if not has[start:end].any():
            assert per_row == deduped == {}
            continue
        rows = deduped["au_features"][deduped["au_index"]]
        torch.testing.assert_close(rows, per_row["au_features"])
        assert deduped["au_features"].shape[0] == len(set(ids[start:end]) - {"c"})


def test_rewards_get_unique_log_names_trl_reads():
    from trl.trainer.utils import get_callable_name

    recipe = load_recipe(ROOT / "recipes/tiny/grpo.yaml", ["data.manifest=unused.jsonl"])
    recipe.rewards.append(RewardSpec(name="format", weight=0.1))
    funcs, weights = grpo.reward_functions(recipe)
    assert [get_callable_name(f) for f in funcs] == ["ew", "au", "format", "label_count_penalty", "format_2"]
    assert weights[-1] == 0.1


def test_recipe_suppress_tokens_add_to_the_media_placeholders(tmp_path):
    recipe = load_recipe(ROOT / "recipes/tiny/grpo.yaml",
                         ["data.manifest=unused.jsonl", "trainer.generation_kwargs={suppress_tokens: [7, 3]}"])
    args = grpo.grpo_args(recipe, tmp_path, [3, 900, 901])
    assert args.generation_kwargs["suppress_tokens"] == [3, 7, 900, 901]


def test_use_vllm_is_refused_at_build(emoworld, tmp_path, tiny):
    recipe = grpo_recipe(emoworld, tmp_path)
    recipe.trainer["use_vllm"] = True
    model, processor = tiny
    with pytest.raises(ValueError, match="use_vllm"):
        grpo.build_trainer(recipe, model, processor, tmp_path)


def test_cast_lm_head_to_fp32_runs_in_full_mode_and_is_refused_with_lora(mixed, tmp_path, tiny):
    trainer = build(grpo_recipe(mixed, tmp_path, "model.llm_mode=full", "trainer.cast_lm_head_to_fp32=true"),
                    tmp_path)
    batch = rollout(trainer)
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    trainer._scoring = grpo.GroupMedia.from_columns(batch)
    logps, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, 5)
    assert logps.dtype == torch.float32 and bool(torch.isfinite(logps).all())
    model, processor = tiny
    assert model.config.tie_word_embeddings
    with pytest.raises(ValueError, match="cast_lm_head_to_fp32.*lora"):
        grpo.build_trainer(grpo_recipe(mixed, tmp_path, "model.llm_mode=lora", "trainer.cast_lm_head_to_fp32=true"),
                           model, processor, tmp_path)


def test_a_reward_whose_column_is_missing_fails_at_build_naming_it(emoworld, tmp_path, tiny):
    recipe = grpo_recipe(emoworld, tmp_path)
    recipe.rewards.append(RewardSpec(name="test_needs_valence", weight=1.0))
    model, processor = tiny
    with pytest.raises(ValueError, match="test_needs_valence.*valence"):
        grpo.build_trainer(recipe, model, processor, tmp_path)


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_grpo_steps_train_the_projectors_and_lora(mixed, tmp_path):
    # a random model rarely stops within 12 tokens: keep its truncated completions in the loss
    recipe = grpo_recipe(mixed, tmp_path, "trainer.max_steps=2", "trainer.max_completion_length=12",
                         "trainer.mask_truncated_completions=false",
                         "model.llm_mode=lora", "model.train_encoders=false", "trainer.learning_rate=0.01",
                         "trainer.temperature=1.5")
    recipe.rewards.append(RewardSpec(name="test_text_length", weight=1.0))
    trainer = build(recipe, tmp_path)
    names = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    before = snapshot(trainer.model)
    trainer.train()
    after = trainer.model.state_dict()
    moved = {k for k, v in before.items() if not torch.equal(v, after[k])}
    assert moved and moved <= names, sorted(moved - names)[:5]
    assert any("lora_B" in n for n in moved) and any("projectors" in n for n in moved), sorted(moved)[:10]
    logged = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    keys = set().union(*logged)
    for key in ("rewards/ew/mean", "rewards/au/std", "rewards/test_text_length/mean", "affect/parse_failure_rate",
                "affect/labels_per_answer", "frac_reward_zero_std", "entropy", "completions/mean_length"):
        assert key in keys, (key, sorted(keys))
    assert all("affect/parse_failure_rate" in row for row in logged if "loss" in row)  # logged every step
    assert any("<audio>" in p for p in trainer._logs["prompt"])  # TRL logs the prompt the model saw


def test_encode_frozen_keeps_the_audio_mask_and_runs_absent_towers_under_zero3(tiny, monkeypatch):
    """A waveform tower's padding mask reaches the encoder and stays for pooling; under ZeRO-3 a frozen tower the
    batch lacks still runs (on a dummy), so no rank skips the collective gather its forward does."""
    model, _ = tiny
    frozen = [m for m in ("video", "audio", "face") if m in model.model.encoders]
    before = {n: p.requires_grad for m in frozen for n, p in model.model.encoders[m].named_parameters(prefix=m)}
    for m in frozen:
        model.model.encoders[m].requires_grad_(False)
    calls: list[tuple[str, object]] = []
    real_encode, real_dummy = model.encode_media, model.tower_dummy
    monkeypatch.setattr(model, "encode_media", lambda m, v, mask=None: calls.append(("encode", m, mask)) or
                        real_encode(m, v, mask))
    monkeypatch.setattr(model, "tower_dummy", lambda m, like: calls.append(("dummy", m, None)) or real_dummy(m, like))
    sub = model.config.encoder_config("audio")
    audio = torch.zeros((2, sub.num_mel_bins, 2 * sub.max_source_positions))
    mask = torch.ones((2, 10), dtype=torch.long)
    fields = {"audio_values": audio, "audio_attention_mask": mask}
    try:
        out = grpo.encode_frozen(model, fields, torch.device("cpu"))
        assert "audio_features" in out and "audio_values" not in out
        assert out["audio_attention_mask"] is mask  # kept for pooling over each clip's frames
        assert calls == [("encode", "audio", mask)]  # no dummy passes outside ZeRO-3
        calls.clear()
        monkeypatch.setattr(grpo, "is_deepspeed_zero3_enabled", lambda: True)
        grpo.encode_frozen(model, fields, torch.device("cpu"))
        assert [c[:2] for c in calls] == [("dummy", "video"), ("encode", "audio"), ("dummy", "face")]
    finally:
        for m in frozen:
            for n, p in model.model.encoders[m].named_parameters(prefix=m):
                p.requires_grad_(before[n])


def test_a_kl_term_builds_the_reference_model_from_the_start_model(mixed, tmp_path):
    """beta > 0: TRL builds its reference model from ``init_from`` (trl utils.create_model_from_path reads
    ``config.auto_map`` for a non-transformers architecture); the KL is logged."""
    from affectllm.config import load_model_config
    from affectllm.model.build import build_model

    start = tmp_path / "start"
    model, processor = build_model(load_model_config(["preset=tiny"]))
    model.save_pretrained(start)
    processor.save_pretrained(start)
    recipe = grpo_recipe(mixed, tmp_path / "out", "trainer.max_steps=1", "trainer.max_completion_length=8",
                         "trainer.mask_truncated_completions=false", "trainer.beta=0.04", f"init_from={start}")
    trainer = build(recipe, tmp_path / "out")
    assert trainer.ref_model is not None
    trainer.train()
    logged = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert any("kl" in row for row in logged)


def test_confidence_token_mask_keeps_only_what_follows_the_answer(tiny):
    tok = tiny[1].tokenizer
    texts = ["<think>AU6.</think><answer>happy, glad</answer><confidence>0.7</confidence>",
             "<think>AU4.</think><answer>sad",  # never closes its answer: every token stays in the loss
             "<answer>calm</answer>"]  # nothing after the answer: no token left
    rows = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(map(len, rows)) + 2
    ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    keep = grpo.confidence_token_mask(ids, mask, tok)
    kept = tok.decode([t for t, k, m in zip(ids[0].tolist(), keep[0].tolist(), mask[0].tolist()) if k and m])
    assert kept == "<confidence>0.7</confidence>"
    assert keep[0, :len(rows[0])].tolist().index(1) > 0
    assert keep[1].tolist() == [1] * width
    assert keep[2, :len(rows[2])].sum() == 0


def test_loss_tokens_confidence_trains_through_trls_loss_mask(mixed, tmp_path):
    recipe = grpo_recipe(mixed, tmp_path, "trainer.max_steps=1", "trainer.max_completion_length=12",
                         "trainer.mask_truncated_completions=false", "grpo.loss_tokens=confidence")
    recipe.rewards.append(RewardSpec(name="test_text_length", weight=1.0))
    trainer = build(recipe, tmp_path)
    batch = rollout(trainer)
    text = "<answer>sad</answer><confidence>0.7</confidence>"
    row = trainer.processing_class.tokenizer(text, add_special_tokens=False)["input_ids"]
    batch["completion_ids"] = torch.tensor([row] * 4)
    batch["completion_mask"] = torch.ones_like(batch["completion_ids"])
    trainer._confidence_only(batch)
    n_conf = int(batch["tool_mask"][0].sum())
    assert 0 < n_conf < len(row)
    assert int(batch["num_items_in_batch"]) == 4 * n_conf  # TRL's dapo normaliser counts the kept tokens only
    trainer.train()  # and the option runs end to end through TRL's own loss path
    logged = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any("affect/loss_token_fraction" in r for r in logged)


def test_loss_tokens_must_be_all_or_confidence(mixed, tmp_path):
    from affectllm.config import RecipeError

    with pytest.raises(RecipeError, match="grpo.loss_tokens"):
        grpo_recipe(mixed, tmp_path, "grpo.loss_tokens=answer")
