"""Rewards: values on hand-checked cases, malformed text, conversational input, options, fuzz (range, no raise)."""

from __future__ import annotations

import math
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from affectllm.registry import REWARDS
from affectllm.rewards import make_reward, reward_options
from affectllm.rewards.calibration import confidence_score
from affectllm.rewards.length import count_penalty

GOOD = "<think>AU6 and AU12 raised</think><answer>happy</answer><confidence>0.9</confidence>"
MALFORMED = [
    "",
    "<answer></answer>",
    "<answer>a</answer><answer>b</answer>",
    "<think>" * 1000,
    "x" * 100_000,
    "<think>😀 ünïcødé</think><answer>快乐</answer><confidence>０.５</confidence>",
    "<confidence>85%</confidence>",
]
# name -> (range, needs gold to apply, dataset columns)
RANGES = {
    "format": (0.0, 1.0),
    "ew": (0.0, 1.0),
    "label": (0.0, 1.0),
    "au": (-1.0, 1.0),
    "label_count_penalty": (-1.0, 0.0),
    "length": (-1.0, 0.0),
    "calibration": (-1.5, 1.0),
}
COLUMNS = {"labels": [["happy", "surprised"]], "emotion": ["happy"], "aus": [["AU6", "AU12"]]}


def _call(name: str, completions: list, **kw: object) -> list:
    columns = {k: v * len(completions) for k, v in COLUMNS.items()}
    return REWARDS.get(name)(completions, **{**columns, **kw})


def test_all_rewards_registered() -> None:
    assert set(RANGES) <= set(REWARDS.names())


@pytest.mark.parametrize("name", sorted(RANGES))
@pytest.mark.parametrize("text", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_text_scores_in_range(name: str, text: str) -> None:
    lo, hi = RANGES[name]
    (value,) = _call(name, [text])
    assert value is None or lo <= value <= hi


@pytest.mark.parametrize("name", sorted(RANGES))
def test_conversational_equals_string(name: str) -> None:
    conv = [[{"role": "assistant", "content": GOOD}]]
    assert _call(name, conv) == _call(name, [GOOD])


def test_format() -> None:
    f = REWARDS.get("format")
    texts = [GOOD, "<think>a</think><answer>b</answer>", "<answer>b</answer>", ""]
    assert f(texts) == [1.0, 0.0, 0.0, 0.0]
    assert f(texts, require_confidence=False) == [1.0, 1.0, 0.0, 0.0]
    assert f(texts, mode="lenient") == [1.0, 0.75, 0.5, 0.25]
    with pytest.raises(ValueError):
        f(texts, mode="loose")


def test_ew_and_label() -> None:
    ew = REWARDS.get("ew")
    assert ew([GOOD, "<answer>joyful, scared</answer>", "<answer></answer>"], labels=[["happy"]] * 3) == [
        1.0,
        0.6667,
        0.0,
    ]
    assert ew(["<answer>happy</answer>"], labels=["[]"], emotion=["joyful"]) == [1.0]  # falls back to `emotion`
    assert ew(["<answer>happy</answer>"], labels=[["neutral"]]) == [0.0]  # neutral is a class in the built-in
    assert ew(["<answer>happy</answer>"]) == [None]
    label = REWARDS.get("label")
    assert label(["<answer>joyful, sad</answer>", "<answer>sad, joyful</answer>"], emotion=["happy"] * 2) == [1.0, 0.0]
    assert label(["<answer>xyzzy</answer>"], emotion=["xyzzy"]) == [1.0]  # unknown words compare as strings
    assert label(["<answer>a</answer>"], emotion=[None]) == [None]


def test_au() -> None:
    au = REWARDS.get("au")
    texts = ["<think>AU06, AU12</think>", "<think>AU6, AU4</think>", "<think>no AU6</think>", "<answer>AU6</answer>"]
    assert au(texts, aus=[["AU6", "AU12"]] * 4) == [1.0, 0.0, -1.0, -1.0]
    assert au(texts[:1], aus=["[AU06, AU12]"]) == [1.0]
    assert au(texts[:1], aus=[None]) == [None]


@pytest.mark.parametrize(
    ("n_pred", "n_gold", "variant", "expected"),
    [
        (2, 2, "inverse", 0.0),
        (1, 2, "log", 0.0),
        (4, 2, "inverse", -0.5),
        (3, 2, "ratio", -0.5),
        (5, 1, "ratio", -1.0),
        (4, 2, "log", round(-math.log(2), 4)),
        (9, 1, "log", -1.0),
    ],
)
def test_count_penalty(n_pred: int, n_gold: int, variant: str, expected: float) -> None:
    assert count_penalty(n_pred, n_gold, variant) == expected


def test_length_uses_token_ids() -> None:
    length = REWARDS.get("length")
    assert length(["a", "b", "c"], max_tokens=10, soft=4, completion_ids=[[0] * 6, [0] * 8, [0] * 50]) == [
        0.0,
        -0.5,
        -1.0,
    ]
    with pytest.raises(ValueError):
        length(["a"], max_tokens=4, soft=4)


def test_calibration() -> None:
    assert confidence_score(1.0, True) == 1.0 and confidence_score(1.0, False) == -1.0
    assert confidence_score(0.0, True, "log") == pytest.approx(math.log(0.01))
    cal = REWARDS.get("calibration")
    ok = "<answer>happy</answer><confidence>{}</confidence>"
    scores = cal([ok.format(0.7), ok.format("70%"), "<answer>happy</answer>"], labels=[["joyful"]] * 3)
    assert scores[0] == pytest.approx(1 - 0.09) and scores[1] == scores[2] == -1.5
    # a format failure scores below every valid answer, for both scores
    for score in ("brier", "log"):
        worst_valid = min(confidence_score(c / 10, y, score) for c in range(11) for y in (True, False))
        assert cal(["junk"], labels=[["happy"]], score=score)[0] < worst_valid


def test_make_reward_binds_and_checks() -> None:
    fn = make_reward("label_count_penalty", variant="log")
    assert fn.__name__ == "label_count_penalty" and "variant" in reward_options("label_count_penalty")
    assert pickle.loads(pickle.dumps(fn))(["<answer>a, b</answer>"], labels=[["x"]]) == [round(-math.log(2), 4)]
    with pytest.raises(TypeError, match="variant"):
        make_reward("label_count_penalty", varient="log")
    with pytest.raises(TypeError, match="no option 'labels'"):
        make_reward("ew", labels=[["x"]])  # a dataset column is not a recipe option
    with pytest.raises(KeyError):
        make_reward("nope")


COMPLETION = st.one_of(
    st.text(max_size=200),
    st.lists(
        st.sampled_from(
            [
                "<think>",
                "</think>",
                "<answer>",
                "</answer>",
                "<confidence>",
                "</confidence>",
                "0.7",
                "happy",
                "sad, ",
                "AU6 ",
                "no AU12",
                "%",
                "xyz",
            ]
        ),
        max_size=20,
    ).map("".join),
)
GOLD = st.lists(st.sampled_from(["happy", "sad", "neutral", "xyz", "AU6", "AU04", ""]), max_size=4)


@settings(max_examples=60, deadline=None)
@given(st.lists(COMPLETION, min_size=1, max_size=4), GOLD, st.sampled_from(sorted(RANGES)))
def test_reward_fuzz(completions: list[str], gold: list[str], name: str) -> None:
    n = len(completions)
    values = REWARDS.get(name)(completions, labels=[gold] * n, emotion=[gold[0] if gold else None] * n, aus=[gold] * n)
    lo, hi = RANGES[name]
    assert len(values) == n
    assert all(v is None or (isinstance(v, float) and lo <= v <= hi) for v in values)
