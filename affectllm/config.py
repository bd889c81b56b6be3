"""Typed recipe schema and :func:`load_recipe` (the only module that touches OmegaConf).

A recipe is YAML data validated against nested dataclasses: unknown keys and wrong types fail at load time with
the key's dotted path. ``key=value`` overrides from the command line are applied on top (``trainer.max_steps=3``,
``model.lora.r=8``). The ``trainer:`` block goes into TRL's ``SFTConfig``/``GRPOConfig`` over the house defaults
(:func:`trainer_args`, the one builder of that config); it is built here, so a bad key or value fails before any
model loads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

STAGES = ("encoders", "sft", "grpo", "calibrate")


class RecipeError(ValueError):
    """A recipe (or an override) does not fit the schema; the message names the file and key."""


def _opt(default: Any, text: str) -> Any:
    """A recipe field with its ``help`` text (read by ``scripts/gen_recipe_docs.py`` for the docs table)."""
    return field(default=default, metadata={"help": text})


def _new(factory: Callable[[], Any], text: str) -> Any:
    """A recipe field built by ``factory`` (a dict, list or section), with its ``help`` text."""
    return field(default_factory=factory, metadata={"help": text})


@dataclass
class LoraConfig:
    """``model.lora:``: LoRA adapters on the LLM only (PEFT), used when ``model.llm_mode`` is ``lora``."""

    r: int = _opt(16, "adapter rank")
    alpha: int = _opt(32, "LoRA scaling numerator (the update is scaled by alpha / r)")
    dropout: float = _opt(
        0.05,
        "dropout on the adapters' input; RL stages switch dropout off anyway (trainer.disable_dropout, default true)",
    )
    target_modules: list[str] | None = _opt(
        None, "module names that get adapters; null: every linear layer of the LLM except the LM head"
    )


@dataclass
class ModelConfig:
    """``model:``: what to build. A ``preset`` fills the defaults; any field set here overrides the preset.

    ``llm``, ``vision``, ``audio``, ``face`` take a hub id or a local directory (real backbones); ``init_from`` of
    the recipe takes precedence (a previous stage's output directory).
    """

    preset: str | None = _opt(
        "tiny", "tiny or smollm2-135m (docs/model.md); null: every part comes from the fields below"
    )
    llm: str | None = _opt(None, "LLM backbone: hub id or local directory")
    vision: str | None = _opt(None, "video tower: hub id, local directory or none")
    audio: str | None = _opt(None, "audio tower: hub id, local directory or none")
    face: str | None = _opt(None, "face-crop tower: hub id, local directory or none")
    words: str | None = _opt(
        None, "words tower over the transcript: builtin:tiny (a bag of the LLM tokenizer's tokens, trained in stage "
        "0) or none (the LLM reads the transcript only as prompt text); null: the preset's (docs/model.md)"
    )
    au_feature_dim: int | None = _opt(
        None, "width of the AU vectors from data prep (types.AU_FEATURE_DIM); null: the preset's"
    )
    media_tokens: dict[str, int] = _new(
        dict, "modality -> LLM tokens per clip after pooling (e.g. {video: 16}); unset modalities keep the preset's"
    )
    pooling: dict[str, str] = _new(
        dict, "modality -> pooler name (POOLERS registry); unset modalities keep the preset's"
    )
    spatial_pooling: dict[str, str] = _new(
        dict,
        "video/face -> how a vision tower pools each frame's patches: grid (a spatial_grid x spatial_grid grid of "
        "patch means, concatenated; the default), cls or mean; unset modalities keep the preset's (docs/model.md)",
    )
    spatial_grid: int | None = _opt(None, "cells per side of the grid pooling (2: a 2x2 grid); null: the preset's")
    projector_depth: int | None = _opt(None, "MLP layers of each projector into the LLM; null: the preset's")
    projector_norm: list[str] | None = _opt(
        None, "modalities whose projector starts with a LayerNorm over the tower features; null: the preset's"
    )
    readout: list[str] | None = _opt(
        None,
        "video/audio/face/words whose projector also reads the tower's stage 0 head outputs (AU, emotion, "
        "valence/arousal probabilities) beside its features; null: the preset's (docs/model.md)",
    )
    prefusion: bool | None = _opt(
        None, "attention pre-fusion of video and audio tokens before the LLM; null: the preset's"
    )
    dtype: str = _opt("float32", "dtype the model is built or loaded in (float32, bfloat16, float16)")
    attn_implementation: str = _opt(
        "sdpa", "attention kernel of the LLM: sdpa, eager or flash_attention_2 (needs pip install '.[gpu]')"
    )
    train_encoders: bool = _opt(
        False,
        "train the video/audio/face/words towers too (false: frozen; projectors, poolers, pre-fusion and the AU "
        "encoder always train)",
    )
    llm_mode: str = _opt("lora", "how the LLM trains: lora (adapters, merged on save), full or frozen")
    lora: LoraConfig = _new(LoraConfig, "LoRA options (llm_mode: lora)")


@dataclass
class DataConfig:
    """``data:``: where the clips come from and how they are turned into model inputs."""

    manifest: str | None = _opt(None, "the training manifest (JSONL, DESIGN.md §3)")
    eval_manifest: str | None = _opt(None, "manifest of the end-of-stage evaluation; null: data.manifest")
    split: str | None = _opt("train", "split trained on; null: every clip")
    num_frames: int = _opt(8, "video frames sampled per clip")
    max_samples: int | None = _opt(None, "clips of the split used, drawn with the recipe seed; null: all")
    feature_cache: str | None = _opt(
        None,
        "folder of `affectllm data prep`: frames, face crops, AU vectors (and frozen-tower features); null: clips "
        "are decoded live (no faces or AUs)",
    )


SFT_TASKS: tuple[str, ...] = ("describe", "ov_labels", "single", "au", "brief")
"""The SFT tasks (their questions and targets are in :mod:`affectllm.data.prompts`)."""


@dataclass
class EncodersOptions:
    """Stage 0 (``encoders:``): how ``confidence.jsonl`` is made."""

    confidence_folds: int = _opt(
        2,
        "cross-fitting: the training clips are split in this many folds and each fold's confidence comes from "
        "towers trained without it (max_steps // folds steps each; the towers the stage saves train on every clip). "
        "In-sample certainty overstates how sure the towers are of a new clip (EmoWorld: mean 0.76 in-sample, 0.56 "
        "out of fold); 1: in-sample",
    )
    confidence_scale: str = _opt(
        "probability",
        "what confidence.jsonl says: probability (the heads' top-emotion probability) or rank (its quantile among "
        "the training clips, in 0.05..0.95: the same order with every level equally often, so SFT targets do not pile "
        "up at one value; calibration's post-hoc map turns the stated rank into a probability)",
    )


@dataclass
class SftOptions:
    """Stage 1 (``sft:``): what the SFT examples are."""

    mix: dict[str, float] = _new(
        lambda: {"describe": 0.5, "ov_labels": 0.25, "single": 0.15, "au": 0.1},
        "task -> weight: each clip's SFT example is one task drawn with these weights (seeded); "
        f"tasks: {', '.join(SFT_TASKS)}; a recipe's mix replaces this one whole (sft.mix.<task>=w changes one)",
    )
    confidence: float = _opt(0.8, "the confidence written in SFT targets (0..1) of clips confidence_file lacks")
    confidence_file: str | None = _opt(
        None,
        "JSONL of {id, confidence} per clip, the target confidence of its SFT example (the encoders stage writes "
        "confidence.jsonl: its heads' certainty); null: every target says sft.confidence",
    )
    max_length: int = _opt(1024, "longest prompt + target in tokens; longer rows are cut from the end")


@dataclass
class GrpoOptions:
    """Stages 2 and 3 (``grpo:``): how rollouts are built."""

    dedup_media: bool = _opt(
        True,
        "process and encode each clip once per generation batch (a group shares one clip); false encodes every "
        "row (same results, G x the encoder work: a baseline for bench/grpo.py)",
    )
    prefill_once: bool = _opt(
        True,
        "rollouts run each clip's prompt through the LLM once and copy its KV cache to the G rows of its group "
        "(needs dedup_media; same completions as false, which prefills all G copies: a baseline for bench/grpo.py)",
    )
    loss_tokens: str = _opt(
        "all",
        "completion tokens the policy loss covers: all, or confidence (only the tokens after </answer>; a row "
        "whose answer never closes keeps all of them): calibration then trains the stated confidence and leaves "
        "the answers it judges alone",
    )


@dataclass
class CalibrateOptions:
    """Stage 3 (``calibrate:``): the post-hoc confidence map."""

    posthoc: str = _opt("isotonic", "post-hoc map fitted after the GRPO part: isotonic, platt or none")
    posthoc_split: str = _opt("val", "split the post-hoc map is fitted on (never the evaluation split)")
    posthoc_samples: int | None = _opt(128, "clips of posthoc_split used for the fit (null: all)")
    posthoc_input: str = _opt("stated", "what the map reads: stated (the confidence the LLM wrote) or evidence "
                              "(the answer's probability under the towers' readouts, the words tower's or else a "
                              "transcript readout among them)")


@dataclass
class EvalOptions:
    """End-of-stage evaluation (``eval:``), on held-out clips."""

    enabled: bool = _opt(True, "evaluate the saved model at the end of the stage")
    split: str | None = _opt(
        "test", "split scored (of data.eval_manifest, else data.manifest); null skips the evaluation"
    )
    samples: int | None = _opt(64, "clips of that split scored, drawn with the recipe seed (null: all)")
    max_new_tokens: int = _opt(96, "longest completion generated per clip")


@dataclass
class RewardSpec:
    """One entry of ``rewards:``: a reward term of the GRPO/calibration objective."""

    name: str = _opt(
        MISSING, "a REWARDS registry name (ew, au, format, label_count_penalty, length, calibration) or pkg.mod:fn"
    )
    weight: float = _opt(1.0, "its weight in the summed reward (trainer.reward_weights)")
    kwargs: dict[str, Any] = _new(dict, "keyword options bound to the reward (checked when the trainer is built)")


@dataclass
class Recipe:
    """A training stage recipe (``recipes/<backbone>/<stage>.yaml``)."""

    stage: str = _opt(MISSING, "encoders, sft, grpo or calibrate")
    output_dir: str = _opt(MISSING, "where the stage writes its checkpoints, logs, final model and evaluation")
    init_from: str | None = _opt(None, "a previous stage's output directory to start from; null: build from model:")
    seed: int = _opt(
        0, "seed of the model build, the SFT task draw, clip sampling and TRL (trainer seed and data_seed)"
    )
    resume: bool = _opt(False, "continue from the newest checkpoint-N/ in output_dir")
    model: ModelConfig = _new(ModelConfig, "the model (table model.*)")
    data: DataConfig = _new(DataConfig, "the clips (table data.*)")
    rewards: list[RewardSpec] = _new(
        list, "reward terms of grpo and calibrate (table rewards[].*); required there, ignored by sft"
    )
    trainer: dict[str, Any] = _new(
        dict,
        "options of TRL's SFTConfig (sft) or GRPOConfig (grpo, calibrate), over the house defaults of "
        "config.trainer_args; built at load, so a bad key or value fails before any model loads",
    )
    task: str = _opt(
        "describe",
        "the question of GRPO/calibration rollouts and of the evaluation: one of the SFT tasks, so the RL prompt "
        "is one the model was trained on",
    )
    max_bad_steps: int = _opt(10, "stop after this many optimizer steps with non-finite gradients (each is skipped)")
    encoders: EncodersOptions = _new(EncodersOptions, "stage 0's confidence targets (table encoders.*)")
    sft: SftOptions = _new(SftOptions, "SFT examples (table sft.*)")
    grpo: GrpoOptions = _new(GrpoOptions, "GRPO rollouts (table grpo.*)")
    calibrate: CalibrateOptions = _new(CalibrateOptions, "the post-hoc confidence map (table calibrate.*)")
    eval: EvalOptions = _new(EvalOptions, "the end-of-stage evaluation (table eval.*)")


# The house defaults of TRL's config, stated here and nowhere else; a recipe's ``trainer:`` block overrides any of
# them. Every stage logs each step to TensorBoard and metrics.jsonl; activation checkpointing is off (TRL turns it
# on by default; the small recipes do not need it and it slows a step).
TRAINER_DEFAULTS: dict[str, Any] = {"logging_steps": 1, "report_to": ["tensorboard"], "gradient_checkpointing": False}
# RL stages: sampling and scoring must see the same network (dropout would make them differ), and a completion cut
# at max_completion_length is left out of the loss, so a truncated answer earns nothing from its reward.
RL_TRAINER_DEFAULTS: dict[str, Any] = {"disable_dropout": True, "mask_truncated_completions": True}
# Set by affectllm from elsewhere in the recipe (a ``trainer:`` key of the same name is refused): the datasets carry
# extra columns the collator and the rewards need, and SFT rows are already model inputs.
_SET_ELSEWHERE = {
    "output_dir": "output_dir",
    "seed": "seed",
    "data_seed": "seed",
    "remove_unused_columns": "(always false: the rows carry columns the collator and rewards read)",
    "reward_weights": "rewards[].weight",
    "dataset_kwargs": "(set by the SFT stage)",
}


def _trainer_class(stage: str) -> Any:
    """TRL's config class for a stage (imported lazily: loading a recipe for --help must stay cheap); the encoders
    stage is a plain ``Trainer`` (transformers' ``TrainingArguments``)."""
    if stage == "encoders":
        from transformers import TrainingArguments

        return TrainingArguments
    if stage == "sft":
        from trl import SFTConfig

        return SFTConfig
    from trl import GRPOConfig

    return GRPOConfig


def trainer_args(recipe: Recipe, output_dir: str | Path) -> Any:
    """TRL's ``SFTConfig`` (stage sft) or ``GRPOConfig`` (grpo, calibrate) of a recipe: the one place it is built.

    The house defaults (:data:`TRAINER_DEFAULTS`, and :data:`RL_TRAINER_DEFAULTS` for the RL stages) go under the
    recipe's ``trainer:`` block; ``seed``/``data_seed`` come from ``recipe.seed``, ``reward_weights`` from
    ``rewards[].weight``. Nothing is written to ``output_dir``.

    Raises:
        RecipeError: a ``trainer:`` key TRL does not have, one affectllm sets itself, ``use_vllm: true``, or a value
            TRL's ``__post_init__`` refuses; the message names ``trainer.<key>``.
    """
    cls = _trainer_class(recipe.stage)
    _check_trainer_keys(cls, recipe.trainer)
    if recipe.trainer.get("use_vllm"):
        raise RecipeError(
            "trainer.use_vllm: vLLM generation does not carry video/audio/face/AU inputs yet; remove "
            "it (generation runs through the model's own generate)"
        )
    fixed: dict[str, Any] = {
        "output_dir": str(output_dir),
        "seed": recipe.seed,
        "data_seed": recipe.seed,
        "remove_unused_columns": False,
    }
    if recipe.stage == "encoders":
        defaults = TRAINER_DEFAULTS
    elif recipe.stage == "sft":
        defaults = TRAINER_DEFAULTS
        fixed["dataset_kwargs"] = {"skip_prepare_dataset": True}  # the collator builds the model inputs
    else:
        defaults = {**TRAINER_DEFAULTS, **RL_TRAINER_DEFAULTS}
        fixed["reward_weights"] = [float(r.weight) for r in recipe.rewards]
    kwargs = {**defaults, **recipe.trainer, **fixed}
    if kwargs.get("use_cpu") and "bf16" not in recipe.trainer:
        # TRL's SFTConfig/GRPOConfig default to bf16 autocast; on a CPU without bf16 units (AVX-512 BF16, AMX) that
        # is emulated: a tiny SFT step took 5-9 s instead of 1.3 s in float32 (2-core AMD EPYC, AVX2 only)
        kwargs["bf16"] = False
    try:
        return _build_quietly(cls, kwargs)
    except (ValueError, TypeError) as err:
        key = _culprit(cls, kwargs, list(recipe.trainer))
        where = f"trainer.{key}" if key else "trainer"
        raise RecipeError(f"{where}: {cls.__name__} refuses it: {err}") from err


def _build_quietly(cls: Any, kwargs: dict[str, Any]) -> Any:
    """``cls(**kwargs)`` without TRL/transformers' deprecation chatter (the stage's own build shows it once)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return cls(**kwargs)


def _culprit(cls: Any, kwargs: dict[str, Any], keys: list[str]) -> str | None:
    """The recipe key without which TRL's ``__post_init__`` accepts the config (its messages rarely name one)."""
    for key in keys:
        try:
            _build_quietly(cls, {k: v for k, v in kwargs.items() if k != key})
        except (ValueError, TypeError):
            continue
        return key
    return None


def _check_trainer_keys(cls: Any, trainer: dict[str, Any]) -> None:
    """Refuse keys of ``trainer`` that TRL's config class does not have, or that affectllm sets itself."""
    unknown = sorted(set(trainer) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise RecipeError(
            f"trainer.{unknown[0]} is not an option of {cls.__name__} (unknown: {', '.join(unknown)}); "
            "see TRL's docs for the valid keys"
        )
    clash = sorted(set(trainer) & set(_SET_ELSEWHERE))
    if clash:
        raise RecipeError(f"trainer.{clash[0]} is set by affectllm, not in trainer: (use {_SET_ELSEWHERE[clash[0]]})")


def checked_trainer_args(recipe: Recipe) -> Any:
    """Build the recipe's TRL config as the stage will (:func:`trainer_args`) and return it; no file is written.

    A recipe for GPUs cannot be built on a machine without CUDA (TRL then refuses ``bf16``, which GRPOConfig turns on
    by default): there ``bf16``/``fp16`` are checked to be booleans and the rest of the block is built with
    ``use_cpu``; the stage builds the config again, unchanged, on the machine that trains.
    """
    import torch
    from transformers.integrations import unset_hf_deepspeed_config

    trainer = dict(recipe.trainer)
    if not torch.cuda.is_available():
        for key in ("bf16", "fp16"):
            if trainer.get(key) is not None and not isinstance(trainer[key], bool):
                raise RecipeError(f"trainer.{key}={trainer[key]!r} must be true or false")
            trainer.pop(key, None)
        trainer["use_cpu"] = True
    args = trainer_args(dataclasses.replace(recipe, trainer=trainer), recipe.output_dir)
    # A `deepspeed:` key registers the DeepSpeed config process-wide; the check must leave no trace, or the model
    # would be built under zero.Init before the stage's own config exists.
    if args.deepspeed:
        unset_hf_deepspeed_config()
    return args


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
    if recipe.encoders.confidence_folds < 1:
        raise RecipeError(f"{source}: encoders.confidence_folds={recipe.encoders.confidence_folds} must be >= 1")
    if recipe.encoders.confidence_scale not in ("probability", "rank"):
        raise RecipeError(f"{source}: encoders.confidence_scale={recipe.encoders.confidence_scale!r} must be "
                          "probability or rank")
    if recipe.grpo.loss_tokens not in ("all", "confidence"):
        raise RecipeError(f"{source}: grpo.loss_tokens={recipe.grpo.loss_tokens!r} must be all or confidence")
    if recipe.calibrate.posthoc not in ("isotonic", "platt", "none"):
        raise RecipeError(f"{source}: calibrate.posthoc={recipe.calibrate.posthoc!r} must be isotonic, platt or none")
    if recipe.calibrate.posthoc_input not in ("stated", "evidence"):
        raise RecipeError(f"{source}: calibrate.posthoc_input={recipe.calibrate.posthoc_input!r} must be stated or "
                          "evidence")
    if recipe.stage in ("grpo", "calibrate") and recipe.rewards == []:
        raise RecipeError(f"{source}: stage {recipe.stage} needs at least one entry under rewards:")


def load_recipe(
    path: str | Path | None = None, overrides: list[str] | None = None, check_trainer: bool = True
) -> Recipe:
    """Load a YAML recipe, apply ``key=value`` overrides, validate, and return the typed :class:`Recipe`.

    With ``check_trainer`` (the default) the ``trainer:`` block is built into TRL's config
    (:func:`checked_trainer_args`), so bad keys and bad values fail here, before any model loads;
    ``check_trainer=False`` skips only that (and TRL's import), e.g. to read the ``recipe.yaml`` saved beside a
    trained model.

    Raises:
        RecipeError: unknown key, wrong type, missing required key, bad stage, or a ``trainer:`` key or value TRL
            refuses; the message names the file (or "override") and the dotted key.
    """
    source = str(path) if path else "recipe"
    schema = OmegaConf.structured(Recipe)
    try:
        merged = schema
        if path is not None:
            if not Path(path).is_file():
                raise RecipeError(f"{source}: no such recipe file")
            loaded = OmegaConf.load(path)
            merged = OmegaConf.merge(_clear_replaced(merged, loaded), loaded)
        merged = _apply_overrides(merged, overrides, "override", "trainer.max_steps=3")
        recipe = OmegaConf.to_object(merged)
    except RecipeError:
        raise
    except OmegaConfBaseException as err:
        raise RecipeError(f"{source}: {_short(err)}") from err
    assert isinstance(recipe, Recipe)
    _validate(recipe, source)
    if check_trainer:
        try:
            checked_trainer_args(recipe)
        except RecipeError as err:
            raise RecipeError(f"{source}: {err}") from err
    return recipe


def load_model_config(overrides: list[str] | None = None) -> ModelConfig:
    """A :class:`ModelConfig` from ``key=value`` items (``preset=tiny``, ``lora.r=8``), validated like a recipe."""
    merged = _apply_overrides(OmegaConf.structured(ModelConfig), overrides, "model option", "prefusion=false")
    return OmegaConf.to_object(merged)


REPLACED: tuple[str, ...] = ("sft.mix",)
"""Mappings a recipe gives whole: its value replaces the default instead of merging into it key by key (a mix of
``{brief: 0.7, single: 0.3}`` merged into the default would keep the default's ``describe: 0.5``). A dotted item
(``sft.mix.brief=0.5``) still changes one key."""


def _clear_replaced(merged: Any, given: Any, item_key: str | None = None) -> Any:
    """``merged`` with every :data:`REPLACED` mapping that ``given`` sets whole emptied, so the merge takes
    ``given``'s (an override item sets it whole only when its key is the mapping's own: ``item_key``)."""
    for key in REPLACED:
        if OmegaConf.select(given, key, default=None) is None or item_key not in (None, key):
            continue
        merged = OmegaConf.merge(merged)  # a copy: the caller's config stays as it was
        OmegaConf.update(merged, key, {}, merge=False)
    return merged


def _apply_overrides(merged: Any, overrides: list[str] | None, label: str, example: str) -> Any:
    """Merge ``key=value`` items one by one so an error names the item that caused it."""
    for item in overrides or []:
        if "=" not in item:
            raise RecipeError(f"{label} {item!r}: expected key=value (e.g. {example})")
        key = item.split("=", 1)[0].strip()
        try:
            given = OmegaConf.from_dotlist([item])
            if _through_list(merged, key):  # rewards.1.weight=0: an index into a list, set in place
                merged = merged.copy()
                OmegaConf.update(merged, key, OmegaConf.select(given, key), merge=True)
            else:
                merged = OmegaConf.merge(_clear_replaced(merged, given, key), given)
        except OmegaConfBaseException as err:
            raise RecipeError(f"{label} {item!r}: {_short(err)}") from err
    return merged


def _through_list(merged: Any, key: str) -> bool:
    """Whether the dotted ``key`` passes through a list of ``merged`` (``rewards.1.weight``)."""
    parts = key.split(".")
    for n in range(1, len(parts)):
        node = OmegaConf.select(merged, ".".join(parts[:n]), throw_on_missing=False)
        if isinstance(node, ListConfig):
            return True
    return False


def _short(err: OmegaConfBaseException) -> str:
    """OmegaConf's message without its multi-line object dump, keeping the full key path."""
    msg = str(err).splitlines()[0]
    key = getattr(err, "full_key", None)
    return f"{msg} (key: {key})" if key and key not in msg else msg


def recipe_to_yaml(recipe: Recipe) -> str:
    """The resolved recipe as YAML (each stage saves it next to its outputs)."""
    return OmegaConf.to_yaml(OmegaConf.structured(recipe))
