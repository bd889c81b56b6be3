"""The one parser and writer: format checks, labels, confidence, AUs (negation, padding), truncation, the
``format_completion`` round trip, gold labels, malformed text, fuzz; prompt escaping through the tiny processor."""

from __future__ import annotations

import math

import pytest
from conftest import COMPLETION
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from affectllm.parsing import (
    clean_label,
    extract_aus,
    format_completion,
    gold_labels,
    parse_completion,
    parse_label_field,
    split_labels,
    stated_confidence,
)
from affectllm.taxonomy import default_taxonomy
from affectllm.types import Clip, Prediction

GOOD = "<think>AU6 and AU12 visible.</think><answer>happy, joyful</answer><confidence>0.8</confidence>"


def test_well_formed() -> None:
    p = parse_completion(GOOD)
    assert p == Prediction(
        think="AU6 and AU12 visible.",
        answer="happy, joyful",
        labels=["happy", "joyful"],
        confidence=0.8,
        aus=["AU6", "AU12"],
        format_ok=True,
        errors=[],
        raw=GOOD,
    )
    spaced = "  <THINK> x </think>\n<answer> Sad </answer>\n< confidence >1</confidence>\n"
    assert parse_completion(spaced).format_ok and parse_completion(spaced).confidence == 1.0


MALFORMED = [
    ("", ["missing_think", "missing_answer", "missing_confidence", "empty_answer"], []),
    ("<think>a</think><answer></answer><confidence>0.5</confidence>", ["empty_answer"], []),
    ("<think>a</think><answer>x</answer><answer>y</answer><confidence>0.5</confidence>", ["repeated_answer"], ["x"]),
    ("<think>a</think><answer>sad<confidence>0.5</confidence>", ["unclosed_answer"], ["sad"]),
    ("<answer>x</answer><think>a</think><confidence>0.5</confidence>", ["bad_order"], ["x"]),
    ("hi <think>a</think><answer>x</answer><confidence>0.5</confidence>", ["text_outside_tags"], ["x"]),
    ("<think>a</think><answer>x</answer><confidence>high</confidence>", ["confidence_word"], ["x"]),
    ("<think>a</think><answer>x</answer><confidence>abc</confidence>", ["confidence_not_number"], ["x"]),
    ("<think>a</think><answer>x</answer><confidence>-0.2</confidence>", ["confidence_out_of_range"], ["x"]),
    ("<think>a</think><answer>x</answer><confidence>1.5</confidence>", ["confidence_out_of_range"], ["x"]),
    ("<think>a</think><answer>x</answer><confidence>nan</confidence>", ["confidence_not_number"], ["x"]),
    ("<think>a</think><answer>x</answer><confidence>85%</confidence>", ["confidence_percent"], ["x"]),
    ("<think>a</think><answer>x</answer><confidence>85</confidence>", ["confidence_percent"], ["x"]),
    ("<think>快乐</think><answer>快乐, 😀 happy</answer><confidence>0.5</confidence>", [], ["快乐", "😀 happy"]),
    ("<think>" + "x" * 200_000 + "</think><answer>sad</answer><confidence>0.5</confidence>", [], ["sad"]),
    ("happy, sad", ["missing_think", "missing_answer", "missing_confidence", "text_outside_tags"], ["happy", "sad"]),
]


@pytest.mark.parametrize(("text", "errors", "labels"), MALFORMED, ids=range(len(MALFORMED)))
def test_malformed(text: str, errors: list[str], labels: list[str]) -> None:
    p = parse_completion(text)
    assert p.errors == errors and p.labels == labels and p.format_ok == (not errors)


def test_confidence_values() -> None:
    assert parse_completion("<confidence>85%</confidence>").confidence == 0.85
    assert parse_completion("<confidence>high</confidence>").confidence is None


@pytest.mark.parametrize(
    ("completion", "labels"),
    [
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "<answer>Sad</answer>"}], ["sad"]),
        ({"role": "assistant", "content": "<answer>a</answer>"}, ["a"]),
        ([{"type": "text", "text": "<answer>b"}, {"type": "text", "text": "</answer>"}], ["b"]),
    ],
)
def test_conversational_completions(completion: object, labels: list[str]) -> None:
    assert parse_completion(completion).labels == labels


@pytest.mark.parametrize("bad", [None, 3, [], [1, 2], b"<answer>x</answer>"])
def test_not_text(bad: object) -> None:
    assert parse_completion(bad).errors == ["not_text"]


@pytest.mark.parametrize(
    ("answer", "labels"),
    [
        ("Happy; SAD / angry | calm", ["happy", "sad", "angry", "calm"]),
        ("happy and sad or calm", ["happy", "sad", "calm"]),
        ("1. Happy\n2. Happy.\n- 'sad'", ["happy", "sad"]),
        ("happy，tired；calm、sad", ["happy", "tired", "calm", "sad"]),
        ("['Happy', 'relieved']", ["happy", "relieved"]),
        ("ill   at  ease", ["ill at ease"]),
        (",,, ;", []),
        (", ".join(f"w{i}" for i in range(100)), [f"w{i}" for i in range(32)]),
    ],
)
def test_split_labels(answer: str, labels: list[str]) -> None:
    assert split_labels(answer) == labels


@pytest.mark.parametrize(
    ("text", "aus"),
    [
        ("AU04 brow lowered, AU 6, au12", ["AU4", "AU6", "AU12"]),
        ("no AU12", []),
        ("AU12 absent; AU6 present", ["AU6"]),
        ("without AU4, AU9 or AU15", []),
        ("without AU12, the AU6 is weak", ["AU6"]),
        ("AU12 is not active", []),
        ("AU12 (lip corner puller) is not visible, AU6 (cheek raiser) is", ["AU6"]),
        ("AU4 (brow lowerer) absent", []),
        ("AU3 AU99 AU100 AU45", ["AU45"]),
        ("AU 12B, L AU14", ["AU12", "AU14"]),
        ("AU6+AU12", ["AU6", "AU12"]),
        ("", []),
    ],
)
def test_extract_aus(text: str, aus: list[str]) -> None:
    assert extract_aus(text) == aus


def test_aus_come_from_think_only() -> None:
    assert parse_completion("<think>AU6</think><answer>AU12</answer>").aus == ["AU6"]
    assert parse_completion("AU6 and AU12 are active, <answer>happy</answer>").aus == []  # no <think>: none named


def test_an_answer_cut_at_the_length_limit_has_no_labels() -> None:
    cut = parse_completion("<think>AU6</think><answer>happy, exci")
    assert cut.labels == [] and "truncated_answer" in cut.errors and cut.answer == "happy, exci"
    # unclosed but followed by another tag: not cut, the labels are whole
    closed_late = parse_completion("<think>a</think><answer>sad<confidence>0.5</confidence>")
    assert closed_late.labels == ["sad"] and "truncated_answer" not in closed_late.errors


def test_stated_confidence_is_one_rule() -> None:
    def conf(text: str) -> float | None:
        return stated_confidence(parse_completion(text))

    assert conf("<answer>sad</answer><confidence>0.7</confidence>") == 0.7
    assert conf("<answer>sad</answer><confidence>70%</confidence>") is None  # a percentage is not the format
    assert conf("<answer>sad</answer><confidence>70</confidence>") is None
    assert conf("<answer>sad</answer>") is None
    assert conf("<answer></answer><confidence>0.7</confidence>") is None  # no answer to be sure of
    assert conf("<answer>sad, ha<confidence>0.7</confidence>") == 0.7  # unclosed, not cut: still an answer


def test_gold_labels() -> None:
    assert gold_labels(Clip(id="a", labels=["happy", "calm"], emotion="happy")) == ["happy", "calm"]
    assert gold_labels(Clip(id="b", labels=[], emotion="sad")) == ["sad"]
    assert gold_labels(Clip(id="c")) == []
    assert gold_labels({"labels": None, "emotion": "angry"}) == ["angry"]


TAXONOMY_LABELS = sorted(default_taxonomy().vocabulary() | {w for wh in default_taxonomy().wheels for w in wh.words()})


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.characters(blacklist_characters="<>"), max_size=80),
    st.lists(st.sampled_from(TAXONOMY_LABELS), min_size=1, max_size=8),
    st.one_of(st.none(), st.floats(0.0, 1.0)),
)
def test_format_completion_round_trip(think: str, labels: list[str], confidence: float | None) -> None:
    p = parse_completion(format_completion(think, labels, confidence))
    assert p.labels == list(dict.fromkeys(labels)) and p.think == think.strip()
    if confidence is None:
        assert p.confidence is None and p.errors == ["missing_confidence"]
    else:
        assert p.format_ok and abs(p.confidence - confidence) <= 0.005 + 1e-12


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=30), min_size=1, max_size=4))
def test_format_completion_never_writes_labels_that_read_back_otherwise(labels: list[str]) -> None:
    try:
        text = format_completion("cues", labels, 0.5)
    except ValueError:
        assume(False)  # refused: a label the parser would split, trim away or drop
    assert parse_completion(text).labels == list(dict.fromkeys(clean_label(x) for x in labels))


@pytest.mark.parametrize("labels", [["love and hate"], ["happy, sad"], ["a/b"], ["..."], [], ["x" * 65]])
def test_format_completion_refuses_what_would_not_read_back(labels: list[str]) -> None:
    with pytest.raises(ValueError):
        format_completion("cues", labels, 0.5)
    for bad in ("<answer>x</answer>", "a <think> b"):
        with pytest.raises(ValueError, match="tag"):
            format_completion(bad, ["happy"], 0.5)
    with pytest.raises(ValueError, match="finite"):
        format_completion("cues", ["happy"], math.nan)


def test_a_transcript_with_a_placeholder_is_escaped_through_the_processor(tiny) -> None:
    from affectllm.inputs.collate import prompt_text
    from affectllm.types import FUSION_PLACEHOLDER, MODALITY_TABLE

    _, processor = tiny
    said = "she typed " + " ".join(m.placeholder for m in MODALITY_TABLE) + FUSION_PLACEHOLDER + " in the chat"
    enc = processor([prompt_text(processor, [], said, "How does she feel?")])  # raised a count mismatch before
    tokenizer = processor.tokenizer
    placeholder_ids = {tokenizer.convert_tokens_to_ids(m.placeholder) for m in MODALITY_TABLE}
    assert not placeholder_ids & set(enc["input_ids"][0].tolist())
    assert "video" in tokenizer.decode(enc["input_ids"][0])


@pytest.mark.parametrize(
    ("value", "labels"),
    [
        ("[happy, sad]", ["happy", "sad"]),
        ("happy, sad", ["happy", "sad"]),
        ("['happy', \"sad\"]", ["happy", "sad"]),
        ("", []),
        (None, []),
        (float("nan"), []),
        (["Happy"], ["Happy"]),
        ("[[x]]", ["[x]"]),
    ],
)
def test_parse_label_field(value: object, labels: list[str]) -> None:
    assert parse_label_field(value) == labels


@settings(max_examples=300, deadline=None)
@given(COMPLETION)
def test_parser_fuzz(text: str) -> None:
    p = parse_completion(text)
    assert p.confidence is None or 0.0 <= p.confidence <= 1.0
    assert p.format_ok == (not p.errors)
    assert len(p.labels) == len(set(p.labels)) <= 32
    assert all(a.startswith("AU") for a in p.aus)
