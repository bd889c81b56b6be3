"""Every shipped recipe is runnable as written: its command, its TRL config, its rewards, its stage chain, and the
accelerate / DeepSpeed files the multi-GPU recipes launch with.

``tests/test_config.py`` already loads each recipe and checks that its first line is a comment; this file goes
further: it parses that first-line command and loads the recipe *with its overrides*, builds TRL's config through
the stages' own builder (``config.trainer_args``, via ``checked_trainer_args``: on a machine without CUDA a
``bf16: true`` block is built on CPU) and checks the house defaults landed, binds and calls each reward, and checks
that ``init_from`` chains stage to stage.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml

from affectllm.config import RL_TRAINER_DEFAULTS, TRAINER_DEFAULTS, Recipe, checked_trainer_args, load_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPE_DIR = ROOT / "recipes"
LAUNCH_DIRS = ("accelerate", "deepspeed")
RECIPES = sorted(p for p in RECIPE_DIR.rglob("*.yaml") if not set(LAUNCH_DIRS) & set(p.parts))
ACCELERATE = sorted((RECIPE_DIR / "accelerate").glob("*.yaml"))
DEEPSPEED = sorted((RECIPE_DIR / "deepspeed").glob("*.json"))
STAGE_ORDER = ("sft", "grpo", "calibrate")
# Recipes say gradient_checkpointing, the name every transformers 5.x accepts (pyproject allows >=5.0); recent
# releases renamed it activation_checkpointing and warn on the old name.
pytestmark = pytest.mark.filterwarnings("ignore:`gradient_checkpointing.*deprecated:FutureWarning")


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def first_line_command(path: Path) -> tuple[str, list[str]]:
    """(recipe path, key=value overrides) of the ``# affectllm train PATH k=v ...`` line a recipe starts with."""
    words = shlex.split(path.read_text().splitlines()[0].lstrip("#"))
    assert words[:2] == ["affectllm", "train"], f"{rel(path)}: first line must be `# affectllm train {rel(path)} ...`"
    return words[2], words[3:]


@pytest.fixture(scope="module")
def loaded() -> dict[Path, Recipe]:
    return {p: load_recipe(p) for p in RECIPES}


def test_recipes_exist_for_every_backbone_and_stage():
    for backbone in ("tiny", "smollm2-135m", "qwen2.5-7b"):
        for stage in STAGE_ORDER:
            assert (RECIPE_DIR / backbone / f"{stage}.yaml").is_file(), f"missing recipes/{backbone}/{stage}.yaml"


@pytest.mark.parametrize("path", RECIPES, ids=rel)
def test_first_line_command_names_this_file_and_loads_with_its_overrides(path, loaded):
    target, overrides = first_line_command(path)
    assert target == rel(path), f"{rel(path)}: its command trains {target}"
    recipe = load_recipe(ROOT / target, overrides)
    base = loaded[path]
    # The command restates the recipe's own paths (it is the copy-paste line): it must not contradict them.
    assert recipe.output_dir == base.output_dir and recipe.init_from == base.init_from
    assert recipe.data.manifest == base.data.manifest and recipe.stage == path.stem.split("-")[0]


@pytest.mark.parametrize("path", RECIPES, ids=rel)
def test_trainer_block_builds_the_trl_config(path, loaded):
    recipe = loaded[path]
    args = checked_trainer_args(recipe)
    expected = {"sft": "SFTConfig", "encoders": "TrainingArguments"}.get(recipe.stage, "GRPOConfig")
    assert type(args).__name__ == expected
    for key, value in recipe.trainer.items():
        if key not in ("bf16", "use_cpu", "gradient_checkpointing", "gradient_checkpointing_kwargs"):
            assert getattr(args, key) == value or isinstance(value, (list, dict)), key
    defaults = {**TRAINER_DEFAULTS, **(RL_TRAINER_DEFAULTS if recipe.stage in ("grpo", "calibrate") else {})}
    for key, value in defaults.items():
        if key not in recipe.trainer:
            assert getattr(args, key) == value, f"{rel(path)}: house default {key}={value} did not land"
    assert args.seed == args.data_seed == recipe.seed and args.remove_unused_columns is False
    assert args.output_dir == recipe.output_dir
    if recipe.stage == "sft":
        assert args.dataset_kwargs == {"skip_prepare_dataset": True}
    elif recipe.stage != "encoders":
        assert args.reward_weights == [r.weight for r in recipe.rewards]
        # A generation batch must hold whole groups on every process count (TRL checks the global one only).
        per_process = args.per_device_train_batch_size * args.gradient_accumulation_steps
        assert per_process % args.num_generations == 0, f"{rel(path)}: batch {per_process} vs G={args.num_generations}"


@pytest.mark.parametrize("path", [p for p in RECIPES if "qwen" not in p.parent.name], ids=rel)
def test_cpu_recipes_run_on_cpu(path, loaded):
    """tiny and smollm2 are the CPU recipes: they must not ask for a GPU-only setting."""
    trainer = loaded[path].trainer
    assert trainer.get("use_cpu") is True and not trainer.get("bf16") and not trainer.get("fp16")
    assert loaded[path].model.attn_implementation != "flash_attention_2"


@pytest.mark.parametrize("path", [p for p in RECIPES if p.parent.name == "qwen2.5-7b"], ids=rel)
def test_gpu_recipes_match_their_model_and_precision(path, loaded):
    from affectllm.media.aus import FEATURE_DIM

    recipe = loaded[path]
    assert recipe.model.preset is None, "real backbones must not inherit the tiny preset's encoders"
    assert recipe.model.dtype == "bfloat16" and recipe.trainer.get("bf16") is True
    assert recipe.model.au_feature_dim == FEATURE_DIM, "au_feature_dim must equal affectllm.media.aus.FEATURE_DIM"
    assert recipe.data.feature_cache, "faces and AU features come only from `affectllm data prep`"
    assert "use_cpu" not in recipe.trainer


def test_model_blocks_resolve(loaded):
    """Presets exist and the field overlay works (no weights are loaded)."""
    from affectllm.model.build import resolve

    for path, recipe in loaded.items():
        r = resolve(recipe.model)
        assert r.llm, rel(path)


@pytest.mark.parametrize("path", [p for p in RECIPES if "rewards:" in p.read_text()], ids=rel)
def test_rewards_bind_and_score_a_completion(path, loaded):
    from affectllm.rewards import make_reward

    recipe = loaded[path]
    good = (
        "<think>AU6 cheek raiser and AU12 lip corner puller; a bright voice.</think>"
        "<answer>happy</answer><confidence>0.8</confidence>"
    )
    # the dataset columns, plus what TRL passes every reward (completion_ids)
    columns = {"labels": [["happy"]], "emotion": ["happy"], "aus": [["AU6", "AU12"]], "completion_ids": [[1, 2, 3]]}
    for spec in recipe.rewards:
        fn = make_reward(spec.name, **spec.kwargs)  # unknown option -> TypeError
        values = fn([good], **columns)  # a bad option *value* (score: brieer) raises here
        assert len(values) == 1 and (values[0] is None or isinstance(values[0], float)), (spec.name, values)
        assert spec.weight > 0, f"{rel(path)}: reward {spec.name} has weight {spec.weight}"
    if recipe.stage == "calibrate":
        assert recipe.rewards[0].name == "calibration"


def test_stages_chain_through_init_from(loaded):
    """Within a backbone folder, grpo starts from sft's output and calibrate from grpo's (variants excluded)."""
    by_dir: dict[Path, dict[str, Recipe]] = {}
    for path, recipe in loaded.items():
        if path.stem in STAGE_ORDER:
            by_dir.setdefault(path.parent, {})[path.stem] = recipe
    for folder, stages in by_dir.items():
        assert stages["sft"].init_from is None, f"{folder.name}/sft starts from the backbone"
        assert stages["grpo"].init_from == stages["sft"].output_dir, folder.name
        assert stages["calibrate"].init_from == stages["grpo"].output_dir, folder.name
        assert len({s.output_dir for s in stages.values()}) == 3, f"{folder.name}: stages share an output_dir"
    outputs = [r.output_dir for r in loaded.values()]
    assert len(outputs) == len(set(outputs)), "two recipes write to the same output_dir"


def test_calibrate_options_are_the_ones_the_stage_reads(loaded):
    for path, recipe in loaded.items():
        if recipe.stage == "calibrate":
            assert recipe.calibrate.posthoc in ("isotonic", "platt", "none"), rel(path)
            assert recipe.calibrate.posthoc_split and recipe.calibrate.posthoc_split != recipe.eval.split, rel(path)


@pytest.mark.parametrize("path", ACCELERATE, ids=rel)
def test_accelerate_config_parses_and_names_an_existing_deepspeed_file(path):
    from accelerate.commands.config.config_args import load_config_from_file

    raw = yaml.safe_load(path.read_text())
    config = load_config_from_file(str(path))  # accelerate's own loader: unknown keys fail here
    assert path.read_text().startswith("# accelerate launch --config_file " + rel(path))
    assert config.mixed_precision in (None, "no"), "precision belongs to the recipe (trainer.bf16)"
    if path.stem == "ddp":
        assert raw["distributed_type"] == "MULTI_GPU" and not raw.get("use_cpu")
        return
    assert raw["distributed_type"] == "DEEPSPEED"
    ds_file = raw["deepspeed_config"]["deepspeed_config_file"]
    assert not Path(ds_file).is_absolute(), "paths are relative to the repository root"
    assert (ROOT / ds_file).is_file(), f"{rel(path)} names {ds_file}, which does not exist"
    assert json.loads((ROOT / ds_file).read_text())["zero_optimization"]["stage"] == int(path.stem[-1])


def test_every_deepspeed_file_is_used():
    configs = [yaml.safe_load(p.read_text()) for p in ACCELERATE]
    named = {c.get("deepspeed_config", {}).get("deepspeed_config_file") for c in configs}
    assert {rel(p) for p in DEEPSPEED} <= named


@pytest.mark.parametrize("path", DEEPSPEED, ids=rel)
def test_deepspeed_config_has_its_stage_and_lets_the_trainer_fill_it(path, tmp_path):
    from trl import SFTConfig

    config = json.loads(path.read_text())
    stage = int(path.stem.removeprefix("zero"))
    assert config["zero_optimization"]["stage"] == stage
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping"):
        assert config[key] == "auto", f"{key}: let the HF Trainer fill it from trainer:, or the two disagree"
    assert config["bf16"]["enabled"] == "auto"
    if stage == 3:
        assert config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    # transformers resolves the "auto" values against a config like the recipes' (no DeepSpeed engine is started).
    args = SFTConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        deepspeed=str(path),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        max_grad_norm=1.0,
    )
    resolved = args.hf_deepspeed_config.config
    assert resolved["train_micro_batch_size_per_gpu"] == 4 and resolved["gradient_accumulation_steps"] == 2
    assert args.hf_deepspeed_config.is_zero3() == (stage == 3)
