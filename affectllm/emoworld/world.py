"""EmoWorld's generative process: knobs, presets, the emotions and their cues, and the per-clip latent state.

A clip is drawn in this order (all from one generator seeded by ``(seed, index)``, so a clip never depends on
other clips or on the number of workers):

1. primary emotion ``e`` from :data:`PRIOR`; with probability ``blend_rate`` a secondary ``e2`` from
   :data:`BLENDS` with weight ``w ~ U(0.3, 0.45)``; intensity ``s ~ U(intensity_min, intensity_max)``;
2. face: AU apex intensities ``x = clip(s * m + N(0, cue_noise^2), 0, 1)`` with ``m`` the AU prototype of ``e``
   (for a blend ``max(m1, 2 w m2)``); the *gold* AUs are those with ``x >= AU_THRESHOLD``, i.e. what the pixels
   show, spurious activations included;
3. gold valence/arousal ``= clip((0.5 + 0.5 s) * VA(e) + N(0, 0.08^2))`` (blends mix VA); the voice is rendered
   from them plus ``N(0, (1.5 cue_noise)^2)`` noise;
4. transcript mode: ``neutral`` (share ``text_neutral``), ``misleading`` (share ``text_misleading``: the words
   carry another emotion, uniform over the rest) or ``carry`` (the words carry ``e``, named outright with
   probability ``text_explicit``, otherwise described as a situation);
5. missing modalities, each independently (never all three);
6. label noise: with probability ``label_noise`` the gold labels are those of a different, uniformly drawn
   emotion (an annotator error; the caption still describes what is there).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from affectllm.emoworld.render import AU_CODES
from affectllm.taxonomy import emotion_prototypes, normalize_label

AU_THRESHOLD = 0.25
EMOTIONS: tuple[str, ...] = ("happy", "sad", "angry", "fearful", "surprised", "disgusted")
PRIOR: dict[str, float] = {
    "happy": 0.27,
    "sad": 0.2,
    "angry": 0.16,
    "fearful": 0.12,
    "surprised": 0.13,
    "disgusted": 0.12,
}
# Apex intensity per AU at full expression (Du, Tao & Martinez 2014 frequencies, rounded). The AU *sets* follow the
# taxonomy's EMFACS prototypes (affectllm.taxonomy.emotion_prototypes), see _prototypes(); AUs listed here beyond
# them (AU25 lips part, AU17 chin raiser, AU10 upper lip raiser, ...) are EmoWorld's usual companions.
INTENSITY: dict[str, dict[int, float]] = {
    "happy": {6: 0.8, 12: 1.0, 25: 0.5},
    "sad": {1: 0.9, 4: 0.6, 15: 0.9, 17: 0.5},
    "angry": {4: 1.0, 5: 0.5, 7: 0.8, 23: 0.9, 17: 0.4},
    "fearful": {1: 0.8, 2: 0.6, 4: 0.6, 5: 0.9, 7: 0.4, 20: 0.9, 25: 0.6, 26: 0.3},
    "surprised": {1: 0.9, 2: 0.9, 5: 0.8, 25: 0.7, 26: 0.9},
    "disgusted": {4: 0.3, 9: 1.0, 10: 0.7, 15: 0.5, 17: 0.4},
}


def _prototypes() -> dict[str, dict[int, float]]:
    """EmoWorld's prototypes: the taxonomy's EMFACS AU set of each emotion (the AUs the face can draw, at
    :data:`INTENSITY` or 0.8) plus EmoWorld's companions from :data:`INTENSITY`."""
    emfacs = emotion_prototypes()
    out = {}
    for emotion in EMOTIONS:
        codes = [int(c[2:]) for c in emfacs.get(normalize_label(emotion) or "", [])]
        proto = {c: INTENSITY[emotion].get(c, 0.8) for c in codes if c in AU_CODES}
        out[emotion] = {**proto, **INTENSITY[emotion]}
    return out


PROTOTYPES: dict[str, dict[int, float]] = _prototypes()
# (valence, arousal) at full intensity (Russell's circumplex, rounded).
AFFECT: dict[str, tuple[float, float]] = {
    "happy": (0.8, 0.5),
    "sad": (-0.7, -0.5),
    "angry": (-0.6, 0.8),
    "fearful": (-0.7, 0.6),
    "surprised": (0.2, 0.8),
    "disgusted": (-0.6, 0.3),
}
# Compound expressions (Du, Tao & Martinez 2014): primary -> possible secondaries.
BLENDS: dict[str, tuple[str, ...]] = {
    "happy": ("surprised",),
    "sad": ("angry", "fearful", "disgusted"),
    "angry": ("disgusted", "sad"),
    "fearful": ("surprised", "sad"),
    "surprised": ("happy", "fearful"),
    "disgusted": ("angry", "sad"),
}
BLEND_WEIGHT = (0.3, 0.45)
VA_NOISE = 0.08
TEXT_MODES: tuple[str, ...] = ("carry", "neutral", "misleading")


@dataclass
class Knobs:
    """Every setting of the generative process; ``key=value`` overrides address these fields by name."""

    text_neutral: float = 0.25  # share of transcripts with no emotional content
    text_misleading: float = 0.15  # share whose words carry a different emotion than face and voice
    text_explicit: float = 0.5  # of the carrying transcripts, share that name the emotion (others imply it)
    missing_video: float = 0.1
    missing_audio: float = 0.1
    missing_text: float = 0.1
    cue_noise: float = 0.2  # AU apex noise (std); voice affect noise is 1.5x this
    label_noise: float = 0.05
    blend_rate: float = 0.2
    intensity_min: float = 0.35
    intensity_max: float = 1.0
    min_seconds: float = 2.0
    max_seconds: float = 4.0
    size: int = 96  # frame side in pixels (a multiple of 4)
    fps: int = 12
    sample_rate: int = 16000
    head_motion: float = 0.5
    clutter: float = 0.3
    pixel_noise: float = 0.02
    voice: str = "numpy"  # numpy | espeak | auto (espeak-ng when installed, else numpy)
    val_share: float = 0.15
    test_share: float = 0.15
    workers: int = 1  # processes; the output does not depend on it

    def validate(self) -> Knobs:
        """Check ranges; return self.

        Raises:
            ValueError: a knob is out of range, with the knob's name and the allowed range.
        """
        shares = (
            "text_neutral",
            "text_misleading",
            "text_explicit",
            "missing_video",
            "missing_audio",
            "missing_text",
            "label_noise",
            "blend_rate",
            "head_motion",
            "clutter",
            "val_share",
            "test_share",
        )
        for name in shares:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"EmoWorld knob {name}={getattr(self, name)} must be in [0, 1]")
        checks = [
            (self.text_neutral + self.text_misleading <= 1.0, "text_neutral + text_misleading must be <= 1"),
            (
                0.0 <= self.cue_noise <= 1.0 and 0.0 <= self.pixel_noise <= 0.5,
                "cue_noise in [0, 1], pixel_noise in [0, 0.5]",
            ),
            (0.0 < self.intensity_min <= self.intensity_max <= 1.0, "need 0 < intensity_min <= intensity_max <= 1"),
            (0.5 <= self.min_seconds <= self.max_seconds <= 30.0, "need 0.5 <= min_seconds <= max_seconds <= 30"),
            (16 <= self.size <= 512 and self.size % 4 == 0, "size must be a multiple of 4, in [16, 512]"),
            (1 <= self.fps <= 60, "fps must be in [1, 60]"),
            (8000 <= self.sample_rate <= 48000, "sample_rate must be in [8000, 48000]"),
            (self.voice in ("numpy", "espeak", "auto"), "voice must be numpy, espeak or auto"),
            (self.val_share + self.test_share < 1.0, "val_share + test_share must be < 1"),
            (self.workers >= 1, "workers must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"EmoWorld knobs: {message}")
        return self


PRESETS: dict[str, dict[str, Any]] = {
    "easy": dict(
        text_neutral=0.1,
        text_misleading=0.0,
        text_explicit=0.8,
        missing_video=0.0,
        missing_audio=0.0,
        missing_text=0.0,
        cue_noise=0.05,
        label_noise=0.0,
        blend_rate=0.05,
        intensity_min=0.7,
        head_motion=0.0,
        clutter=0.0,
        pixel_noise=0.0,
    ),
    "default": {},
    "hard": dict(
        text_neutral=0.35,
        text_misleading=0.3,
        text_explicit=0.3,
        missing_video=0.2,
        missing_audio=0.2,
        missing_text=0.2,
        cue_noise=0.3,
        label_noise=0.1,
        blend_rate=0.35,
        intensity_min=0.2,
        intensity_max=0.8,
        head_motion=1.0,
        clutter=0.8,
        pixel_noise=0.04,
    ),
}


def _convert(name: str, raw: str, current: Any) -> Any:
    try:
        if isinstance(current, bool):
            return raw.lower() in ("1", "true", "yes", "on")
        return type(current)(raw)
    except ValueError as err:
        raise ValueError(f"EmoWorld knob {name}={raw!r}: expected {type(current).__name__}") from err


def resolve_knobs(preset: str = "default", overrides: list[str] | None = None) -> Knobs:
    """Knobs of a preset with ``key=value`` overrides applied and validated.

    >>> resolve_knobs("hard", ["size=64"]).size, resolve_knobs("hard").cue_noise
    (64, 0.3)

    Raises:
        ValueError: unknown preset, malformed override, unknown key (the message lists the known keys) or a
            value out of range.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown EmoWorld preset {preset!r}; known: {', '.join(PRESETS)}")
    knobs = Knobs(**PRESETS[preset])
    known = [f.name for f in dataclasses.fields(Knobs)]
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"EmoWorld override {item!r} is not key=value")
        if key not in known:
            raise ValueError(f"unknown EmoWorld knob {key!r}; known: {', '.join(known)}")
        setattr(knobs, key, _convert(key, raw.strip(), getattr(knobs, key)))
    return knobs.validate()


@dataclass
class Latent:
    """The hidden state of one clip: everything the renderers and the oracle need."""

    index: int
    emotion: str
    blend: str | None
    weight: float
    intensity: float
    peaks: np.ndarray  # observed AU apex intensities [a] in AU_CODES order (what the face shows)
    valence: float
    arousal: float
    voice_va: tuple[float, float]  # (valence, arousal) the voice is rendered from
    text_mode: str
    text_emotion: str | None
    text_explicit: bool
    has: dict[str, bool] = field(default_factory=dict)  # video / audio / text present
    seconds: float = 3.0
    label_emotion: str = ""
    label_blend: str | None = None

    def gold_aus(self) -> list[str]:
        """Active AUs (apex >= :data:`AU_THRESHOLD`) as ``AU<n>`` codes, in AU number order."""
        return [f"AU{c}" for c, x in zip(AU_CODES, self.peaks, strict=True) if x >= AU_THRESHOLD]

    def au_intensity(self) -> dict[str, float]:
        """Apex intensity of each active AU (``{"AU12": 0.83}``), rounded to 3 decimals."""
        return {f"AU{c}": round(float(x), 3) for c, x in zip(AU_CODES, self.peaks, strict=True) if x >= AU_THRESHOLD}


def prototype(emotion: str, blend: str | None = None, weight: float = 0.0) -> np.ndarray:
    """AU prototype vector ``[a]`` of an emotion or a blend (``max(m1, 2 w m2)``)."""
    m = np.array([PROTOTYPES[emotion].get(c, 0.0) for c in AU_CODES])
    if blend is not None:
        m2 = np.array([PROTOTYPES[blend].get(c, 0.0) for c in AU_CODES])
        m = np.maximum(m, 2.0 * weight * m2)
    return m


def affect(emotion: str, blend: str | None = None, weight: float = 0.0) -> np.ndarray:
    """(valence, arousal) ``[2]`` of an emotion or a blend at full intensity."""
    va = np.array(AFFECT[emotion])
    return va if blend is None else (1 - weight) * va + weight * np.array(AFFECT[blend])


def _choice(rng: np.random.Generator, items: tuple[str, ...] | list[str], p: list[float] | None = None) -> str:
    return items[int(rng.choice(len(items), p=p))]


def sample_latent(knobs: Knobs, index: int, rng: np.random.Generator) -> Latent:
    """Draw the hidden state of clip ``index`` (see the module docstring for the order of draws)."""
    emotion = _choice(rng, EMOTIONS, [PRIOR[e] for e in EMOTIONS])
    blend, weight = None, 0.0
    if rng.random() < knobs.blend_rate:
        blend, weight = _choice(rng, BLENDS[emotion]), float(rng.uniform(*BLEND_WEIGHT))
    s = float(rng.uniform(knobs.intensity_min, knobs.intensity_max))
    peaks = np.clip(s * prototype(emotion, blend, weight) + rng.normal(0, knobs.cue_noise, len(AU_CODES)), 0, 1)
    va = np.clip((0.5 + 0.5 * s) * affect(emotion, blend, weight) + rng.normal(0, VA_NOISE, 2), -1, 1)
    voice = np.clip(va + rng.normal(0, 1.5 * knobs.cue_noise, 2), -1, 1)
    u = rng.random()
    mode = (
        "neutral"
        if u < knobs.text_neutral
        else "misleading"
        if u < knobs.text_neutral + knobs.text_misleading
        else "carry"
    )
    others = [e for e in EMOTIONS if e != emotion]
    text_emotion = {"carry": emotion, "neutral": None, "misleading": _choice(rng, others)}[mode]
    explicit = bool(rng.random() < knobs.text_explicit) or mode == "misleading"
    has = {m: bool(rng.random() >= getattr(knobs, f"missing_{m}")) for m in ("video", "audio", "text")}
    if not any(has.values()):
        has[_choice(rng, ("video", "audio", "text"))] = True
    seconds = max(1, round(float(rng.uniform(knobs.min_seconds, knobs.max_seconds)) * knobs.fps)) / knobs.fps
    label_emotion, label_blend = emotion, blend
    if rng.random() < knobs.label_noise:
        label_emotion, label_blend = _choice(rng, others), None
    return Latent(
        index=index,
        emotion=emotion,
        blend=blend,
        weight=weight,
        intensity=s,
        peaks=np.round(peaks, 4),
        valence=round(float(va[0]), 4),
        arousal=round(float(va[1]), 4),
        voice_va=(float(voice[0]), float(voice[1])),
        text_mode=mode,
        text_emotion=text_emotion,
        text_explicit=explicit,
        has=has,
        seconds=seconds,
        label_emotion=label_emotion,
        label_blend=label_blend,
    )
