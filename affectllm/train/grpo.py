"""Stage 2: GRPO with emotion-wheel, AU, format and length rewards (a thin subclass of TRL's ``GRPOTrainer``).

TRL 1.16 carries images only, so :class:`AffectGRPOTrainer` overrides the four places where media matter:

* ``_tokenize_prompts``: builds each row's prompt from its clip (placeholders for the media it has) and processes
  the media once per unique clip of the generation batch (a GRPO group shares one clip: ``clip_ids``);
* ``_generate_and_score_completions``: afterwards attaches per-row media to the batch so TRL's split/shuffle keeps
  them aligned with the rows (encoder *features* when the encoders are frozen, so the loss never re-encodes);
  adds parse-failure rate and labels per answer to the logs;
* ``_get_per_token_logps_and_entropies``: feeds those media to the policy and the reference model;
* ``_compute_loss``: points the log-prob computation at the media of the micro-batch it scores.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import entropy_from_logits, selective_log_softmax

from ..config import Recipe
from ..data.manifest import clip_to_row, row_to_clip, select_clips
from ..data.prompts import QUESTIONS, messages, reward_columns
from ..inputs.collate import build_prompt_inputs
from ..inputs.store import ClipStore
from ..model.configuration import FEATURE_INPUT_NAMES, MEDIA_INPUT_NAMES
from ..parsing import completion_text, parse_completion
from ..rewards import make_reward
from ..types import Clip
from .callbacks import MetricsLogger, NonFiniteGuard
from .stage import run_stage, trainable

log = logging.getLogger("affectllm.train")
MEDIA_PREFIX = "affect_media_"


class AffectGRPOTrainer(GRPOTrainer):
    """GRPO over video, audio, face and AU inputs; see the module docstring for what is overridden and why.

    ``dedup_media`` (recipe ``grpo.dedup_media``, default true) processes and encodes each clip once per
    generation batch; false processes every row's media on its own (same results, G x the encoder work: a baseline
    for ``bench/grpo.py``).
    """

    dedup_media: bool = True

    def __init__(self, *args: Any, clip_store: ClipStore, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clip_store = clip_store
        self._rows: list[dict[str, Any]] = []
        self._row_media: dict[str, torch.Tensor] = {}
        self._logp_media: dict[str, torch.Tensor] = {}
        self._is_features: dict[str, bool] = {}
        self.last_ids: list[str] = []

    # -- media per batch -------------------------------------------------------------------------------------
    def _policy(self) -> Any:
        model = self.accelerator.unwrap_model(self.model)
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def _tokenize_prompts(self, prompts: list) -> tuple[list[list[int]], None, dict[str, torch.Tensor]]:
        rows = self._rows
        if len(rows) != len(prompts):
            raise RuntimeError(f"internal: {len(prompts)} prompts for {len(rows)} rows")
        clips = [row_to_clip(json.loads(r["clip"]), "") for r in rows]
        self.last_ids = [c.id for c in clips]
        policy = self._policy()
        allowed = policy.config.enabled_modalities()
        built = build_prompt_inputs(self.processing_class, self.clip_store, clips, [r["question"] for r in rows],
                                    allowed, dedup=self.dedup_media)
        enc, present = built.inputs, built.present
        prompt_ids = [ids[mask.bool()].tolist() for ids, mask in zip(enc["input_ids"], enc["attention_mask"])]
        fields = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask")}
        fields = self._encode_frozen(policy, fields)
        self._row_media = self._expand_per_row(fields, present)
        return prompt_ids, None, fields

    def _encode_frozen(self, policy: Any, fields: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Replace the raw media of frozen towers by their encoder outputs, computed once per unique clip.

        Generation (``video_features`` ...) and every later log-prob pass then reuse them: a clip is encoded once
        per step. Trainable encoders (and the AU encoder, which always trains) keep raw media, so they get
        gradients in the loss.
        """
        self._is_features = {}
        out = dict(fields)
        for m, name in MEDIA_INPUT_NAMES.items():
            if name not in fields:
                continue
            encoder = policy.model.encoders[m]
            frozen = m in FEATURE_INPUT_NAMES and not any(p.requires_grad for p in encoder.parameters())
            self._is_features[m] = frozen
            if frozen:
                values = fields[name].to(self.accelerator.device)
                out[FEATURE_INPUT_NAMES[m]] = policy.encode_media(m, values).detach()
                del out[name]
        return out

    def _expand_per_row(self, fields: dict[str, torch.Tensor], present: list[list[str]]) -> dict:
        """Per-row media ``[B, ...]`` (zeros where a row lacks the modality) plus a presence mask per modality."""
        out: dict[str, torch.Tensor] = {}
        n = len(present)
        for m, name in MEDIA_INPUT_NAMES.items():
            key = FEATURE_INPUT_NAMES[m] if self._is_features.get(m) else name
            if key not in fields:
                continue
            values = fields[key].to(self.accelerator.device)
            index = fields.get(f"{m}_index")
            index = index.to(values.device) if index is not None else torch.arange(values.shape[0],
                                                                                    device=values.device)
            has = torch.tensor([m in p for p in present], device=values.device)
            full = values.new_zeros((n, *values.shape[1:]))
            full[has] = values[index]
            out[f"{MEDIA_PREFIX}{m}"] = full
            out[f"{MEDIA_PREFIX}{m}_has"] = has
        return out

    def _media_inputs(self, media: dict[str, torch.Tensor], start: int, end: int) -> dict[str, Any]:
        """Model keyword arguments carrying the media of rows ``start:end``."""
        kwargs: dict[str, Any] = {}
        for m, name in MEDIA_INPUT_NAMES.items():
            key = f"{MEDIA_PREFIX}{m}"
            if key not in media:
                continue
            has = media[f"{key}_has"][start:end]
            if bool(has.any()):
                chunk = media[key][start:end][has]
                kwargs[FEATURE_INPUT_NAMES[m] if self._is_features.get(m) else name] = chunk
        return kwargs

    # -- TRL hooks ---------------------------------------------------------------------------------------------
    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        self._rows = inputs
        self._logp_media = {}
        output = super()._generate_and_score_completions(inputs)
        output.update(self._row_media)
        self._log_parse_stats(output)
        return output

    def _log_parse_stats(self, output: dict[str, Any]) -> None:
        mode = "train" if self.model.training else "eval"
        texts = self.processing_class.batch_decode(output["completion_ids"], skip_special_tokens=True)
        preds = [parse_completion(completion_text(t)) for t in texts]
        self._metrics[mode]["affect/parse_failure_rate"].append(
            sum(not p.format_ok for p in preds) / max(len(preds), 1))
        self._metrics[mode]["affect/labels_per_answer"].append(sum(len(p.labels) for p in preds) / max(len(preds), 1))

    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        self._logp_media = {k: v for k, v in inputs.items() if k.startswith(MEDIA_PREFIX)}
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self._logp_media = {}

    def _get_per_token_logps_and_entropies(self, model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                                           logits_to_keep: int, batch_size: int | None = None,
                                           compute_entropy: bool = False, compute_aux_loss: bool = False,
                                           **_: Any) -> tuple[torch.Tensor, torch.Tensor | None, None]:
        """Per-token log-probs ``[b, c]`` (and entropies) of the completion tokens, media included."""
        media = self._logp_media or self._row_media
        batch_size = batch_size or input_ids.size(0)
        all_logps, all_entropies = [], []
        for start in range(0, input_ids.size(0), batch_size):
            end = min(start + batch_size, input_ids.size(0))
            ids = input_ids[start:end]
            with self.accelerator.autocast():
                logits = model(input_ids=ids, attention_mask=attention_mask[start:end],
                               logits_to_keep=logits_to_keep + 1, use_cache=False,
                               **self._media_inputs(media, start, end)).logits
            logits = logits[:, :-1, :][:, -logits_to_keep:] / self.temperature  # [b, c, V]
            all_logps.append(selective_log_softmax(logits, ids[:, -logits_to_keep:]))
            if compute_entropy:
                with torch.no_grad():
                    all_entropies.append(entropy_from_logits(logits))
        entropies = torch.cat(all_entropies, dim=0) if compute_entropy else None
        return torch.cat(all_logps, dim=0), entropies, None


def grpo_rows(clips: list[Clip], question: str) -> list[dict[str, Any]]:
    """Dataset rows: a conversational prompt (placeholders are added per clip at tokenization) + reward columns."""
    rows = []
    for clip in clips:
        cols = reward_columns(clip)
        if not cols["labels"]:
            log.warning("clip %s has no labels; skipped", clip.id)
            continue
        rows.append({"prompt": messages([], clip.transcript, question=question), "id": clip.id,
                     "clip": json.dumps(clip_to_row(clip)), "question": question, **cols})
    if not rows:
        raise ValueError("no clip has labels to reward")
    return rows


def reward_functions(recipe: Recipe) -> tuple[list[Any], list[float]]:
    """The recipe's rewards, options bound (a bad option fails here, before training), and their weights."""
    funcs = [make_reward(r.name, **r.kwargs) for r in recipe.rewards]
    return funcs, [float(r.weight) for r in recipe.rewards]


def log_names(names: list[str]) -> list[str]:
    """Recipe reward names made unique for the logs (``format``, ``format_2``): TRL would log function names."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


def build_trainer(recipe: Recipe, model: Any, processor: Any, out: Path,
                  trainer_cls: type[AffectGRPOTrainer] = AffectGRPOTrainer) -> AffectGRPOTrainer:
    """The configured trainer (shared by GRPO and the calibration stage)."""
    from datasets import Dataset

    question = QUESTIONS[recipe.task]
    clips = select_clips(recipe.data.manifest, recipe.data.split, recipe.data.max_samples, recipe.seed)
    train = Dataset.from_list(grpo_rows(clips, question))
    funcs, weights = reward_functions(recipe)
    defaults = {"logging_steps": 1, "report_to": ["tensorboard"], "seed": recipe.seed, "data_seed": recipe.seed,
                "gradient_checkpointing": False}
    suppress = {"suppress_tokens": sorted(model.config.media_token_ids.values())}
    generation_kwargs = {**suppress, **(recipe.trainer.get("generation_kwargs") or {})}
    trainer_opts = {**defaults, **recipe.trainer, "generation_kwargs": generation_kwargs}
    args = GRPOConfig(output_dir=str(out), **trainer_opts, reward_weights=weights, remove_unused_columns=False)
    if processor.tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token")
    model = trainable(model, recipe)
    store = ClipStore(recipe.data.feature_cache, num_frames=recipe.data.num_frames)
    trainer = trainer_cls(model=model, reward_funcs=funcs, args=args, train_dataset=train,
                          processing_class=processor, clip_store=store)
    trainer.dedup_media = recipe.grpo.dedup_media
    trainer.reward_func_names = log_names([r.name for r in recipe.rewards])
    guard = NonFiniteGuard(recipe.max_bad_steps, trainer)
    trainer.add_callback(MetricsLogger(out))
    trainer.add_callback(guard)
    return trainer


def main(recipe: Recipe) -> dict[str, Any]:
    """Run stage 2 top to bottom; return the evaluation on the test split."""
    return run_stage(recipe, build_trainer)
