"""Evidence confidence: how likely an answer is right, read from what the model perceived rather than from the
number it wrote.

The model's own perception gives a distribution over the primary emotion: each warm-started tower's readout (stage
0's heads, kept in the tower; :meth:`~affectllm.model.modeling.AffectLlmModel.readout_emotions`; the words tower's
among them where the model has one) and, for a model without a words tower, a transcript readout (bag of word
n-grams -> emotion, a logistic regression fitted on the training split's transcripts), combined as conditionally
independent experts: ``P(e | x_1..x_k) ∝ prod_m P(e | x_m) / P(e)^(k-1)`` with ``P(e)`` the training split's
emotion frequencies (each expert learned that prior; a plain product would count it k times and be overconfident:
on the demo's test clips the corrected product ranks answers as well, AUROC 0.795 vs 0.791, and its raw ECE is
0.095 vs 0.111). An answer's *evidence* is the probability mass of the emotions for which it would be judged right:
``sum_e P(e | clip) * 1[answer correct if the gold were e]``, with the one judgement of correctness the
calibration reward and the metrics use (:class:`~affectllm.evaluation.runner.Correctness`).

The calibration stage fits its post-hoc map on this number (``calibrate.posthoc_input: evidence``) instead of the
stated confidence when the LLM's stated number ranks answers poorly: on EmoWorld the tiny LLM states its confidence
with AUROC 0.65 while the evidence of the same answers has 0.79 (docs/emoworld.md). It is a verifier over the
model's own heads, in the line of P(IK) probes (Kadavath et al. 2022) and calibrators that predict an answer's
correctness (Mielke et al. 2022): label rows then carry the mapped evidence as ``confidence`` and the LLM's stated
number as ``confidence_raw``. Saved as plain numbers in ``evidence.json`` beside the model (no pickles).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..inputs.collate import build_prompt_inputs
from ..jsonl import write_text
from ..model.configuration import TOWERS
from ..types import Clip

FILE = "evidence.json"
Judge = Callable[[Sequence[str], Sequence[str]], "bool | None"]


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


@dataclass
class TranscriptReadout:
    """Emotion from the words alone: word 1-2-gram counts (scikit-learn's ``CountVectorizer``, rebuilt at load time
    from the saved vocabulary) into a multinomial logistic regression; plain numbers, so no pickle is loaded."""

    emotions: list[str]
    terms: list[str]
    coef: list[list[float]]
    intercept: list[float]
    ngram_range: tuple[int, int] = (1, 2)

    @classmethod
    def fit(cls, transcripts: Sequence[str], emotions: Sequence[str], labels: Sequence[str], min_df: int = 2,
            c: float = 1.0) -> TranscriptReadout | None:
        """Fit on (transcript, gold emotion) pairs; ``labels`` fixes the output order. None when there are too few
        transcripts or emotions to fit on (fewer than 2 classes, or no word seen ``min_df`` times)."""
        from sklearn.feature_extraction.text import CountVectorizer
        from sklearn.linear_model import LogisticRegression

        pairs = [(t, e) for t, e in zip(transcripts, emotions, strict=True) if t and t.strip() and e in labels]
        if len({e for _, e in pairs}) < 2:
            return None
        vec = CountVectorizer(ngram_range=(1, 2), min_df=min_df)
        try:
            x = vec.fit_transform([t for t, _ in pairs])
        except ValueError:  # no term kept
            return None
        lr = LogisticRegression(C=c, max_iter=2000).fit(x, [labels.index(e) for _, e in pairs])
        coef = np.zeros((len(labels), x.shape[1]))
        bias = np.full(len(labels), -30.0)  # an emotion never seen with words gets (almost) no mass from them
        seen = lr.classes_.tolist()
        if len(seen) == 2:  # scikit-learn's binary case: one row of coefficients for the second class
            coef[seen[1]], bias[seen[1]], bias[seen[0]] = lr.coef_[0], lr.intercept_[0], 0.0
        else:
            coef[seen], bias[seen] = lr.coef_, lr.intercept_
        terms = sorted(vec.vocabulary_, key=vec.vocabulary_.get)
        return cls(list(labels), terms, coef.round(5).tolist(), bias.round(5).tolist())

    def log_probs(self, transcripts: Sequence[str | None]) -> np.ndarray:
        """``[n, E]`` log-probabilities; a clip without words gets a row of zeros (no opinion)."""
        from sklearn.feature_extraction.text import CountVectorizer

        vec = CountVectorizer(ngram_range=tuple(self.ngram_range), vocabulary=self.terms)
        out = np.zeros((len(transcripts), len(self.emotions)))
        rows = [i for i, t in enumerate(transcripts) if t and t.strip()]
        if rows:
            x = vec.transform([transcripts[i] for i in rows])
            out[rows] = _log_softmax(np.asarray(x @ np.asarray(self.coef).T) + np.asarray(self.intercept))
        return out


@dataclass
class Evidence:
    """The clip's emotion posterior from the towers' readouts and the transcript readout, and an answer's evidence.

    Attributes:
        emotions: the emotions the posterior is over (the towers' readout emotions).
        text: the transcript readout, or None (towers only: also when a words tower reads the transcript).
        towers: the modalities whose readouts it was fitted with (for the record).
        log_prior: log training frequency of each emotion (add-one smoothed; empty: uniform).
    """

    emotions: list[str]
    text: TranscriptReadout | None = None
    towers: list[str] = field(default_factory=list)
    log_prior: list[float] = field(default_factory=list)

    @classmethod
    def fit(cls, config: Any, train: Sequence[Clip]) -> Evidence:
        """The towers' readout emotions of a model (its ``config``) and, unless it has a words tower with a
        readout, a transcript readout fitted on ``train``'s gold emotions.

        Raises:
            ValueError: the model has no tower readout and the clips no transcripts to fit one on.
        """
        towers = tower_readouts(config)
        emotions = next(iter(towers.values())) if towers else sorted({c.emotion for c in train if c.emotion})
        # a model with a words tower reads the transcript itself (its readout is one of the towers'): a second
        # transcript expert would count the words twice
        text = None if "words" in towers else TranscriptReadout.fit(
            [c.transcript or "" for c in train], [c.emotion or "" for c in train], emotions)
        if not towers and text is None:
            raise ValueError("evidence confidence needs tower readouts (run stage encoders first) or training clips "
                             "with transcripts and a gold emotion; use calibrate.posthoc_input=stated")
        counts = np.array([sum(c.emotion == e for c in train) for e in emotions], dtype=float) + 1.0
        return cls(list(emotions), text, sorted(towers), np.log(counts / counts.sum()).round(6).tolist())

    @torch.no_grad()
    def posteriors(self, model: Any, processor: Any, store: Any, clips: Sequence[Clip]) -> np.ndarray:
        """``[n, E]`` log-posteriors (normalised) of ``clips``: towers' readouts plus the transcript readout.
        ``store`` is where their media come from (a :class:`~affectllm.inputs.store.ClipStore`, with cached
        features when :meth:`~affectllm.inputs.store.ClipStore.features_for` accepted the model)."""
        inner = model.model
        modalities = model.config.enabled_modalities()
        e = len(self.emotions)
        prior = np.asarray(self.log_prior) if self.log_prior else np.full(e, -np.log(e))
        out = np.zeros((len(clips), len(self.emotions)))
        experts = np.zeros(len(clips))
        if self.text is not None:
            out += self.text.log_probs([c.transcript for c in clips])
            experts += [bool(c.transcript and c.transcript.strip()) for c in clips]
        for i, clip in enumerate(clips if tower_readouts(model.config) else []):
            inputs = build_prompt_inputs(processor, store, [clip], [""], modalities, model=model).inputs
            media = {k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()
                     if k not in ("input_ids", "attention_mask")}
            for names, logp in inner.readout_emotions(**media).values():
                out[i] += logp[0, [names.index(e) for e in self.emotions]].cpu().numpy()
                experts[i] += 1
        # k experts each carry the prior once; the posterior carries it once (no expert: the prior alone)
        return _log_softmax(out - (experts - 1)[:, None] * prior[None, :])

    def probability(self, labels: Sequence[str], log_posterior: np.ndarray, judge: Judge) -> float:
        """Evidence of one answer: the posterior mass of the emotions it would be judged right for (0.0 for an
        empty answer)."""
        if not labels:
            return 0.0
        right = np.array([bool(judge(labels, [e])) for e in self.emotions])
        return float(np.exp(log_posterior)[right].sum()) if right.any() else 0.0

    def save(self, model_dir: str | Path) -> Path:
        """Write ``evidence.json`` atomically into ``model_dir``."""
        path = Path(model_dir) / FILE
        write_text(path, json.dumps(asdict(self)))
        return path

    @classmethod
    def load(cls, model_dir: str | Path) -> Evidence | None:
        """The evidence model saved with a model, or None when it has none."""
        path = Path(model_dir) / FILE
        if not path.is_file():
            return None
        raw = json.loads(path.read_text())
        text = TranscriptReadout(**raw["text"]) if raw.get("text") else None
        return cls(raw["emotions"], text, raw.get("towers", []), raw.get("log_prior", []))


def tower_readouts(config: Any) -> dict[str, list[str]]:
    """Emotion names of each tower readout a model config (:class:`~affectllm.model.configuration.AffectLlmConfig`)
    records (modality -> names; empty without stage 0)."""
    out = {}
    for m in TOWERS:
        sub = config.encoder_config(m)
        if sub is not None and getattr(sub, "readout_emotions", None):
            out[m] = list(sub.readout_emotions)
    return out
