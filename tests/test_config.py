"""Recipe schema: loading, overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from affectllm.config import Recipe, RecipeError, load_model_config, load_recipe, recipe_to_yaml

ROOT = Path(__file__).resolve().parents[1]
GOOD = """\
# affectllm train this.yaml
stage: grpo
output_dir: runs/x
init_from: runs/sft
model:
  preset: tiny
  lora: {r: 4}
data:
  manifest: data/manifest.jsonl
rewards:
  - {name: ew, weight: 1.0, kwargs: {level: level1}}
  - {name: format, weight: 0.5}
trainer:
  learning_rate: 1.0e-5
  num_generations: 4
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def test_load_good_recipe_with_overrides(tmp_path):
    recipe = load_recipe(write(tmp_path, GOOD), ["trainer.max_steps=3", "model.lora.r=8", "seed=7"])
    assert isinstance(recipe, Recipe)
    assert recipe.stage == "grpo" and recipe.seed == 7 and recipe.model.lora.r == 8
    assert recipe.rewards[0].name == "ew" and recipe.rewards[0].kwargs == {"level": "level1"}
    assert recipe.trainer == {"learning_rate": 1e-5, "num_generations": 4, "max_steps": 3}
    assert "num_generations: 4" in recipe_to_yaml(recipe)


@pytest.mark.parametrize(("text", "override", "message"), [
    (GOOD.replace("preset: tiny", "presett: tiny"), [], r"r\.yaml.*presett.*model"),
    (GOOD.replace("lora: {r: 4}", "lora: {r: four}"), [], r"r\.yaml.*(four|r).*model\.lora\.r"),
    (GOOD, ["model.lora.r=many"], r"override 'model.lora.r=many'"),
    (GOOD, ["trainer.learning_rat=1"], r"trainer\.learning_rat is not an option of GRPOConfig"),
    (GOOD.replace("stage: grpo", "stage: dpo"), [], r"stage='dpo' must be one of sft, grpo, calibrate"),
    (GOOD.replace("output_dir: runs/x\n", ""), [], r"missing mandatory value: output_dir"),
    (GOOD, ["trainer.max_steps"], r"expected key=value"),
])
def test_bad_recipes_name_the_key(tmp_path, text, override, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(write(tmp_path, text), override)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(RecipeError, match="nope.yaml: no such recipe file"):
        load_recipe(tmp_path / "nope.yaml")


def test_grpo_without_rewards_is_refused(tmp_path):
    text = GOOD.split("rewards:")[0] + "trainer: {}\n"
    with pytest.raises(RecipeError, match="needs at least one entry under rewards"):
        load_recipe(write(tmp_path, text))


def test_model_config_from_key_values():
    cfg = load_model_config(["preset=smollm2-135m", "prefusion=false", "media_tokens.video=2"])
    assert cfg.preset == "smollm2-135m" and cfg.prefusion is False and cfg.media_tokens == {"video": 2}
    with pytest.raises(RecipeError, match="model option 'colour=red'"):
        load_model_config(["colour=red"])


RECIPES = sorted(p for p in (ROOT / "recipes").rglob("*.yaml") if "accelerate" not in p.parts
                 and "deepspeed" not in p.parts)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_recipe_loads_and_starts_with_its_command(path):
    recipe = load_recipe(path)
    assert recipe.stage in ("sft", "grpo", "calibrate")
    first = path.read_text().splitlines()[0]
    assert first.startswith("#") and "affectllm" in first, f"{path}: first line must be the command that runs it"
