"""EmoWorld text: transcripts that carry, hide or contradict the emotion; gold label sets; descriptive captions.

Label words come from the taxonomy (:func:`affectllm.taxonomy.neighbours`): only neighbours that normalise to the
same cluster as the emotion on *every* wheel are used, so a paraphrased gold label never adds a cluster.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from affectllm.emoworld.render import AU_CODES
from affectllm.emoworld.world import AFFECT, AU_THRESHOLD, EMOTIONS, Latent, prototype
from affectllm.taxonomy import au_name, default_taxonomy, neighbours

# Words a speaker uses to name the emotion (explicit transcripts, misleading claims).
SAY: dict[str, tuple[str, ...]] = {
    "happy": ("happy", "glad", "cheerful", "delighted", "thrilled"),
    "sad": ("sad", "unhappy", "heartbroken", "miserable", "depressed"),
    "angry": ("angry", "furious", "annoyed", "irritated", "outraged"),
    "fearful": ("scared", "afraid", "terrified", "frightened", "nervous"),
    "surprised": ("surprised", "amazed", "astonished", "shocked", "startled"),
    "disgusted": ("disgusted", "repulsed", "revolted", "sickened", "grossed out"),
}
EXPLICIT = (
    "I am so {w} right now.",
    "Honestly, I feel {w} about all of this.",
    "I'm really {w}, I can't hide it.",
    "It makes me {w} every time I think about it.",
    "You have no idea how {w} I am.",
)
# Situations that imply the emotion without naming it.
IMPLY: dict[str, tuple[str, ...]] = {
    "happy": (
        "We finally got the keys to our new house today.",
        "My sister just had a healthy baby girl.",
        "I passed the exam I studied for all year.",
        "They offered me the job this morning.",
    ),
    "sad": (
        "My grandfather passed away last week.",
        "The project I spent two years on was cancelled.",
        "Our dog died this morning.",
        "She moved to another country and we won't see each other.",
    ),
    "angry": (
        "He took credit for my work in front of everyone again.",
        "Someone keyed my car in the parking lot.",
        "They cancelled my flight and won't refund a cent.",
        "My landlord kept the deposit for no reason.",
    ),
    "fearful": (
        "There is someone following me and I can't lose them.",
        "The doctor wants to run more tests on the lump.",
        "The brakes stopped working on the highway.",
        "I heard glass break downstairs at three in the morning.",
    ),
    "surprised": (
        "I opened the door and all my old friends were standing there.",
        "The letter arrived a month early.",
        "It turns out my neighbour plays drums in a touring band.",
        "The whole room went dark without warning.",
    ),
    "disgusted": (
        "There was a hair baked into the bread they served me.",
        "The fridge smelled of rotten meat when I opened it.",
        "He licked the spoon and put it back in the jar.",
        "Maggots were crawling in the bin.",
    ),
}
NEUTRAL = (
    "I took the bus downtown and bought some bread.",
    "The meeting is at three on Tuesday.",
    "We usually park behind the library.",
    "The report has four sections and an appendix.",
    "I moved the chairs to the other room.",
    "The train leaves from platform two.",
    "My brother lives near the river.",
    "We need more paper for the printer.",
)
# What each AU looks like, for captions.
LOOKS: dict[int, str] = {
    1: "the inner brows rise",
    2: "the outer brows rise",
    4: "the brows lower and draw together",
    5: "the upper lids open wide",
    6: "the cheeks lift",
    7: "the lids tighten",
    9: "the nose wrinkles",
    10: "the upper lip rises",
    12: "the lip corners pull up",
    15: "the lip corners turn down",
    17: "the chin pushes up",
    20: "the lips stretch sideways",
    23: "the lips press thin",
    25: "the lips part",
    26: "the jaw drops",
}


@cache
def label_words(emotion: str) -> tuple[str, ...]:
    """Paraphrases of ``emotion`` that normalise to the same cluster on every wheel (sorted; may be empty)."""
    tax = default_taxonomy()
    target = tax.normalize_all(emotion)
    same = tuple(w for w in neighbours(emotion) if " " not in w and tax.normalize_all(w) == target)
    return same


def gold_labels(emotion: str, blend: str | None, rng: np.random.Generator) -> list[str]:
    """Open-vocabulary gold labels: the emotion, 0-2 paraphrases, and the blend partner (plus 0-1 paraphrase)."""
    out = [emotion]
    words = label_words(emotion)
    if words:
        k = int(rng.integers(0, min(2, len(words)) + 1))
        out += [words[i] for i in sorted(rng.choice(len(words), size=k, replace=False))]
    if blend is not None:
        out.append(blend)
        extra = label_words(blend)
        if extra and rng.random() < 0.5:
            out.append(extra[int(rng.integers(len(extra)))])
    return out


def transcript(lat: Latent, rng: np.random.Generator) -> str:
    """The words spoken in the clip, following the latent text mode."""
    lead = NEUTRAL[int(rng.integers(len(NEUTRAL)))]
    if lat.text_emotion is None:
        second = NEUTRAL[int(rng.integers(len(NEUTRAL)))]
        return lead if second == lead or rng.random() < 0.4 else f"{lead} {second}"
    if lat.text_explicit:
        say = SAY[lat.text_emotion]
        line = EXPLICIT[int(rng.integers(len(EXPLICIT)))].format(w=say[int(rng.integers(len(say)))])
    else:
        options = IMPLY[lat.text_emotion]
        line = options[int(rng.integers(len(options)))]
    return f"{lead} {line}" if rng.random() < 0.3 else line


def _degree(x: float) -> str:
    return "slight" if x < 0.45 else "clear" if x < 0.75 else "strong"


def face_sentence(lat: Latent) -> str:
    """What the face shows, naming each active AU with its FACS name and intensity."""
    if not lat.has["video"]:
        return "Face: no video is available."
    active = sorted(((x, c) for c, x in zip(AU_CODES, lat.peaks, strict=True) if x >= AU_THRESHOLD), reverse=True)
    if not active:
        return "Face: the face stays close to neutral; no action unit is clearly active."
    looks = ", ".join(LOOKS[c] for _, c in active)
    codes = "; ".join(f"AU{c} {au_name(f'AU{c}')}, {_degree(x)}" for x, c in active)
    return f"Face: {looks} ({codes})."


def _level(x: float, low: str, mid: str, high: str) -> str:
    return low if x < -0.3 else high if x > 0.3 else mid


def voice_sentence(lat: Latent) -> str:
    """What the voice sounds like: pitch, energy, tempo and quality, and the arousal/valence they suggest."""
    if not lat.has["audio"]:
        return "Voice: no audio is available."
    v, a = lat.voice_va
    quality = "breathy" if a < -0.3 else "tense, harsh" if v < -0.3 and a > 0.3 else "bright" if v > 0.3 else "even"
    return (
        f"Voice: {_level(a, 'low', 'moderate', 'raised')} pitch with {_level(a, 'flat', 'some', 'lively')} "
        f"intonation, {_level(a, 'soft', 'moderate', 'loud')} and {_level(a, 'slow', 'steady', 'fast')} "
        f"speech, a {quality} quality: {_level(a, 'low', 'medium', 'high')} arousal and "
        f"{_level(v, 'negative', 'neutral', 'positive')} valence."
    )


def text_sentence(lat: Latent, words: str | None) -> str:
    """What the words say and how they relate to the emotion."""
    if not lat.has["text"] or words is None:
        return "Words: no transcript is available."
    if lat.text_mode == "neutral":
        return f'Words: "{words}" carry no emotion.'
    if lat.text_mode == "carry":
        how = (
            "name the feeling outright"
            if lat.text_explicit
            else f"describe a situation that makes people feel {lat.text_emotion}"
        )
        return f'Words: "{words}" {how}.'
    nonverbal = lat.has["video"] or lat.has["audio"]
    tail = ", which the face and voice contradict" if nonverbal else "; nothing else can confirm it"
    return f'Words: "{words}" claim the speaker is {lat.text_emotion}{tail}.'


def _face_points_to(lat: Latent) -> str | None:
    """The emotion whose prototype best matches the visible AUs (cosine), when the face shows anything."""
    x = np.asarray(lat.peaks, dtype=float)
    if not lat.has["video"] or x.max() < AU_THRESHOLD:
        return None
    scores = {e: float(x @ prototype(e)) / (np.linalg.norm(prototype(e)) * np.linalg.norm(x)) for e in EMOTIONS}
    return max(scores, key=scores.__getitem__)


def reasoning(lat: Latent, labels: list[str]) -> str:
    """How the cues add up to the labels (the emotion the clip was generated with)."""
    parts = []
    face = _face_points_to(lat)
    if face is not None:
        parts.append(
            f"the facial actions match {face}"
            if face in (lat.emotion, lat.blend)
            else f"the facial actions are weak and could suggest {face}"
        )
    if lat.has["audio"]:
        va = np.array(lat.voice_va)
        fits = np.linalg.norm(va - (0.5 + 0.5 * lat.intensity) * np.array(AFFECT[lat.emotion])) < 0.6
        parts.append(f"the voice fits {lat.emotion}" if fits else "the voice is ambiguous")
    if lat.has["text"] and lat.text_mode == "carry":
        parts.append("the words agree")
    elif lat.has["text"] and lat.text_mode == "misleading" and (lat.has["video"] or lat.has["audio"]):
        parts.append("the words are discounted because the nonverbal cues outweigh them")
    mix = f", mixed with {lat.blend}" if lat.blend else ""
    because = "; ".join(parts) if parts else "the cues are faint"
    return f"Reasoning: {because}. So the person most likely feels {lat.emotion}{mix}: {', '.join(labels)}."


def caption(lat: Latent, words: str | None, labels: list[str]) -> str:
    """The descriptive caption (SFT target): face, voice and words cues, then the reasoning to ``labels``."""
    return " ".join([face_sentence(lat), voice_sentence(lat), text_sentence(lat, words), reasoning(lat, labels)])
