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


@pytest.mark.parametrize(
    ("text", "override", "message"),
    [
        (GOOD.replace("preset: tiny", "presett: tiny"), [], r"r\.yaml.*presett.*model"),
        (GOOD.replace("lora: {r: 4}", "lora: {r: four}"), [], r"r\.yaml.*(four|r).*model\.lora\.r"),
        (GOOD, ["model.lora.r=many"], r"override 'model.lora.r=many'"),
        (GOOD, ["trainer.learning_rat=1"], r"trainer\.learning_rat is not an option of GRPOConfig"),
        (GOOD.replace("stage: grpo", "stage: dpo"), [], r"stage='dpo' must be one of encoders, sft, grpo, calibrate"),
        (GOOD.replace("output_dir: runs/x\n", ""), [], r"missing mandatory value: output_dir"),
        (GOOD, ["trainer.max_steps"], r"expected key=value"),
        # a typo in a stage option fails with its dotted path, in the file and on the command line
        (GOOD + "sft:\n  mixx: {brief: 1.0}\n", [], r"r\.yaml.*mixx.*sft\.mixx"),
        (GOOD + "eval:\n  sampels: 3\n", [], r"r\.yaml.*sampels.*eval\.sampels"),
        (GOOD, ["sft.mixx=3"], r"override 'sft\.mixx=3'.*sft\.mixx"),
        (GOOD, ["eval.sampels=3"], r"override 'eval\.sampels=3'.*eval\.sampels"),
        (GOOD, ["calibrate.posthoc_spilt=val"], r"calibrate\.posthoc_spilt"),
        # bad trainer VALUES fail at load too (TRL's __post_init__), naming the key
        (GOOD, ["trainer.lr_scheduler_type=cosin"], r"r\.yaml: trainer\.lr_scheduler_type: GRPOConfig refuses.*cosin"),
        (
            GOOD,
            ["trainer.per_device_train_batch_size=3"],
            r"trainer\.per_device_train_batch_size: .*divisible by num_generations",
        ),
        (GOOD, ["trainer.use_vllm=true"], r"trainer\.use_vllm: vLLM generation does not carry"),
        (GOOD, ["trainer.seed=3"], r"trainer\.seed is set by affectllm.*use seed"),
        (GOOD, ["trainer.reward_weights=[1,1]"], r"trainer\.reward_weights is set by affectllm.*rewards\[\]\.weight"),
    ],
)
def test_bad_recipes_name_the_key(tmp_path, text, override, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(write(tmp_path, text), override)


def test_trainer_config_is_built_at_load_with_the_house_defaults_and_writes_nothing(tmp_path):
    from affectllm.config import RL_TRAINER_DEFAULTS, TRAINER_DEFAULTS, trainer_args

    out = tmp_path / "never"
    recipe = load_recipe(write(tmp_path, GOOD), [f"output_dir={out}", "seed=5", "trainer.use_cpu=true"])
    assert not out.exists()  # the load-time build leaves no file behind
    args = trainer_args(recipe, out)
    assert type(args).__name__ == "GRPOConfig" and not out.exists()
    for key, value in {**TRAINER_DEFAULTS, **RL_TRAINER_DEFAULTS}.items():
        assert getattr(args, key) == value, key
    assert args.disable_dropout is True and args.mask_truncated_completions is True
    assert args.seed == args.data_seed == 5 and args.reward_weights == [1.0, 0.5]
    overridden = trainer_args(
        load_recipe(write(tmp_path, GOOD), ["trainer.mask_truncated_completions=false", "trainer.use_cpu=true"]), out
    )
    assert overridden.mask_truncated_completions is False  # a default, not a rule: the recipe may override it
    sft = load_recipe(
        write(tmp_path, GOOD.replace("stage: grpo", "stage: sft").replace("  num_generations: 4\n", "")),
        ["trainer.use_cpu=true"],
    )
    sft_args = trainer_args(sft, out)
    assert type(sft_args).__name__ == "SFTConfig" and sft_args.dataset_kwargs == {"skip_prepare_dataset": True}


def test_check_trainer_false_skips_only_the_trl_build(tmp_path):
    bad_value = load_recipe(write(tmp_path, GOOD), ["trainer.lr_scheduler_type=cosin"], check_trainer=False)
    assert bad_value.trainer["lr_scheduler_type"] == "cosin"
    with pytest.raises(RecipeError, match="stage='dpo'"):  # the schema and affectllm's own checks still run
        load_recipe(write(tmp_path, GOOD.replace("stage: grpo", "stage: dpo")), check_trainer=False)


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


RECIPES = sorted(
    p for p in (ROOT / "recipes").rglob("*.yaml") if "accelerate" not in p.parts and "deepspeed" not in p.parts
)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_recipe_loads_and_starts_with_its_command(path):
    recipe = load_recipe(path)
    assert recipe.stage in ("encoders", "sft", "grpo", "calibrate")
    first = path.read_text().splitlines()[0]
    assert first.startswith("#") and "affectllm" in first, f"{path}: first line must be the command that runs it"


def _gen_recipe_docs():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_recipe_docs", ROOT / "scripts" / "gen_recipe_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_table_of_recipe_options_is_the_schema():
    """docs/training.md's option table is generated from the dataclasses; regenerate it when the schema changes."""
    gen = _gen_recipe_docs()
    text = (ROOT / "docs" / "training.md").read_text()
    assert gen.updated(text) == text, "docs/training.md is out of date: run python scripts/gen_recipe_docs.py"
    table = gen.render()
    for key in (
        "`sft.mix`",
        "`eval.samples`",
        "`calibrate.posthoc_split`",
        "`model.lora.r`",
        "`rewards[].weight`",
        "`data.feature_cache`",
        "`grpo.dedup_media`",
        "`max_bad_steps`",
    ):
        assert key in table, key


def test_docs_table_notices_a_schema_change(monkeypatch):
    import dataclasses

    from affectllm.config import EvalOptions

    gen = _gen_recipe_docs()
    text = (ROOT / "docs" / "training.md").read_text()
    field = next(f for f in dataclasses.fields(EvalOptions) if f.name == "samples")
    monkeypatch.setattr(field, "metadata", {"help": "a different meaning"})
    assert gen.updated(text) != text
    monkeypatch.setattr(field, "metadata", {})
    with pytest.raises(ValueError, match="EvalOptions.samples has no help metadata"):
        gen.render()


def test_stage_options_is_gone_from_code_and_docs():
    for path in [
        *(ROOT / "affectllm").rglob("*.py"),
        ROOT / "docs" / "training.md",
        ROOT / "recipes" / "README.md",
        *(ROOT / "recipes").rglob("*.yaml"),
    ]:
        assert "stage_options" not in path.read_text(), path


def test_cpu_recipes_train_in_float32_unless_they_ask_for_bf16(tmp_path):
    from affectllm.config import trainer_args

    out = tmp_path / "never"
    for stage in ("sft", "grpo"):
        text = GOOD.replace("stage: grpo", f"stage: {stage}")
        if stage == "sft":
            text = text.replace("  num_generations: 4\n", "")
        # TRL's own default is bf16 autocast, emulated (several times slower) on CPUs without bf16 units
        assert trainer_args(load_recipe(write(tmp_path, text), ["trainer.use_cpu=true"]), out).bf16 is False
        asked = load_recipe(write(tmp_path, text), ["trainer.use_cpu=true", "trainer.bf16=true"])
        assert trainer_args(asked, out).bf16 is True


def test_a_recipes_sft_mix_replaces_the_default_mix(tmp_path):
    # merged key by key, the tiny recipe's brief mix kept the default's describe 0.5 and au 0.1: 38% of its SFT rows
    # were long captions it was never meant to train on
    tiny = load_recipe(ROOT / "recipes/tiny/sft.yaml", ["trainer.use_cpu=true"])
    assert tiny.sft.mix == {"brief": 0.7, "ov_labels": 0.15, "single": 0.15}
    whole = load_recipe(ROOT / "recipes/tiny/sft.yaml", ["trainer.use_cpu=true", "sft.mix={single: 1.0}"])
    assert whole.sft.mix == {"single": 1.0}
    one_key = load_recipe(ROOT / "recipes/tiny/sft.yaml", ["trainer.use_cpu=true", "sft.mix.single=0.5"])
    assert one_key.sft.mix == {"brief": 0.7, "ov_labels": 0.15, "single": 0.5}


def test_an_override_can_index_into_a_list_and_a_bad_index_is_named():
    grpo = Path(__file__).parent.parent / "recipes" / "tiny" / "grpo.yaml"
    recipe = load_recipe(grpo, ["rewards.3.weight=0.0", "rewards.0.kwargs.level=level2"])
    assert [(r.name, r.weight) for r in recipe.rewards][3] == ("label_count_penalty", 0.0)
    assert recipe.rewards[0].kwargs["level"] == "level2" and recipe.rewards[1].weight == 1.0  # the rest kept
    with pytest.raises(RecipeError, match=r"rewards\.9\.weight.*rewards\[9\]"):
        load_recipe(grpo, ["rewards.9.weight=0.0"])
    with pytest.raises(RecipeError, match=r"rewards\[1\]\.weight"):
        load_recipe(grpo, ["rewards.1.weight=abc"])
