"""Rewards: values on hand-checked cases, malformed text, conversational input, options, the column contract,
calibration properties, fuzz (range, no raise)."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys

import pytest
from conftest import COMPLETION
from hypothesis import given, settings
from hypothesis import strategies as st

from affectllm.registry import REWARDS
from affectllm.rewards import make_reward, reward_options
from affectllm.rewards.calibration import FORMAT_FAILURE, confidence_score
from affectllm.rewards.common import check_columns, reward_columns
from affectllm.rewards.count import count_penalty
from affectllm.types import Clip

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
COLUMNS = {"labels": [["happy", "surprised"]], "emotion": ["happy"], "aus": [["AU6", "AU12"]], "completion_ids": [[1]]}


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
    assert ew([GOOD, "<answer>joyful, scared</answer>", "<answer></answer>"], labels=[["happy"]] * 3,
              emotion=[None] * 3) == [
        1.0,
        0.6667,
        0.0,
    ]
    assert ew(["<answer>happy</answer>"], labels=[[]], emotion=["joyful"]) == [1.0]  # falls back to `emotion`
    assert ew(["<answer>happy</answer>"], labels=[["neutral"]], emotion=[None]) == [0.0]  # neutral is a class
    assert ew(["<answer>happy</answer>"], labels=[[]], emotion=[None]) == [None]
    label = REWARDS.get("label")
    two = {"emotion": ["happy"] * 2, "labels": [[]] * 2}
    assert label(["<answer>joyful, sad</answer>", "<answer>sad, joyful</answer>"], **two) == [1.0, 0.0]
    assert label(["<answer>xyzzy</answer>"], emotion=["xyzzy"], labels=[[]]) == [1.0]  # unknown: compared as strings
    assert label(["<answer>a</answer>"], emotion=[None], labels=[[]]) == [None]
    assert label(["<answer>a</answer>"], emotion=[None], labels=[["a", "b"]]) == [1.0]  # first gold label


def test_an_answer_cut_at_the_length_limit_earns_no_answer_reward() -> None:
    cut = ["<think>AU6 AU12</think><answer>happy, joy", "<think>AU6</think><answer>happy"]
    cols = {"labels": [["happy"]] * 2, "emotion": ["happy"] * 2}
    assert REWARDS.get("ew")(cut, **cols) == [0.0, 0.0]  # as a completion without an answer
    assert REWARDS.get("label")(cut, **cols) == [0.0, 0.0]
    assert REWARDS.get("calibration")([c + "</answer><confidence>0.9" for c in cut[:1]], labels=[["happy"]],
                                      emotion=[None]) == [0.99]  # closed: read
    assert REWARDS.get("calibration")(cut, **cols) == [FORMAT_FAILURE["brier"]] * 2


def test_au() -> None:
    au = REWARDS.get("au")
    texts = ["<think>AU06, AU12</think>", "<think>AU6, AU4</think>", "<think>no AU6</think>", "<answer>AU6</answer>"]
    assert au(texts, aus=[["AU6", "AU12"]] * 4) == [1.0, 0.0, -1.0, -1.0]
    assert au(texts[:1], aus=[["AU06", "AU12"]]) == [1.0]
    assert au(texts[:1], aus=[[]]) == [None]
    # Facial-R1 reads <think> only: AUs written elsewhere name none (1.0 before)
    assert au(["AU6 and AU12 are active, <answer>happy</answer>"], aus=[["AU6", "AU12"]]) == [-1.0]
    assert au(["<think>AU12 (lip corner puller) is not visible, AU6 is</think>"], aus=[["AU6"]]) == [1.0]


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


def test_length_is_dapo_soft_overlong_punishment() -> None:
    length = REWARDS.get("length")
    lengths = range(0, 40)
    values = length(["x"] * len(lengths), max_tokens=30, soft=8, completion_ids=[[0] * n for n in lengths])
    # DAPO Eq. 13: 0 up to L_max - L_cache, then ((L_max - L_cache) - |y|) / L_cache, -1 past L_max
    assert values == [0.0 if n <= 22 else ((22 - n) / 8 if n <= 30 else -1.0) for n in lengths]
    with pytest.raises(ValueError):
        length(["a"], max_tokens=4, soft=4, completion_ids=[[0]])
    with pytest.raises(ValueError, match="'length'.*'completion_ids'"):
        length(["a"], max_tokens=10, soft=4)  # no white-space fallback: TRL always passes the ids


def test_the_pure_layer_imports_no_torch() -> None:
    code = ("import sys, affectllm.rewards, affectllm.metrics; "
            "print(sorted({'torch', 'transformers'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_missing_or_short_column_fails_naming_reward_and_column() -> None:
    with pytest.raises(ValueError, match="reward 'ew' needs the dataset column 'labels'"):
        REWARDS.get("ew")(["<answer>happy</answer>"], emotion=[None])
    with pytest.raises(ValueError, match="reward 'au': column 'aus' has 1 values for 2 completions"):
        REWARDS.get("au")(["<think>AU6</think>"] * 2, aus=[["AU6"]])


def test_check_columns_uses_the_declared_columns() -> None:
    rewards = [make_reward("format"), make_reward("au"), make_reward("length", max_tokens=10, soft=2)]
    check_columns(rewards, reward_columns(Clip(id="c", labels=["happy"])))  # completion_ids come from TRL
    with pytest.raises(ValueError, match="reward 'au' reads column\\(s\\) aus"):
        check_columns(rewards, ["labels", "emotion"])


def test_reward_columns() -> None:
    assert reward_columns(Clip(id="c", emotion="sad")) == {"labels": ["sad"], "emotion": "sad", "aus": []}
    assert reward_columns(Clip(id="c", labels=["a"], aus=["AU6"])) == {"labels": ["a"], "emotion": None,
                                                                       "aus": ["AU6"]}


def test_calibration() -> None:
    assert confidence_score(1.0, True) == 1.0 and confidence_score(1.0, False) == -1.0
    assert confidence_score(0.0, True, "log") == pytest.approx(5 + math.log(0.01))
    cal = REWARDS.get("calibration")
    ok = "<answer>happy</answer><confidence>{}</confidence>"
    scores = cal([ok.format(0.7), ok.format("70%"), "<answer>happy</answer>"], labels=[["joyful"]] * 3,
                 emotion=[None] * 3)
    assert scores[0] == pytest.approx(1 - 0.09) and scores[1] == scores[2] == -1.5


def test_calibration_log_a_nonsense_answer_at_confidence_zero_is_not_the_maximum() -> None:
    cal = REWARDS.get("calibration")
    ok = "<answer>{}</answer><confidence>{}</confidence>"
    right, nonsense = cal([ok.format("happy", 1.0), ok.format("xyzzy", 0.0)], labels=[["happy"]] * 2,
                          emotion=[None] * 2, score="log")
    assert right > nonsense  # both 0.0 before: the log score had no correctness term


@settings(max_examples=300, deadline=None)
@given(st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.sampled_from(["brier", "log"]))
def test_calibration_right_beats_wrong_and_format_failure_is_lowest(c: float, d: float, score: str) -> None:
    best_right = confidence_score(1.0, True, score)
    assert confidence_score(c, False, score) < best_right  # no confidence makes a wrong answer pay like a right one
    if score == "log":  # any right answer beats any wrong one, whatever the two confidences
        assert confidence_score(c, True, score) > confidence_score(d, False, score)
    elif c > 1e-9:  # Brier: stated equally sure, right scores more
        assert confidence_score(c, True, score) > confidence_score(c, False, score)
    assert FORMAT_FAILURE[score] < min(confidence_score(c, True, score), confidence_score(c, False, score))


@pytest.mark.parametrize("score", ["brier", "log"])
@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.8, 0.95])
def test_calibration_scores_are_proper(score: str, p: float) -> None:
    grid = [i / 100 for i in range(101)]
    expected = [p * confidence_score(c, True, score) + (1 - p) * confidence_score(c, False, score) for c in grid]
    assert grid[expected.index(max(expected))] == pytest.approx(p)


def test_make_reward_binds_and_checks() -> None:
    fn = make_reward("label_count_penalty", variant="log")
    assert fn.__name__ == "label_count_penalty" and "variant" in reward_options("label_count_penalty")
    assert pickle.loads(pickle.dumps(fn))(["<answer>a, b</answer>"], labels=[["x"]], emotion=[None]) == [
        round(-math.log(2), 4)
    ]
    with pytest.raises(TypeError, match="variant"):
        make_reward("label_count_penalty", varient="log")
    with pytest.raises(TypeError, match="no option 'labels'"):
        make_reward("ew", labels=[["x"]])  # a dataset column is not a recipe option
    with pytest.raises(KeyError):
        make_reward("nope")


GOLD = st.lists(st.sampled_from(["happy", "sad", "neutral", "xyz", "AU6", "AU04"]), max_size=4)


@settings(max_examples=60, deadline=None)
@given(st.lists(COMPLETION, min_size=1, max_size=4), GOLD, st.sampled_from(sorted(RANGES)))
def test_reward_fuzz(completions: list[str], gold: list[str], name: str) -> None:
    n = len(completions)
    values = REWARDS.get(name)(completions, labels=[gold] * n, emotion=[gold[0] if gold else None] * n, aus=[gold] * n,
                               completion_ids=[[0] * len(c) for c in completions])
    lo, hi = RANGES[name]
    assert len(values) == n
    assert all(v is None or (isinstance(v, float) and lo <= v <= hi) for v in values)
