"""Typed recipe schema and :func:`load_recipe` (the only module that touches OmegaConf).

A recipe is YAML data validated against nested dataclasses: unknown keys and wrong types fail at load time with
the key's dotted path. ``key=value`` overrides from the command line are applied on top (``trainer.max_steps=3``,
``model.lora.r=8``). The ``trainer:`` block goes verbatim into TRL's ``SFTConfig``/``GRPOConfig``; it is checked
against that class's fields here, so a typo fails before any model loads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

STAGES = ("sft", "grpo", "calibrate")


class RecipeError(ValueError):
    """A recipe (or an override) does not fit the schema; the message names the file and key."""


@dataclass
class LoraConfig:
    """LoRA on the LLM only (PEFT). ``target_modules`` None = every linear layer of the LLM but the LM head."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | None = None


@dataclass
class ModelConfig:
    """What to build. A ``preset`` fills the defaults; any field set here overrides the preset.

    ``llm``, ``vision``, ``audio``, ``face`` take a hub id or a local directory (real backbones), ``init_from`` of
    the recipe takes precedence (a previous stage's output directory).
    """

    preset: str | None = "tiny"
    llm: str | None = None
    vision: str | None = None
    audio: str | None = None
    face: str | None = None
    au_feature_dim: int | None = None
    media_tokens: dict[str, int] = field(default_factory=dict)
    pooling: dict[str, str] = field(default_factory=dict)
    projector_depth: int | None = None
    prefusion: bool | None = None
    dtype: str = "float32"
    attn_implementation: str = "sdpa"
    train_encoders: bool = False
    llm_mode: str = "lora"
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class DataConfig:
    """Where the clips come from and how they are turned into model inputs."""

    manifest: str | None = None
    eval_manifest: str | None = None
    split: str | None = "train"
    num_frames: int = 8
    max_samples: int | None = None
    feature_cache: str | None = None


SFT_TASKS: tuple[str, ...] = ("describe", "ov_labels", "single", "au", "brief")
"""The SFT tasks (their questions and targets are in :mod:`affectllm.data.prompts`)."""


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class SftOptions:
    """Stage 1 (``sft:``): what the SFT examples are."""

    mix: dict[str, float] = field(
        default_factory=lambda: {"describe": 0.5, "ov_labels": 0.25, "single": 0.15, "au": 0.1},
        metadata=_help("task -> weight: each clip's SFT example is one task drawn with these weights (seeded); "
                       f"tasks: {', '.join(SFT_TASKS)}"))
    confidence: float = field(default=0.8, metadata=_help("the confidence written in SFT targets (0..1)"))
    max_length: int = field(default=1024, metadata=_help("longest prompt + target in tokens; longer rows are cut "
                                                         "from the end"))


@dataclass
class GrpoOptions:
    """Stages 2 and 3 (``grpo:``): how rollouts are built."""

    dedup_media: bool = field(default=True, metadata=_help(
        "process and encode each clip once per generation batch (a group shares one clip); false encodes every "
        "row (same results, G x the encoder work: a baseline for bench/grpo.py)"))


@dataclass
class CalibrateOptions:
    """Stage 3 (``calibrate:``): the post-hoc confidence map."""

    posthoc: str = field(default="isotonic", metadata=_help("post-hoc map fitted after the GRPO part: isotonic, "
                                                            "platt or none"))
    posthoc_split: str = field(default="val", metadata=_help("split the post-hoc map is fitted on (never the "
                                                             "evaluation split)"))
    posthoc_samples: int | None = field(default=128, metadata=_help("clips of posthoc_split used for the fit "
                                                                    "(null: all)"))


@dataclass
class EvalOptions:
    """End-of-stage evaluation (``eval:``), on held-out clips."""

    enabled: bool = field(default=True, metadata=_help("evaluate the saved model at the end of the stage"))
    split: str | None = field(default="test", metadata=_help("split scored (of data.eval_manifest, else "
                                                             "data.manifest); null skips the evaluation"))
    samples: int | None = field(default=64, metadata=_help("clips of that split scored, drawn with the recipe "
                                                           "seed (null: all)"))
    max_new_tokens: int = field(default=96, metadata=_help("longest completion generated per clip"))


@dataclass
class RewardSpec:
    """One reward term: a REWARDS registry name (or ``pkg.mod:fn``), its weight and keyword arguments."""

    name: str = MISSING
    weight: float = 1.0
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Recipe:
    """A training stage recipe (``recipes/<backbone>/<stage>.yaml``)."""

    stage: str = MISSING
    output_dir: str = MISSING
    init_from: str | None = None
    seed: int = 0
    resume: bool = False
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rewards: list[RewardSpec] = field(default_factory=list)
    trainer: dict[str, Any] = field(default_factory=dict)
    task: str = field(default="describe", metadata=_help(
        "the question of GRPO/calibration rollouts and of the evaluation: one of the SFT tasks, so the RL prompt "
        "is one the model was trained on"))
    max_bad_steps: int = field(default=10, metadata=_help("stop after this many steps with non-finite gradients "
                                                          "(each is skipped)"))
    sft: SftOptions = field(default_factory=SftOptions)
    grpo: GrpoOptions = field(default_factory=GrpoOptions)
    calibrate: CalibrateOptions = field(default_factory=CalibrateOptions)
    eval: EvalOptions = field(default_factory=EvalOptions)


def _trainer_class(stage: str) -> Any:
    """TRL's config class for a stage (imported lazily: loading a recipe for --help must stay cheap)."""
    if stage == "sft":
        from trl import SFTConfig

        return SFTConfig
    from trl import GRPOConfig

    return GRPOConfig


def check_trainer_keys(stage: str, trainer: dict[str, Any], source: str = "recipe") -> None:
    """Raise :class:`RecipeError` for keys of ``trainer`` that TRL's config class for ``stage`` does not have."""
    known = {f.name for f in dataclasses.fields(_trainer_class(stage))}
    unknown = sorted(set(trainer) - known)
    if unknown:
        raise RecipeError(f"{source}: trainer.{unknown[0]} is not an option of {_trainer_class(stage).__name__} "
                          f"(unknown: {', '.join(unknown)}); see TRL's docs for the valid keys")


def _validate(recipe: Recipe, source: str) -> None:
    if recipe.stage not in STAGES:
        raise RecipeError(f"{source}: stage={recipe.stage!r} must be one of {', '.join(STAGES)}")
    if recipe.model.llm_mode not in ("lora", "full", "frozen"):
        raise RecipeError(f"{source}: model.llm_mode={recipe.model.llm_mode!r} must be lora, full or frozen")
    if recipe.task not in SFT_TASKS:
        raise RecipeError(f"{source}: task={recipe.task!r} must be one of {', '.join(SFT_TASKS)}")
    unknown = sorted(set(recipe.sft.mix) - set(SFT_TASKS))
    if unknown:
        raise RecipeError(f"{source}: sft.mix.{unknown[0]} is not an SFT task (tasks: {', '.join(SFT_TASKS)})")
    if recipe.calibrate.posthoc not in ("isotonic", "platt", "none"):
        raise RecipeError(f"{source}: calibrate.posthoc={recipe.calibrate.posthoc!r} must be isotonic, platt or none")
    if recipe.stage != "sft" and recipe.rewards == []:
        raise RecipeError(f"{source}: stage {recipe.stage} needs at least one entry under rewards:")
    check_trainer_keys(recipe.stage, recipe.trainer, source)


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None,
                check_trainer: bool = True) -> Recipe:
    """Load a YAML recipe, apply ``key=value`` overrides, validate, and return the typed :class:`Recipe`.

    Raises:
        RecipeError: unknown key, wrong type, missing required key, bad stage, or unknown trainer option; the
            message names the file (or "override") and the dotted key.
    """
    source = str(path) if path else "recipe"
    schema = OmegaConf.structured(Recipe)
    try:
        merged = schema
        if path is not None:
            if not Path(path).is_file():
                raise RecipeError(f"{source}: no such recipe file")
            merged = OmegaConf.merge(merged, OmegaConf.load(path))
        merged = _apply_overrides(merged, overrides, "override", "trainer.max_steps=3")
        recipe = OmegaConf.to_object(merged)
    except RecipeError:
        raise
    except OmegaConfBaseException as err:
        raise RecipeError(f"{source}: {_short(err)}") from err
    assert isinstance(recipe, Recipe)
    if check_trainer:
        _validate(recipe, source)
    return recipe


def load_model_config(overrides: list[str] | None = None) -> ModelConfig:
    """A :class:`ModelConfig` from ``key=value`` items (``preset=tiny``, ``lora.r=8``), validated like a recipe."""
    merged = _apply_overrides(OmegaConf.structured(ModelConfig), overrides, "model option", "prefusion=false")
    return OmegaConf.to_object(merged)


def _apply_overrides(merged: Any, overrides: list[str] | None, label: str, example: str) -> Any:
    """Merge ``key=value`` items one by one so an error names the item that caused it."""
    for item in overrides or []:
        if "=" not in item:
            raise RecipeError(f"{label} {item!r}: expected key=value (e.g. {example})")
        try:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as err:
            raise RecipeError(f"{label} {item!r}: {_short(err)}") from err
    return merged


def _short(err: OmegaConfBaseException) -> str:
    """OmegaConf's message without its multi-line object dump, keeping the full key path."""
    msg = str(err).splitlines()[0]
    key = getattr(err, "full_key", None)
    return f"{msg} (key: {key})" if key and key not in msg else msg


def recipe_to_yaml(recipe: Recipe) -> str:
    """The resolved recipe as YAML (each stage saves it next to its outputs)."""
    return OmegaConf.to_yaml(OmegaConf.structured(recipe))
