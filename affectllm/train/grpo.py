"""Stage 2: GRPO with emotion-wheel, AU, format and length rewards (a thin subclass of TRL's ``GRPOTrainer``).

The algorithm is TRL's GRPO, untouched; the recipes choose its variant. The shipped recipes run DAPO-style GRPO:
``loss_type: dapo`` (token-level normalisation over the whole batch), ``scale_rewards: group`` (each completion's
advantage is its reward minus its group's mean, over the group's std), ``num_generations`` 4 (tiny, SmolLM2) or 8
(7B) completions per clip at ``temperature`` 1.0, and one optimizer step per generation batch, so the importance
ratio is 1 and training is on-policy. ``beta: 0.0`` (tiny, SmolLM2: no reference model, no KL) or ``beta: 0.04``
with the clip-higher range ``epsilon`` 0.2 / ``epsilon_high`` 0.28 (7B: k3 KL to the adapters-off model under
LoRA). The reward is the weighted sum of the recipe's rewards (``reward_weights``).

TRL 1.16 carries images only, so :class:`AffectGRPOTrainer` overrides the five places where media or rollouts
matter, each pinned to the TRL lines it mirrors (a TRL bump is then a reviewable diff):

* ``_tokenize_prompts`` (mirrors trl==1.16.0 trl/trainer/grpo_trainer.py:1684): the dataset prompts are already the
  chat-templated text with the placeholders of the clip's media; they go through the processor with the media of
  their clips, each clip processed (and its frozen towers encoded) once per generation batch;
* ``_generate_and_score_completions`` (:2324): names the batch's clips for ``_tokenize_prompts`` and attaches the
  per-row media and ids to TRL's batch, so its shuffle and split keep them aligned with the rows;
* ``_compute_loss`` (:3020): scores a micro-batch with its own media and records its ids (``last_loss_ids``);
* ``_get_per_token_logps_and_entropies`` (:1419): TRL's own implementation (fused LM head, ``cast_lm_head_to_fp32``,
  entropy with gradient, MoE aux loss) per chunk, with the chunk's media as extra model inputs;
* ``_generate_single_turn`` (:1763): TRL's own rollout, with the policy's ``generate`` made prefill-once
  (:func:`~affectllm.model.generation.generate_shared`: a group's prompt runs through the LLM once, its KV cache
  copied to the G rows) on the transformers path (``grpo.prefill_once``).

Rows travel by clip id: the dataset holds ``prompt``, ``id``, ``question`` and the reward columns; the trainer keeps
an id -> :class:`~affectllm.types.Clip` index.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import is_peft_model
from transformers.integrations import is_deepspeed_zero3_enabled
from trl import GRPOConfig, GRPOTrainer

from ..config import Recipe, trainer_args
from ..data.manifest import select_clips
from ..data.prompts import QUESTIONS
from ..inputs.collate import build_prompt_inputs, media_kwargs, present_modalities
from ..inputs.store import ClipStore
from ..model.generation import prefill_once_generation
from ..parsing import answer_end, completion_text, parse_completion
from ..rewards import make_reward
from ..rewards.common import check_columns, declared_columns, reward_columns
from ..types import MODALITY_TABLE, Clip
from .callbacks import MetricsLogger, NonFiniteGuard
from .stage import run_stage, trainable

log = logging.getLogger("affectllm.train")
MEDIA_PREFIX = "affect_media_"
IDS_COLUMN = "affect_ids"
ROW_COLUMNS = ("prompt", "id", "question")
"""Dataset columns besides the reward columns (:func:`~affectllm.rewards.common.reward_columns`)."""
# Model keyword (raw media or cached tower output) -> modality.
_KEYWORD_MODALITY: dict[str, str] = {
    **{m.model_input: m.name for m in MODALITY_TABLE},
    **{m.feature_input: m.name for m in MODALITY_TABLE if m.feature_input},
    **{m.mask_input: m.name for m in MODALITY_TABLE if m.mask_input},  # padding masks travel with their media
}


def unwrapped(model: Any) -> Any:
    """The affectllm model under a PEFT wrapper (``model`` itself when there is none)."""
    return model.get_base_model() if is_peft_model(model) else model


def encode_frozen(policy: Any, fields: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Replace the raw media of frozen towers by their encoder outputs (``[u, l, d]``), once per unique clip.

    Generation and every later log-prob pass then reuse them: a clip is encoded once per step. Trainable towers
    (and the AU encoder, which always trains) keep raw media, so they get gradients in the loss. A padding mask
    (``audio_attention_mask`` of waveform towers) goes into the encoder and stays in the fields, so the model pools
    each clip over its own frames. Under ZeRO-3 a frozen tower the batch lacks runs on a dummy
    (:meth:`~affectllm.model.modeling.AffectLlmModel.tower_dummy`): running a tower gathers its partitioned
    parameters collectively, so every rank must run every tower, in :data:`~affectllm.types.MODALITIES` order.

    Args:
        policy: the unwrapped model (no PEFT, no DDP).
        fields: processor output without ``input_ids``/``attention_mask`` (media ``[u, ...]``, ``<m>_index``).
        device: where the towers run.
    """
    out = dict(fields)
    zero3 = is_deepspeed_zero3_enabled()
    like = next(policy.parameters())
    for m in MODALITY_TABLE:
        if m.feature_input is None or m.name not in policy.model.encoders:
            continue
        if any(p.requires_grad for p in policy.model.encoders[m.name].parameters()):
            continue
        if m.model_input in fields:
            mask = fields.get(m.mask_input) if m.mask_input else None
            mask = mask.to(device) if mask is not None else None
            out[m.feature_input] = policy.encode_media(m.name, fields[m.model_input].to(device), mask).detach()
            del out[m.model_input]
        elif zero3:
            policy.tower_dummy(m.name, like)
    return out


@dataclass
class GroupMedia:
    """The media of a batch, one entry per row, so TRL's shuffle and split can carry them with the rows.

    Attributes:
        ids: clip id per row ``[B]`` (rows of one GRPO group share it).
        values: model keyword (``pixel_values_videos``, ``video_features`` ...) -> ``[B, ...]`` (zeros where a row
            lacks the modality).
        has: model keyword -> ``[B]`` bool, whether the row has it.
    """

    ids: list[str]
    values: dict[str, torch.Tensor]
    has: dict[str, torch.Tensor]

    @classmethod
    def expand(cls, ids: Sequence[str], fields: dict[str, torch.Tensor], present: Sequence[Sequence[str]],
               device: torch.device) -> GroupMedia:
        """Per-row media from the processor's per-clip media (``[u, ...]`` plus ``<m>_index`` ``[r]``)."""
        values, has = {}, {}
        for key, modality in _KEYWORD_MODALITY.items():
            if key not in fields:
                continue
            clip_values = fields[key].to(device)
            index = fields.get(f"{modality}_index")
            index = index.to(device) if index is not None else torch.arange(clip_values.shape[0], device=device)
            rows = torch.tensor([modality in p for p in present], device=device)
            full = clip_values.new_zeros((len(present), *clip_values.shape[1:]))
            full[rows] = clip_values[index]
            values[key], has[key] = full, rows
        return cls(list(ids), values, has)

    def columns(self) -> dict[str, Any]:
        """Entries for TRL's batch dict (``affect_media_<keyword>``, ``..._has``, ``affect_ids``)."""
        out: dict[str, Any] = {IDS_COLUMN: list(self.ids)}
        for key, value in self.values.items():
            out[f"{MEDIA_PREFIX}{key}"] = value
            out[f"{MEDIA_PREFIX}{key}_has"] = self.has[key]
        return out

    @classmethod
    def from_columns(cls, batch: dict[str, Any]) -> GroupMedia:
        """The media of a (shuffled, split) batch made by :meth:`columns`."""
        keys = [k for k in _KEYWORD_MODALITY if f"{MEDIA_PREFIX}{k}" in batch]
        return cls(list(batch[IDS_COLUMN]), {k: batch[f"{MEDIA_PREFIX}{k}"] for k in keys},
                   {k: batch[f"{MEDIA_PREFIX}{k}_has"] for k in keys})

    def slice(self, start: int, end: int, dedup: bool = True) -> dict[str, torch.Tensor]:
        """Model keyword arguments carrying the media of rows ``start:end``.

        With ``dedup``, rows of the chunk that share a clip get its media once plus ``<m>_index`` (the model
        encodes and projects each clip once); without, every row brings its own copy.
        """
        kwargs: dict[str, torch.Tensor] = {}
        for key, value in self.values.items():
            rows = self.has[key][start:end].nonzero().flatten().tolist()
            if not rows:
                continue
            chunk = value[start:end]
            if not dedup:
                kwargs[key] = chunk[rows]
                continue
            ids = [self.ids[start + r] for r in rows]
            first = {i: n for n, i in reversed(list(enumerate(ids)))}
            unique = list(dict.fromkeys(ids))
            kwargs[key] = chunk[[rows[first[i]] for i in unique]]
            kwargs[f"{_KEYWORD_MODALITY[key]}_index"] = torch.tensor([unique.index(i) for i in ids],
                                                                     device=value.device)
        return kwargs


def confidence_token_mask(completion_ids: torch.Tensor, completion_mask: torch.Tensor, tokenizer: Any
                          ) -> torch.Tensor:
    """``[B, C]`` 1 on the completion tokens after ``</answer>`` (the confidence part), 0 before; a row whose
    answer never closes keeps 1 everywhere, so a broken format still gets its (low) reward's gradient.

    A token counts as after the answer when the text decoded up to and including it reaches past the end of
    ``</answer>``: a token that ends the tag is not trained, one that straddles its end is. The decoded prefix only
    grows with the tokens, so the first such token is found by bisection (a few decodes a row, not one per token).
    """
    keep = torch.ones_like(completion_mask)
    for row, (ids, mask) in enumerate(zip(completion_ids.tolist(), completion_mask.tolist(), strict=True)):
        ids = [t for t, m in zip(ids, mask, strict=True) if m]
        end = answer_end(tokenizer.decode(ids, skip_special_tokens=True))
        if end is None:
            continue
        first = bisect.bisect_right(range(len(ids)), end,
                                    key=lambda j: len(tokenizer.decode(ids[:j + 1], skip_special_tokens=True)))
        keep[row, :first] = 0  # first == len(ids): nothing follows the answer, no token is trained
    return keep


class AffectGRPOTrainer(GRPOTrainer):
    """GRPO over video, audio, face and AU inputs; see the module docstring for what is overridden and why.

    Args:
        clip_store: where the clips' media come from.
        clips: the clips of the training rows (looked up by the rows' ``id``).
        dedup_media: process and encode each clip once per generation batch (recipe ``grpo.dedup_media``); false
            processes every row's media on its own (same results, G x the encoder work: a baseline for
            ``bench/grpo.py``, which flips the attribute between steps).
        prefill_once: rollouts prefill each group's prompt once (recipe ``grpo.prefill_once``; rows share a prompt
            only with ``dedup_media``); false prefills every row (same completions: a baseline for the bench).
        *args, **kwargs: passed to ``GRPOTrainer``.
    """

    def __init__(self, *args: Any, clip_store: ClipStore, clips: Sequence[Clip], dedup_media: bool = True,
                 prefill_once: bool = True, loss_tokens: str = "all", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loss_tokens = loss_tokens
        self.clip_store = clip_store
        self.clips: dict[str, Clip] = {c.id: c for c in clips}
        self.dedup_media = dedup_media
        self.prefill_once = prefill_once
        self.last_loss_ids: list[str] = []
        # Set by _generate_and_score_completions for _tokenize_prompts: TRL passes the latter the prompts only.
        self._batch_ids: list[str] = []
        # The media the log-prob pass scores: the generation batch's, or the micro-batch's inside _compute_loss.
        self._scoring: GroupMedia | None = None

    def _tokenize_prompts(self, prompts: list) -> tuple[list[list[int]], None, dict[str, torch.Tensor]]:
        """mirrors trl==1.16.0 trl/trainer/grpo_trainer.py:1684 _tokenize_prompts, with each row's clip media."""
        if len(self._batch_ids) != len(prompts):
            raise RuntimeError(f"internal: {len(prompts)} prompts for {len(self._batch_ids)} clip ids")
        clips = [self.clips[i] for i in self._batch_ids]
        policy = unwrapped(self.accelerator.unwrap_model(self.model))
        allowed = policy.config.enabled_modalities()
        decoded = [self.clip_store.get(c) for c in clips]
        present = [present_modalities(d, allowed) for d in decoded]
        enc = self.processing_class(list(prompts), clip_ids=list(self._batch_ids) if self.dedup_media else None,
                                    **media_kwargs(decoded, present))
        prompt_ids = [ids[mask.bool()].tolist() for ids, mask in zip(enc["input_ids"], enc["attention_mask"])]
        fields = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask")}
        fields = encode_frozen(policy, fields, self.accelerator.device)
        self._scoring = GroupMedia.expand(self._batch_ids, fields, present, self.accelerator.device)
        return prompt_ids, None, fields

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        """mirrors trl==1.16.0 trl/trainer/grpo_trainer.py:2324 _generate_and_score_completions, plus media/ids."""
        self._batch_ids = [row["id"] for row in inputs]
        try:
            output = super()._generate_and_score_completions(inputs)
            media = self._scoring
        finally:
            self._scoring = None
        output.update(media.columns())
        if self.loss_tokens == "confidence":
            self._confidence_only(output)
        return output

    def _confidence_only(self, output: dict[str, Any]) -> None:
        """Train only the confidence part (``grpo.loss_tokens: confidence``) through TRL's own loss mask for
        tokens the policy did not write (``tool_mask``: the loss and its token count read it)."""
        keep = confidence_token_mask(output["completion_ids"], output["completion_mask"],
                                     self.processing_class.tokenizer)
        keep = keep.to(output["completion_mask"].device)
        output["tool_mask"] = keep if "tool_mask" not in output else output["tool_mask"] * keep
        mask = output["completion_mask"] * output["tool_mask"]
        output["num_items_in_batch"] = self.accelerator.gather(mask.sum()).sum()
        self._metrics["train"]["affect/loss_token_fraction"].append(
            (mask.sum() / output["completion_mask"].sum().clamp(min=1)).item())

    def _generate_single_turn(self, prompt_ids: list[list[int]], images: Any, multimodal_fields: dict[str, Any],
                              num_generations: int, has_tool_images: bool = False) -> tuple[list[list[int]], Any]:
        """mirrors trl==1.16.0 trl/trainer/grpo_trainer.py:1763 _generate_single_turn, its ``generate`` call
        prefilling each distinct prompt once (transformers path; vLLM is refused by build_trainer)."""
        regular = not self.use_vllm and not self.use_transformers_continuous_batching
        context = contextlib.nullcontext()
        if self.prefill_once and regular:
            context = prefill_once_generation(unwrapped(self.accelerator.unwrap_model(self.model)))
        with context:
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                 has_tool_images)

    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        """mirrors trl==1.16.0 trl/trainer/grpo_trainer.py:3020 _compute_loss, on the micro-batch's own media."""
        self.last_loss_ids = list(inputs[IDS_COLUMN])
        self._scoring = GroupMedia.from_columns(inputs)
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self._scoring = None

    def _get_per_token_logps_and_entropies(self, model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                                           logits_to_keep: int, batch_size: int | None = None,
                                           compute_entropy: bool = False, compute_aux_loss: bool = False,
                                           **image_inputs: Any) -> tuple[torch.Tensor, torch.Tensor | None,
                                                                         torch.Tensor | None]:
        """mirrors trl==1.16.0 trl/trainer/grpo_trainer.py:1419 _get_per_token_logps_and_entropies: TRL's own code
        per chunk, the chunk's media bound as extra model inputs.

        No ``[b, c, V]`` logits on Triton devices; on CPU TRL's kernel scores every position (prompt included) in
        torch-op tiles, which takes more memory than full completion logits would (``bench/grpo.py`` part c).

        Returns:
            log-probs ``[b, c]`` of the completion tokens, entropies ``[b, c]`` (or None), MoE aux loss (or None).
        """
        given = sorted(k for k, v in image_inputs.items() if v is not None)
        if given:
            raise ValueError(f"image inputs ({', '.join(given)}) are not supported: media travel as clips")
        media = self._scoring
        if media is None or len(media.ids) != input_ids.size(0):
            raise RuntimeError(f"internal: no media for these {input_ids.size(0)} rows")
        batch_size = batch_size or input_ids.size(0)
        logps, entropies, aux = [], [], []
        for start in range(0, input_ids.size(0), batch_size):
            end = min(start + batch_size, input_ids.size(0))
            bound = functools.partial(model, **media.slice(start, end, self.dedup_media))
            out = super()._get_per_token_logps_and_entropies(
                bound, input_ids[start:end], attention_mask[start:end], logits_to_keep, batch_size=end - start,
                compute_entropy=compute_entropy, compute_aux_loss=compute_aux_loss)
            logps.append(out[0])
            entropies.append(out[1])
            aux.append(out[2])
        return (torch.cat(logps), torch.cat(entropies) if compute_entropy else None,
                torch.stack(aux).mean() if compute_aux_loss else None)


def grpo_rows(clips: Sequence[Clip], question: str, processor: Any, store: ClipStore,
              modalities: Sequence[str]) -> list[dict[str, Any]]:
    """Dataset rows: the prompt the model sees (chat-templated, placeholders of the media each clip turned out to
    have), the clip id, the question and the reward columns; clips without labels are skipped."""
    labelled = [c for c in clips if reward_columns(c)["labels"]]
    for clip in clips:
        if not reward_columns(clip)["labels"]:
            log.warning("clip %s has no labels; skipped", clip.id)
    if not labelled:
        raise ValueError("no clip has labels to reward")
    built = build_prompt_inputs(processor, store, labelled, [question] * len(labelled), modalities, process=False)
    return [dict(zip(ROW_COLUMNS, (text, clip.id, question)), **reward_columns(clip))
            for text, clip in zip(built.texts, labelled)]


def parse_stats(completions: Sequence[Any], log_metric: Any) -> None:
    """Log the parse-failure rate and labels per answer of a batch's completions through TRL's ``log_metric``."""
    preds = [parse_completion(completion_text(c)) for c in completions]
    n = max(len(preds), 1)
    log_metric("affect/parse_failure_rate", sum(not p.format_ok for p in preds) / n)
    log_metric("affect/labels_per_answer", sum(len(p.labels) for p in preds) / n)


class RewardError(RuntimeError):
    """A reward raised while scoring a batch; the message names the reward and the sample."""


def failing_sample(fn: Any, completions: list[Any], kwargs: dict[str, Any]) -> Any:
    """The id of the first sample on which ``fn`` raises alone (rewards are pure, so a re-run is safe), else all ids.

    Per-sample keyword values are the lists as long as ``completions``; the rest (``log_metric``, options) pass as is.
    """
    n = len(completions)
    ids = kwargs.get("id")
    for i in range(n):
        one = {k: [v[i]] if isinstance(v, list) and len(v) == n else v for k, v in kwargs.items()}
        try:
            fn([completions[i]], **one)
        except Exception:
            return ids[i] if isinstance(ids, list) and len(ids) == n else i
    return ids


def named_reward(fn: Any, name: str, log_parse_stats: bool = False) -> Any:
    """``fn`` as a function named ``name`` (TRL logs rewards by the name of the function a partial wraps).

    With ``log_parse_stats`` it also logs :func:`parse_stats`: TRL flushes ``log_metric`` values once per
    generation batch, after the rewards ran, so a reward is where batch metrics go in on time.
    """

    def reward_fn(completions: list[Any], **kwargs: Any) -> list[float | None]:
        if log_parse_stats and "log_metric" in kwargs:
            parse_stats(completions, kwargs["log_metric"])
        try:
            return fn(completions, **kwargs)
        except Exception as exc:
            # TRL's traceback names neither the reward nor the row: say both, so the bug is found in one read.
            raise RewardError(f"reward {name!r} raised {type(exc).__name__}: {exc} (sample id "
                              f"{failing_sample(fn, completions, kwargs)!r}); fix the reward or its column") from exc

    reward_fn.__name__ = reward_fn.__qualname__ = name
    reward_fn.columns = declared_columns(fn)  # type: ignore[attr-defined]  # what check_columns reads
    return reward_fn


def log_names(names: Sequence[str]) -> list[str]:
    """Recipe reward names made unique for the logs (``format``, ``format_2``)."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


def reward_functions(recipe: Recipe) -> tuple[list[Any], list[float]]:
    """The recipe's rewards, options bound (a bad option fails here, before training), unique names, weights."""
    names = log_names([r.name for r in recipe.rewards])
    funcs = [named_reward(make_reward(r.name, **r.kwargs), name, log_parse_stats=i == 0)
             for i, (r, name) in enumerate(zip(recipe.rewards, names))]
    return funcs, [float(r.weight) for r in recipe.rewards]


def grpo_args(recipe: Recipe, out: Path, media_token_ids: Sequence[int]) -> GRPOConfig:
    """TRL's config (:func:`~affectllm.config.trainer_args`), the media placeholders added to the recipe's
    ``generation_kwargs.suppress_tokens`` (a sampled placeholder would have no media behind it)."""
    args = trainer_args(recipe, out)
    generation_kwargs = dict(args.generation_kwargs or {})
    extra = generation_kwargs.get("suppress_tokens") or []
    generation_kwargs["suppress_tokens"] = sorted({*media_token_ids, *extra})
    args.generation_kwargs = generation_kwargs
    return args


def build_trainer(recipe: Recipe, model: Any, processor: Any, out: Path,
                  trainer_cls: type[AffectGRPOTrainer] = AffectGRPOTrainer) -> AffectGRPOTrainer:
    """The configured trainer (shared by GRPO and the calibration stage).

    Raises:
        ValueError: a bad ``trainer:`` block (``use_vllm`` included: vLLM generation does not carry media;
            ``cast_lm_head_to_fp32`` with LoRA on tied embeddings), a reward reading a column the rows lack
            (named), or a tokenizer without a pad token.
    """
    from datasets import Dataset

    funcs, _ = reward_functions(recipe)
    args = grpo_args(recipe, out, list(model.config.media_token_ids.values()))
    if processor.tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token")
    if args.cast_lm_head_to_fp32 and recipe.model.llm_mode == "lora" and model.config.tie_word_embeddings:
        # trl==1.16.0 trl/trainer/grpo_trainer.py:1043 hooks model.model.embed_tokens, which a PEFT model lacks
        raise ValueError("trainer.cast_lm_head_to_fp32=true does not work with model.llm_mode=lora on a backbone "
                         "with tied embeddings in TRL 1.16; use llm_mode full or drop cast_lm_head_to_fp32")
    clips = select_clips(recipe.data.manifest, recipe.data.split, recipe.data.max_samples, recipe.seed)
    check_columns(funcs, [*ROW_COLUMNS, *reward_columns(clips[0])])
    # the cache holds the whole split: an LRU smaller than it evicts every clip before its next epoch
    store = ClipStore(recipe.data.feature_cache, num_frames=recipe.data.num_frames,
                      cache_size=max(512, len(clips)))
    rows = grpo_rows(clips, QUESTIONS[recipe.task], processor, store, model.config.enabled_modalities())
    model = trainable(model, recipe)
    trainer = trainer_cls(model=model, reward_funcs=funcs, args=args, train_dataset=Dataset.from_list(rows),
                          processing_class=processor, clip_store=store, clips=clips,
                          dedup_media=recipe.grpo.dedup_media, prefill_once=recipe.grpo.prefill_once,
                          loss_tokens=recipe.grpo.loss_tokens)
    trainer.add_callback(MetricsLogger(out))
    trainer.add_callback(NonFiniteGuard(recipe.max_bad_steps, trainer))
    return trainer


def main(recipe: Recipe) -> dict[str, Any]:
    """Run stage 2 top to bottom; return the evaluation on the test split."""
    return run_stage(recipe, build_trainer)
