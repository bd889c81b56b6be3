"""EmoWorld's ceiling and floors: a Bayes oracle that knows the generative process, and two baselines.

* **oracle**: sees the clip's observable cues exactly as generated (the AU apex intensities the face shows, the
  affect the voice is rendered from, the emotion class the words carry, which modalities are present), never the
  gold labels. It computes the exact posterior over (emotion, blend partner) under the generative model of
  :mod:`affectllm.emoworld.world` (intensity and blend weight integrated on a grid; label noise included) and
  answers the label set with the highest expected per-sample F1. Its AUs are the visible ones when there is video
  and the posterior's likely AUs otherwise. Label noise, cue noise, missing modalities and misleading words bound it.
* **majority**: the most frequent gold emotion of the train split, and the most frequent gold AU set there.
* **keyword**: emotion words in the transcript, mapped through the taxonomy (the last one wins, since a speaker's
  closing words weigh most); the majority answer when none is found; AUs: the most frequent gold AU set of the
  train clips with that emotion.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from functools import cached_property
from itertools import combinations
from typing import Any

import numpy as np
from scipy.special import log_ndtr, logsumexp, ndtr

from affectllm.emoworld.render import AU_CODES
from affectllm.emoworld.world import (
    AU_THRESHOLD,
    BLEND_WEIGHT,
    BLENDS,
    EMOTIONS,
    PRIOR,
    VA_NOISE,
    Knobs,
    Latent,
    affect,
    prototype,
)
from affectllm.taxonomy import default_taxonomy

_GRID = 8


class Oracle:
    """Bayes-optimal answers from the latent cues of a clip (see the module docstring)."""

    def __init__(self, knobs: Knobs) -> None:
        self.k = knobs
        self.sigma = max(knobs.cue_noise, 0.02)
        self.voice_sigma = float(np.hypot(VA_NOISE, 1.5 * knobs.cue_noise))
        lo, hi = knobs.intensity_min, knobs.intensity_max
        self.s = lo + (np.arange(_GRID) + 0.5) / _GRID * (hi - lo)  # [S]

    @cached_property
    def _components(self) -> tuple[list[tuple[str, str | None]], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Hypotheses, and per mixture component: hypothesis index, log prior, AU prototype, affect."""
        hyps: list[tuple[str, str | None]] = [(e, None) for e in EMOTIONS]
        hyps += [(e, b) for e in EMOTIONS for b in BLENDS[e]]
        weights = np.linspace(*BLEND_WEIGHT, 3)
        rows, priors, protos, affects = [], [], [], []
        for h, (e, b) in enumerate(hyps):
            base = PRIOR[e] * ((1 - self.k.blend_rate) if b is None else self.k.blend_rate / len(BLENDS[e]))
            for w in [0.0] if b is None else weights:
                rows.append(h)
                priors.append(np.log(max(base, 1e-12)) - np.log(1 if b is None else len(weights)))
                protos.append(prototype(e, b, w))
                affects.append(affect(e, b, w))
        return hyps, np.array(rows), np.array(priors), np.array(protos), np.array(affects)

    def _joint(self, lat: Latent, use: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Log joint ``[C, S]`` of components and intensities with the observed cues, and AU means ``[C, S, A]``."""
        hyps, rows, priors, protos, affects = self._components
        mu = self.s[None, :, None] * protos[:, None, :]  # [C, S, A]
        logp = np.broadcast_to(priors[:, None] - np.log(_GRID), mu.shape[:2]).copy()  # [C, S]
        if "video" in use and lat.has["video"]:
            x = np.asarray(lat.peaks)[None, None, :]
            z = (x - mu) / self.sigma
            ll = np.where(
                x <= 0,
                log_ndtr(-mu / self.sigma),
                np.where(x >= 1, log_ndtr((mu - 1) / self.sigma), -0.5 * z * z - np.log(self.sigma)),
            )
            logp += ll.sum(-1)
        if "audio" in use and lat.has["audio"]:
            mean = (0.5 + 0.5 * self.s)[None, :, None] * affects[:, None, :]  # [C, S, 2]
            z = (np.asarray(lat.voice_va)[None, None, :] - mean) / self.voice_sigma
            logp += -0.5 * (z * z).sum(-1)
        if "text" in use and lat.has["text"] and lat.text_emotion is not None:
            carry = 1 - self.k.text_neutral - self.k.text_misleading
            other = self.k.text_misleading / (len(EMOTIONS) - 1)
            like = np.array([carry if hyps[r][0] == lat.text_emotion else other for r in rows])
            logp += np.log(np.maximum(like, 1e-12))[:, None]
        return logp, mu

    def posterior(self, lat: Latent, use: Sequence[str] = ("video", "audio", "text")) -> dict[frozenset[str], float]:
        """Posterior over the gold *label clusters* (one emotion, or a blend pair), label noise included."""
        hyps, rows, *_ = self._components
        logp, _ = self._joint(lat, use)
        post_c = np.exp(logsumexp(logp, axis=1) - logsumexp(logp))
        gold: dict[frozenset[str], float] = {}
        lam = self.k.label_noise
        for r, p in zip(rows, post_c, strict=True):
            e, b = hyps[r]
            key = frozenset((e,) if b is None else (e, b))
            gold[key] = gold.get(key, 0.0) + (1 - lam) * p
            for other in EMOTIONS:
                if other != e:
                    gold[frozenset((other,))] = gold.get(frozenset((other,)), 0.0) + lam * p / (len(EMOTIONS) - 1)
        return gold

    def predict(self, lat: Latent, use: Sequence[str] = ("video", "audio", "text")) -> tuple[list[str], list[str]]:
        """``(labels, aus)``: the label set with the highest expected F1 and the predicted AU codes."""
        gold = self.posterior(lat, use)
        marginal = {e: sum(p for g, p in gold.items() if e in g) for e in EMOTIONS}
        candidates = [frozenset((e,)) for e in EMOTIONS] + [frozenset(c) for c in combinations(EMOTIONS, 2)]
        score = {c: sum(p * 2 * len(c & g) / (len(c) + len(g)) for g, p in gold.items()) for c in candidates}
        best = max(candidates, key=lambda c: (score[c], -len(c)))
        labels = sorted(best, key=lambda e: -marginal[e])
        return labels, self._aus(lat, use)

    def _aus(self, lat: Latent, use: Sequence[str]) -> list[str]:
        if "video" in use and lat.has["video"]:
            return lat.gold_aus()
        logp, mu = self._joint(lat, use)
        w = np.exp(logp - logsumexp(logp))  # [C, S]
        active = (w[:, :, None] * ndtr((mu - AU_THRESHOLD) / self.sigma)).sum((0, 1))
        return [f"AU{c}" for c, p in zip(AU_CODES, active, strict=True) if p >= 0.4]


def _mode_set(sets: Sequence[tuple[str, ...]]) -> list[str]:
    counts = Counter(sets)
    return list(max(counts, key=lambda s: (counts[s], s))) if counts else []


class Baselines:
    """Majority and transcript-keyword baselines, fitted on the train rows."""

    def __init__(self, train_rows: Sequence[dict[str, Any]]) -> None:
        emotions = Counter(r["emotion"] for r in train_rows)
        self.majority = max(emotions, key=lambda e: (emotions[e], e)) if emotions else EMOTIONS[0]
        self.majority_aus = _mode_set([tuple(r.get("aus", [])) for r in train_rows])
        self.aus_by_emotion = {
            e: _mode_set([tuple(r.get("aus", [])) for r in train_rows if r["emotion"] == e]) for e in EMOTIONS
        }
        tax = default_taxonomy()
        self._cluster_to_emotion = {tax.normalize(e): e for e in EMOTIONS}
        self._tax = tax

    def majority_predict(self, row: dict[str, Any]) -> tuple[list[str], list[str]]:
        """The majority emotion and AU set, whatever the clip."""
        return [self.majority], self.majority_aus

    def keyword_emotion(self, text: str | None) -> str | None:
        """The EmoWorld emotion named last in ``text`` (through the taxonomy), or None."""
        found = None
        for word in re.findall(r"[a-z]+", (text or "").lower()):
            emotion = self._cluster_to_emotion.get(self._tax.normalize(word))
            found = emotion or found
        return found

    def keyword_predict(self, row: dict[str, Any]) -> tuple[list[str], list[str]]:
        """Labels from transcript keywords (majority fallback) and that emotion's usual AU set."""
        emotion = self.keyword_emotion(row.get("transcript"))
        if emotion is None:
            return self.majority_predict(row)
        return [emotion], self.aus_by_emotion.get(emotion) or self.majority_aus
