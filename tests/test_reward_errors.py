"""A reward that raises on a programming error stops GRPO with the reward's name and the sample id in the message."""

from __future__ import annotations

from pathlib import Path

import pytest

from affectllm.config import RewardSpec, load_recipe
from affectllm.train.grpo import RewardError, named_reward, reward_functions

ROOT = Path(__file__).resolve().parents[1]


def _buggy(completions, labels, **_):
    """Scores 1.0, except that a row without labels hits a TypeError (``None`` has no ``len``)."""
    return [float(len(lab) > 0) for lab in labels]


def _batch_only(completions, **_):
    """Raises only on a batch of more than one completion (no single sample is to blame)."""
    if len(completions) > 1:
        raise TypeError("batch-level bug")
    return [0.0]


def test_a_raising_reward_names_itself_and_the_failing_sample():
    reward = named_reward(_buggy, "emotion_wheel_2")
    kwargs = {"id": ["ew00000", "ew00003", "ew00007"], "labels": [["joy"], None, ["anger"]], "log_metric": print}
    with pytest.raises(RewardError, match=r"reward 'emotion_wheel_2' raised TypeError: .*sample id 'ew00003'") as err:
        reward(["a", "b", "c"], **kwargs)
    assert isinstance(err.value.__cause__, TypeError)


def test_a_reward_that_fails_only_on_the_whole_batch_names_the_batch_ids():
    reward = named_reward(_batch_only, "count")
    with pytest.raises(RewardError, match=r".count. raised TypeError: batch-level bug \(sample id \[.x., .y.\]"):
        reward(["a", "b"], id=["x", "y"])


def test_a_working_reward_is_passed_through():
    reward = named_reward(_buggy, "format")
    assert reward(["a", "b"], id=["x", "y"], labels=[["joy"], []]) == [1.0, 0.0]


def test_the_rewards_a_recipe_names_are_wrapped():
    """The functions the trainer gets (built by name from the recipe) carry the reward's log name and the id."""
    recipe = load_recipe(ROOT / "recipes/tiny/grpo.yaml", ["data.manifest=unused.jsonl"])
    recipe.rewards.append(RewardSpec(name="test_reward_errors:_buggy", weight=1.0))
    funcs, _ = reward_functions(recipe)
    with pytest.raises(RewardError, match=r"reward 'test_reward_errors:_buggy' raised TypeError.*sample id 'b'"):
        funcs[-1](["x", "y"], id=["a", "b"], labels=[["joy"], None])
