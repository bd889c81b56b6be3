"""The words tower: the transcript as a tower input (processor, prompt, model, stage 0's readout, evidence)."""

from __future__ import annotations

import torch

from affectllm.config import load_model_config
from affectllm.evaluation.evidence import Evidence, tower_readouts
from affectllm.inputs.collate import build_prompt_inputs
from affectllm.inputs.store import ClipStore
from affectllm.model.build import build_model
from affectllm.types import Clip, DecodedClip

EMOTIONS = ["angry", "happy", "sad"]


def test_processor_gives_right_padded_ids_and_keeps_placeholder_text_as_text(tiny):
    model, processor = tiny
    tok = processor.tokenizer
    texts = ["<|im_start|>user\n<words>\nhi<|im_end|>"] * 2 + ["<|im_start|>user\nhi<|im_end|>"]
    said = ["I am so happy today", "I said <video> and <words> out loud", None]
    enc = processor(texts, words=said)
    ids, mask = enc["words_ids"], enc["words_mask"]
    assert ids.shape[0] == 2 and mask.shape == ids.shape  # rows without a transcript get none
    for i, text in enumerate(said[:2]):
        n = int(mask[i].sum())
        assert ids[i, :n].tolist() == tok(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        assert mask[i, :n].all() and not mask[i, n:].any()  # real tokens first, padding after
    assert mask[0].sum() < mask[1].sum()  # the shorter transcript is the padded one
    placeholders = set(model.config.media_token_ids.values())
    assert not placeholders & set(ids[mask.bool()].tolist())  # "<video>" said aloud is words, not media


def test_a_clip_with_a_transcript_gets_the_words_placeholders_a_blank_one_none(tiny):
    model, processor = tiny
    assert DecodedClip(id="a", transcript="  ").present() == [] and DecodedClip(id="a", transcript="x").present() \
        == ["words"]
    clips = [Clip(id="a", transcript="I feel thrilled"), Clip(id="b", transcript=" ")]
    batch = build_prompt_inputs(processor, ClipStore(None), clips, ["How?"] * 2, model.config.enabled_modalities())
    words_id = model.config.media_token_ids["words"]
    per_row = (batch.inputs["input_ids"] == words_id).sum(1).tolist()
    assert per_row == [model.config.media_tokens["words"], 0] and batch.present == [["words"], []]
    assert batch.inputs["words_ids"].shape[0] == 1
    with torch.no_grad():
        model(**batch.inputs)  # the placeholders are filled


def test_a_transcript_encodes_the_same_alone_and_beside_a_longer_one(tiny):
    """Right padding, the mask and the per-clip lengths keep a clip's words tokens free of its batch mates."""
    model, processor = tiny
    inner = model.model
    short, long = "so glad", "I am furious and annoyed about all of this, honestly, every single day"

    def tokens(texts):
        enc = processor(["<words>"] * len(texts), words=texts)
        feats = inner.encode_media("words", enc["words_ids"], enc["words_mask"])
        assert not feats[enc["words_mask"] == 0].any()  # zero past each transcript's end
        return inner.project_media("words", feats, inner.feature_lengths("words", enc["words_mask"]))

    with torch.no_grad():
        torch.testing.assert_close(tokens([short])[0], tokens([long, short])[1], rtol=0, atol=1e-6)


def test_a_model_without_a_words_tower_reads_the_transcript_as_text_only():
    model, processor = build_model(load_model_config(["preset=tiny", "words=none", "readout=[video,audio,face]"]))
    assert "words" not in model.config.enabled_modalities() and "words" not in model.model.encoders
    batch = build_prompt_inputs(processor, ClipStore(None), [Clip(id="a", transcript="I feel thrilled")], ["How?"],
                                model.config.enabled_modalities())
    assert "words_ids" not in batch.inputs and "The person says" in batch.texts[0]


def test_stage0_words_readout_replaces_the_separate_transcript_readout(tiny):
    model, _ = build_model(seed=0)
    train = [Clip(id=f"c{i}", transcript=f"I feel {e} {i}", emotion=e, labels=[e]) for i in range(4) for e in EMOTIONS]
    assert Evidence.fit(model.config, train).text is not None  # no readout yet: the n-gram readout reads the words
    model.model.attach_readout("words", [], EMOTIONS)
    assert tower_readouts(model.config) == {"words": EMOTIONS}
    ev = Evidence.fit(model.config, train)
    assert ev.text is None and ev.towers == ["words"]  # the words count once
    assert model.model.projectors["words"].extra_dim == len(EMOTIONS) + 2
