"""Stage 0 (``stage: encoders``): warm-start the media towers on the manifest's gold before any LLM sees them.

Towers learned only through a random LLM get no useful gradient (issue 11: the projected audio tokens of every clip
were one vector). This stage trains each tower (video, audio, face, and the words tower over the transcript)
directly: the tower's output is averaged over time and small linear heads predict the gold the manifest has (gold
AUs for the face-bearing towers, the primary emotion, valence and arousal). The towers are saved inside an
otherwise untouched model, so SFT and GRPO start from ``init_from`` this stage with ``model.train_encoders: false``
and can read the towers' features from
``data prep --cache-features``. The heads are each tower's :class:`~affectllm.model.encoders.tower.Readout`,
saved with it: where ``model.readout`` names the modality (the tiny preset: all), the projector reads the head's
outputs beside the tower's features, so the LLM gets the towers' verdict as an input it can copy.

It also writes ``confidence.jsonl`` (``{"id", "confidence"}`` per clip of the manifest): the heads' probability of
their top emotion, the towers' own certainty about the clip. SFT writes it as the target confidence
(``sft.confidence_file``), and calibration maps it to a probability. On the training clips it is cross-fitted
(``encoders.confidence_folds``): towers that saw a clip are surer of it than of a new one (EmoWorld's training
clips: mean 0.76 in-sample, 0.56 out of fold; with in-sample targets the LLM said 0.90 for every clip), so each
fold's confidence comes from towers and heads trained, from the same initialisation, on the other folds only;
held-out clips get the saved towers' heads.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from transformers import Trainer

from ..config import Recipe, trainer_args
from ..data.manifest import select_clips
from ..inputs.collate import build_prompt_inputs
from ..inputs.store import ClipStore
from ..jsonl import write_jsonl, write_text
from ..metrics import auroc
from ..model.configuration import MASK_INPUT_NAMES, MEDIA_INPUT_NAMES, TOWERS
from ..types import Clip
from .callbacks import MetricsLogger
from .stage import save_final, setup_output

log = logging.getLogger("affectllm.train")
AU_TOWERS = ("video", "face")  # the voice does not show AUs


class Vocab:
    """The gold label spaces of the training clips: AU codes and primary emotions (sorted)."""

    def __init__(self, clips: list[Clip]) -> None:
        self.aus = sorted({a for c in clips for a in (c.aus or [])})
        self.emotions = sorted({c.emotion for c in clips if c.emotion})
        if not self.emotions:
            raise ValueError("stage encoders: no training clip has an `emotion` field; the heads need gold")

    def targets(self, clips: list[Clip]) -> dict[str, torch.Tensor]:
        """Per-row gold: ``au [b, A]`` (+ ``au_known [b]``), ``emotion [b]`` (-100 unknown), ``va [b, 2]``
        (+ ``va_known [b, 2]``)."""
        au = torch.zeros(len(clips), len(self.aus))
        for i, c in enumerate(clips):
            for a in c.aus or []:
                if a in self.aus:
                    au[i, self.aus.index(a)] = 1.0
        va = [[c.valence or 0.0, c.arousal or 0.0] for c in clips]
        return {
            "au": au,
            "au_known": torch.tensor([c.aus is not None for c in clips]),
            "emotion": torch.tensor([self.emotions.index(c.emotion) if c.emotion in self.emotions else -100
                                     for c in clips]),
            "va": torch.tensor(va, dtype=torch.float32),
            "va_known": torch.tensor([[c.valence is not None, c.arousal is not None] for c in clips]),
        }


class TowerHeads(nn.Module):
    """The model's towers with one linear head each over their time-averaged output.

    Args:
        model: the composite model (its towers train, nothing else is touched).
        vocab: the label spaces.
    """

    def __init__(self, model: Any, vocab: Vocab) -> None:
        super().__init__()
        self.model = model
        self.vocab = vocab
        inner = model.model
        self.modalities = [m for m in TOWERS if m in inner.encoders]
        if not self.modalities:
            raise ValueError("stage encoders: the model has no video, audio, face or words tower to warm-start")
        # Each tower gets a fresh readout (the voice and the words predict no AUs); it trains with the tower and is
        # saved in it.
        self.heads = nn.ModuleDict({m: inner.attach_readout(m, vocab.aus if m in AU_TOWERS else [], vocab.emotions)
                                    for m in self.modalities})
        self.seen: set[str] = set()  # modalities some training batch had (a readout that saw no gold is dropped)
        for p in model.parameters():
            p.requires_grad = False
        for m in self.modalities:
            for p in inner.encoders[m].parameters():
                p.requires_grad = True

    def head_outputs(self, batch: dict[str, Any]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per modality in the batch: (row indices ``[u]``, readout logits ``[u, A_m + E + 2]``; ``A_m`` is 0 for
        the voice)."""
        inner = self.model.model
        out = {}
        for m in self.modalities:
            values = batch.get(MEDIA_INPUT_NAMES[m])
            if values is None:
                continue
            mask = batch.get(MASK_INPUT_NAMES.get(m, ""))
            feats = inner.encode_media(m, values, mask)  # [u, l, d]
            out[m] = (batch["rows"][m], self.heads[m].logits(feats, inner.feature_lengths(m, mask)))
        return out

    def forward(self, **batch: Any) -> dict[str, torch.Tensor]:
        """The summed loss over towers: AU BCE (video/face), emotion cross-entropy, valence/arousal squared error."""
        e = len(self.vocab.emotions)
        loss = torch.zeros(())
        for m, (rows, h) in self.head_outputs(batch).items():
            self.seen.add(m)
            a = len(self.heads[m].aus)
            emo = batch["emotion"][rows]
            if bool((emo >= 0).any()):
                loss = loss + nn.functional.cross_entropy(h[:, a:a + e], emo, ignore_index=-100)
            known = batch["au_known"][rows]
            if a and bool(known.any()):
                loss = loss + nn.functional.binary_cross_entropy_with_logits(h[known, :a], batch["au"][rows][known])
            va_known = batch["va_known"][rows]
            if bool(va_known.any()):
                err = (h[:, a + e:] - batch["va"][rows]) ** 2
                loss = loss + 4.0 * err[va_known].mean()  # VA lies in [-1, 1]: its squared errors are small
        return {"loss": loss}


class TowerCollator:
    """Clip ids -> the towers' processed media, row indices and gold.

    Each clip goes through the one prompt path (:func:`build_prompt_inputs`, question unused) once; its processed
    tensors are kept, so later epochs skip the image resizing and log-mel extraction that dominate a step on CPU.
    """

    def __init__(self, processor: Any, store: ClipStore, modalities: list[str], clips: dict[str, Clip],
                 vocab: Vocab) -> None:
        self.processor, self.store, self.modalities = processor, store, modalities
        self.clips, self.vocab = clips, vocab
        self._processed: dict[str, dict[str, torch.Tensor]] = {}

    def processed(self, clip: Clip) -> dict[str, torch.Tensor]:
        """One clip's media tensors (``pixel_values_videos [1, t, 3, h, w]`` ...; masks included), cached."""
        if clip.id not in self._processed:
            batch = build_prompt_inputs(self.processor, self.store, [clip], [""], self.modalities)
            self._processed[clip.id] = {k: v for k, v in batch.inputs.items()
                                        if k not in ("input_ids", "attention_mask") and not k.endswith("_index")}
        return self._processed[clip.id]

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        clips = [self.clips[r["id"]] for r in rows]
        per_clip = [self.processed(c) for c in clips]
        out: dict[str, Any] = {"rows": {}}
        for m in self.modalities:
            name, mask = MEDIA_INPUT_NAMES[m], MASK_INPUT_NAMES.get(m)
            rows_m = [i for i, p in enumerate(per_clip) if name in p]
            out["rows"][m] = torch.tensor(rows_m, dtype=torch.long)
            if not rows_m:
                continue
            values = [per_clip[i][name][0] for i in rows_m]
            out[name] = pad_sequence(values, batch_first=True)  # same length except padded waveforms
            if mask and mask in per_clip[rows_m[0]]:
                out[mask] = pad_sequence([per_clip[i][mask][0] for i in rows_m], batch_first=True)
        return {**out, **self.vocab.targets(clips)}


class EncoderTrainer(Trainer):
    """A plain ``Trainer`` whose only quirk is that the loss comes from :class:`TowerHeads` (no labels key)."""

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        out = model(**inputs)
        return (out["loss"], out) if return_outputs else out["loss"]


def _store(recipe: Recipe, clips: int) -> ClipStore:
    """The clips' media, every clip of the split kept decoded (each is read once per epoch: a smaller LRU than the
    split would decode every clip again each epoch)."""
    return ClipStore(recipe.data.feature_cache, num_frames=recipe.data.num_frames, cache_size=max(512, clips))


def build_trainer(recipe: Recipe, model: Any, processor: Any, out: Path,
                  clips: list[Clip] | None = None) -> tuple[EncoderTrainer, TowerHeads]:
    """The configured trainer over ``clips`` (default: the training split), and the heads module it trains."""
    from datasets import Dataset

    if clips is None:
        clips = select_clips(recipe.data.manifest, recipe.data.split, recipe.data.max_samples, recipe.seed)
    vocab = Vocab(clips)
    heads = TowerHeads(model, vocab)
    collator = TowerCollator(processor, _store(recipe, len(clips)), heads.modalities, {c.id: c for c in clips}, vocab)
    trainer = EncoderTrainer(model=heads, args=trainer_args(recipe, out),
                             train_dataset=Dataset.from_list([{"id": c.id} for c in clips]),
                             data_collator=collator, callbacks=[MetricsLogger(out)])
    return trainer, heads


@torch.no_grad()
def predict(heads: TowerHeads, collator: TowerCollator, clips: list[Clip], batch_size: int = 32) -> dict[str, Any]:
    """Combined predictions per clip: emotion probabilities ``[n, E]`` (the towers' log-probabilities summed),
    AU probabilities ``[n, A]`` (mean over AU towers, NaN where none), valence/arousal ``[n, 2]`` (mean)."""
    heads.eval()
    a, e = len(heads.vocab.aus), len(heads.vocab.emotions)
    logp = torch.zeros(len(clips), e)
    au, au_n = torch.zeros(len(clips), a), torch.zeros(len(clips), 1)
    va, va_n = torch.zeros(len(clips), 2), torch.zeros(len(clips), 1)
    for start in range(0, len(clips), batch_size):
        part = clips[start:start + batch_size]
        for m, (rows, h) in heads.head_outputs(collator([{"id": c.id} for c in part])).items():
            am = len(heads.heads[m].aus)  # 0 for the voice
            idx = rows + start
            logp[idx] += torch.log_softmax(h[:, am:am + e], dim=-1)
            va[idx] += h[:, am + e:]
            va_n[idx] += 1
            if am:
                au[idx] += torch.sigmoid(h[:, :am])
                au_n[idx] += 1
    return {"emotion": torch.softmax(logp, dim=-1).numpy(), "au": (au / au_n).numpy(),
            "va": (va / va_n.clamp(min=1)).numpy()}


def head_metrics(pred: dict[str, Any], clips: list[Clip], vocab: Vocab) -> dict[str, Any]:
    """Emotion accuracy, micro AU-F1 (threshold 0.5), valence/arousal Pearson r, and the AUROC of the top-emotion
    probability against the top emotion being right (how informative ``confidence.jsonl`` is)."""
    top = pred["emotion"].argmax(-1)
    right = [c.emotion == vocab.emotions[t] for c, t in zip(clips, top)]
    gold = vocab.targets(clips)
    au_pred = np.nan_to_num(pred["au"]) >= 0.5
    au_gold = gold["au"].numpy().astype(bool)
    tp = float((au_pred & au_gold).sum())
    f1 = 2 * tp / max(float(au_pred.sum() + au_gold.sum()), 1.0)

    def pearson(j: int) -> float | None:
        known = gold["va_known"][:, j].numpy()
        if known.sum() < 3:
            return None
        r = np.corrcoef(pred["va"][known, j], gold["va"].numpy()[known, j])[0, 1]
        return None if math.isnan(r) else float(r)

    return {"n": len(clips), "emotion_acc": float(np.mean(right)), "au_f1": f1, "valence_r": pearson(0),
            "arousal_r": pearson(1), "confidence_auroc": auroc(pred["emotion"].max(-1).tolist(), right)}


def cross_fitted_confidence(recipe: Recipe, out: Path) -> dict[str, float]:
    """Out-of-fold certainty of every training clip: for each of ``encoders.confidence_folds`` folds (a seeded
    shuffle cut in equal parts), fresh towers from the stage's starting point train ``max_steps // folds`` steps on
    the other folds and their heads score the fold. Empty with one fold."""
    import dataclasses

    from .stage import load_stage_model

    k = recipe.encoders.confidence_folds
    if k < 2:
        return {}
    clips = select_clips(recipe.data.manifest, recipe.data.split, recipe.data.max_samples, recipe.seed)
    order = np.random.default_rng(recipe.seed).permutation(len(clips))
    steps = max(1, int(recipe.trainer.get("max_steps", 1)) // k)
    out_of_fold: dict[str, float] = {}
    for fold in range(k):
        held = [clips[i] for i in order[fold::k]]
        rest = [clips[i] for i in sorted(set(range(len(clips))) - set(order[fold::k].tolist()))]
        where = out / "folds" / str(fold)
        sub = dataclasses.replace(recipe, output_dir=str(where), trainer={**recipe.trainer, "max_steps": steps})
        print(f"[encoders] confidence fold {fold + 1}/{k}: towers trained on {len(rest)} clips, {steps} steps, "
              f"scoring {len(held)}", flush=True)
        model, processor = load_stage_model(sub)
        trainer, heads = build_trainer(sub, model, processor, where, rest)
        trainer.train()
        collator = trainer.data_collator
        collator.clips.update({c.id: c for c in held})
        pred = predict(heads, collator, held)
        out_of_fold.update({c.id: float(p) for c, p in zip(held, pred["emotion"].max(-1))})
    return out_of_fold


def rank_scale(values: dict[str, float], reference: list[float]) -> dict[str, float]:
    """Each value's quantile among ``reference`` (mid-rank, ties averaged), mapped linearly to 0.05..0.95.

    >>> rank_scale({"a": 0.2, "b": 0.9, "c": 0.5}, [0.2, 0.5, 0.9, 0.9])
    {'a': 0.1625, 'b': 0.725, 'c': 0.3875}
    """
    ref = np.sort(np.asarray(reference, dtype=float))
    out = {}
    for key, v in values.items():
        below, upto = np.searchsorted(ref, v, side="left"), np.searchsorted(ref, v, side="right")
        q = (below + upto) / 2 / len(ref)
        out[key] = round(0.05 + 0.9 * float(q), 4)
    return out


def finish(recipe: Recipe, out: Path, heads: TowerHeads, collator: TowerCollator,
           out_of_fold: dict[str, float] | None = None) -> dict[str, Any]:
    """Score the heads on ``eval.split`` and write ``confidence.jsonl`` for every clip of the manifest (a clip of
    ``out_of_fold`` says its cross-fitted value)."""
    import json

    every = select_clips(recipe.data.manifest, None, None, recipe.seed)
    collator.clips.update({c.id: c for c in every})
    pred = predict(heads, collator, every)
    oof = out_of_fold or {}
    values = {c.id: oof.get(c.id, float(p)) for c, p in zip(every, pred["emotion"].max(-1))}
    if recipe.encoders.confidence_scale == "rank":
        train = [values[c.id] for c in every if c.split == recipe.data.split] or list(values.values())
        values = rank_scale(values, train)
    write_jsonl(({"id": k, "confidence": round(v, 4)} for k, v in values.items()), out / "confidence.jsonl")
    result: dict[str, Any] = {}
    if oof:
        in_sample = [float(p) for c, p in zip(every, pred["emotion"].max(-1)) if c.id in oof]
        result.update(train_confidence_in_sample=float(np.mean(in_sample)),
                      train_confidence_cross_fitted=float(np.mean(list(oof.values()))))
    if recipe.eval.enabled and recipe.eval.split:
        keep = [i for i, c in enumerate(every) if c.split == recipe.eval.split]
        if keep:
            part = {k: v[keep] for k, v in pred.items()}
            result = {**head_metrics(part, [every[i] for i in keep], heads.vocab), **result}
            write_text(out / "eval.json", json.dumps(result, indent=2))
            print(f"[encoders] {recipe.eval.split} split ({result['n']} clips): "
                  + ", ".join(f"{k}={v:.3f}" for k, v in result.items() if isinstance(v, float)))
    return result


def main(recipe: Recipe) -> dict[str, Any]:
    """Train the towers' heads, save the model (towers updated) and ``confidence.jsonl``; return the head metrics."""
    from ..evaluation.report import plot_curves
    from .stage import load_stage_model

    out = setup_output(recipe)
    model, processor = load_stage_model(recipe)
    trainer, heads = build_trainer(recipe, model, processor, out)
    if int(recipe.trainer.get("max_steps", -1)) != 0:
        trainer.train()
        plot_curves(out)
    for m in sorted(set(heads.modalities) - heads.seen):
        print(f"[encoders] no training clip has {m} input: its tower keeps no readout", flush=True)
        model.model.drop_readout(m)
    save_final(model, processor, out)
    out_of_fold = cross_fitted_confidence(recipe, out) if int(recipe.trainer.get("max_steps", -1)) > 0 else {}
    return finish(recipe, out, heads, trainer.data_collator, out_of_fold)
