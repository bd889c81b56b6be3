"""Metrics on hand-computed cases (built-in taxonomy; the MER tables are in test_ew_mer.py), cross-checked against
scikit-learn; the one ``is_correct`` shared by the calibration reward and the evaluation runner."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from affectllm import metrics as m
from affectllm.config import RewardSpec
from affectllm.parsing import parse_completion
from affectllm.registry import METRICS
from affectllm.rewards import make_reward
from affectllm.types import Clip


def test_every_metric_declares_direction() -> None:
    assert len(METRICS) >= 12
    for name, fn in METRICS.items():
        assert isinstance(fn.higher_is_better, bool), name
    assert METRICS.get("ece").higher_is_better is False and METRICS.get("ew_level1").higher_is_better is True


def test_ew_scores_builtin_hand_computed() -> None:
    # sample 1: joyful == happy on all 3 wheels -> (1, 1); sample 2: {sad} vs {sad, angry} -> (1, 0.5);
    # sample 3: gold "xyzzy" maps to nothing -> skipped; sample 4: empty prediction -> (0, 0).
    preds = [["joyful"], ["sad"], ["happy"], []]
    golds = [["happy"], ["sad", "angry"], ["xyzzy"], ["fear"]]
    out = m.ew_scores(preds, golds)
    assert out["precision"] == pytest.approx(2 / 3) and out["recall"] == pytest.approx(0.5)
    assert out["f"] == pytest.approx(4 / 7)  # F from averaged P and R, not mean per-sample F
    assert all(w["n"] == 3 for w in out["per_wheel"].values()) and out["n"] == 4
    assert m.ew_level1(preds, golds) == out["f"]
    assert m.ew_scores([[]], [["xyzzy"]])["f"] == 0.0  # no sample counts -> 0
    with pytest.raises(ValueError):
        m.ew_scores([["a"]], [])


def test_ew_level2_differs_from_level1() -> None:
    assert m.ew_level1([["terrified"]], [["worried"]]) == 1.0  # both fear
    assert m.ew_level2([["terrified"]], [["worried"]]) == 0.0  # terror/horror vs anxiety/nervousness branches
    # ekman (joy) and parrott (cheerfulness) share a branch; plutchik splits ecstasy from joy
    assert m.ew_sample_f(["elated"], ["joyful"], level="level2") == pytest.approx(2 / 3)


def test_hit_rate() -> None:
    # happy/joyful hit on all wheels; neutral vs happy misses (neutral is a class here); fear vs sad misses.
    assert m.hit_rate([["joyful", "sad"], ["happy"], ["sad"]], ["happy", "neutral", "fear"]) == pytest.approx(1 / 3)
    assert m.hit_sample(["sad"], "xyzzy") == [None, None, None]


def test_classification_metrics() -> None:
    preds, golds = ["a", "a", "b", "c"], ["a", "b", "b", "b"]
    assert m.accuracy(preds, golds) == m.war(preds, golds) == 0.5
    assert m.uar(preds, golds) == pytest.approx((1 + 1 / 3) / 2)
    # class a: P=1/2, R=1, F=2/3 (support 1); class b: P=1, R=1/3, F=1/2 (support 3)
    assert m.weighted_f1(preds, golds) == pytest.approx((2 / 3 + 3 * 0.5) / 4)
    assert m.accuracy([], []) == 0.0 and m.weighted_f1([], []) == 0.0


def test_au_f1() -> None:
    out = m.au_f1([["AU6", "AU12"], ["AU04"]], [["AU6"], ["AU4", "AU12"]])
    # AU6: tp1 -> 1.0; AU12: fp1 fn1 -> 0; AU4: tp1 -> 1.0; micro: tp2 fp1 fn1 -> 4/6
    assert out["per_au"] == {"AU4": 1.0, "AU6": 1.0, "AU12": 0.0}
    assert out["macro"] == pytest.approx(2 / 3, abs=1e-4) and out["micro"] == pytest.approx(2 / 3, abs=1e-4)
    assert m.au_f1_sample(["AU6"], []) is None and m.au_f1_sample([], ["AU6"]) == 0.0


def test_reliability_right_edge_included() -> None:
    bins = m.reliability_diagram([0.0, 0.1, 0.3, 0.7, 1.0], [0, 0, 1, 1, 1], n_bins=10)
    counts = [b["count"] for b in bins]
    assert counts == [2, 0, 1, 0, 0, 0, 1, 0, 0, 1]  # 0.1 in (0, .1], 0.3 in (.2, .3], 1.0 in (.9, 1]
    assert bins[1]["accuracy"] is None
    assert m.expected_calibration_error([0.9, 0.6], [True, False], n_bins=2) == 0.25
    assert m.expected_calibration_error([1.0, 0.0], [True, False]) == 0.0
    with pytest.raises(ValueError):
        m.brier([1.2], [True])


def test_brier_auroc_selective() -> None:
    assert m.brier([1.0, 0.0, 0.5], [True, True, False]) == pytest.approx((0 + 1 + 0.25) / 3)
    assert m.auroc([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0]) == 1.0
    assert m.auroc([0.5, 0.5], [1, 0]) == 0.5  # a tie counts one half
    assert m.auroc([0.9, 0.4, 0.6, 0.2], [1, 1, 0, 0]) == 0.75
    assert m.auroc([0.9], [1]) is None
    curve = m.selective_curve([0.9, 0.8, 0.8, 0.1], [1, 0, 1, 0])
    assert [(p["coverage"], p["accuracy"]) for p in curve] == [(0.25, 1.0), (0.75, 2 / 3), (1.0, 0.5)]
    assert m.selective_auc([0.9, 0.8, 0.8, 0.1], [1, 0, 1, 0]) == pytest.approx(0.25 + 0.5 * 2 / 3 + 0.25 * 0.5)


CLASSES = st.lists(st.tuples(st.sampled_from("abcd"), st.sampled_from("abcd")), min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(CLASSES)
def test_classification_metrics_match_sklearn(pairs: list[tuple[str, str]]) -> None:
    preds, golds = [p for p, _ in pairs], [g for _, g in pairs]
    assert m.weighted_f1(preds, golds) == pytest.approx(skm.f1_score(golds, preds, average="weighted",
                                                                     zero_division=0))
    gold_classes = sorted(set(golds))  # UAR: mean recall over the gold classes
    assert m.uar(preds, golds) == pytest.approx(skm.recall_score(golds, preds, labels=gold_classes, average="macro",
                                                                 zero_division=0))
    assert m.accuracy(preds, golds) == pytest.approx(skm.accuracy_score(golds, preds))


CONFIDENCE_PAIRS = st.lists(st.tuples(st.sampled_from([i / 10 for i in range(11)]), st.booleans()), min_size=1,
                            max_size=40)


@settings(max_examples=150, deadline=None)
@given(CONFIDENCE_PAIRS)
def test_brier_and_auroc_match_sklearn(pairs: list[tuple[float, bool]]) -> None:
    conf, correct = [c for c, _ in pairs], [y for _, y in pairs]
    assert m.brier(conf, correct) == pytest.approx(skm.brier_score_loss(correct, conf, pos_label=True))
    if len(set(correct)) < 2:
        assert m.auroc(conf, correct) is None
    else:
        assert m.auroc(conf, correct) == pytest.approx(skm.roc_auc_score(correct, conf))


def test_is_correct() -> None:
    assert m.is_correct(["joyful", "sad"], ["happy"]) is True  # per-sample EW F 2/3 >= 0.5
    assert m.is_correct(["joyful", "sad"], ["happy"], threshold=0.7) is False
    assert m.is_correct(["elated"], ["joyful"], level="level2") is True  # F 2/3 at level 2
    assert m.is_correct(["elated"], ["joyful"], level="level2", threshold=0.9) is False
    assert m.is_correct([], ["happy"]) is False and m.is_correct(["happy"], ["xyzzy"]) is None


def _recipe(**kwargs: object) -> SimpleNamespace:
    return SimpleNamespace(rewards=[RewardSpec(name="format"), RewardSpec(name="calibration", kwargs=kwargs)])


def test_evaluation_judges_correct_as_the_calibration_reward_does() -> None:
    from affectllm.evaluation.runner import Correctness, confidence_pairs

    texts = [f"<answer>{a}</answer><confidence>0.8</confidence>" for a in ("joyful, sad", "elated", "sad", "happy")]
    texts += ["<answer>happy</answer>", "<answer>happy</answer><confidence>80%</confidence>"]
    clips = [Clip(id=str(i), labels=["happy"] if i != 1 else ["joyful"]) for i in range(len(texts))]
    preds = [parse_completion(t) for t in texts]
    for kwargs in ({}, {"threshold": 0.7}, {"level": "level2"}, {"level": "level2", "threshold": 0.9}):
        judge = Correctness.from_recipe(_recipe(**kwargs))
        reward = make_reward("calibration", **kwargs)(texts, labels=[c.labels for c in clips], emotion=[None] * 6)
        conf, correct = confidence_pairs(preds, clips, judge)
        # the reward's Brier value says what it judged: 1 - 0.04 when right, -0.64 when wrong; the last two have no
        # usable confidence ("80%" included): the reward fails them, evaluation counts them as confidence 0
        assert correct[:4] == [r > 0 for r in reward[:4]] and reward[4:] == [-1.5, -1.5]
        assert conf == [0.8] * 4 + [0.0, 0.0] and correct[4:] == [True, True]
    assert Correctness.from_recipe(SimpleNamespace(rewards=[])) == Correctness()


def test_evaluation_parses_each_completion_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from affectllm.evaluation import runner

    calls = []
    monkeypatch.setattr(runner, "generate_completions", lambda *a, **k: ["<answer>happy</answer>"] * 3)
    monkeypatch.setattr(runner, "parse_completion", lambda t: calls.append(t) or parse_completion(t))
    result = runner.evaluate(None, None, [Clip(id=str(i), labels=["happy"]) for i in range(3)], None,
                             conf_map=SimpleNamespace(apply=lambda c: c))
    assert len(calls) == 3 and result["ew_f"] == 1.0 and result["no_confidence"] == 1.0 and result["ece"] == 1.0
