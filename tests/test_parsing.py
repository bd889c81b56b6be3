"""The one parser: format checks, labels, confidence, AUs (negation, padding), malformed text, fuzz."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from affectllm.parsing import extract_aus, parse_completion, parse_label_field, split_labels
from affectllm.types import Prediction

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


TAGGY = st.lists(
    st.sampled_from(
        [
            "<think>",
            "</think>",
            "<answer>",
            "</answer>",
            "<confidence>",
            "</confidence>",
            "0.5",
            "85%",
            "AU",
            "AU06",
            "no ",
            ",",
            "happy",
            "\n",
            " and ",
        ]
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), TAGGY.map("".join)))
def test_parser_fuzz(text: str) -> None:
    p = parse_completion(text)
    assert p.confidence is None or 0.0 <= p.confidence <= 1.0
    assert p.format_ok == (not p.errors)
    assert len(p.labels) == len(set(p.labels)) <= 32
    assert all(a.startswith("AU") for a in p.aus)
