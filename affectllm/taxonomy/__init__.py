"""Emotion knowledge: wheels, word forms and synonyms, the MER tables loader, and the FACS AU vocabulary.

Public API (stable; other packages import these):

>>> core_emotions()
['happiness', 'sadness', 'anger', 'fear', 'surprise', 'disgust', 'contempt']
>>> normalize_label("Joyful")
'happiness'
>>> normalize_label("happily", wheel="plutchik")
'joy'
>>> normalize_label("elated", level="level2")
'joy'
>>> normalize_label("neutral"), normalize_label("banana")
('neutral', None)
>>> "delight" in neighbours("joy")
True
>>> au_name("AU06"), normalize_au("au 12")
('cheek raiser', 'AU12')

Pass ``taxonomy=get_taxonomy(wheel_dir="…/emotion_wheel", table="mer2026")`` to any function to use the
MER-UniBench tables instead of the built-in ones.
"""

from __future__ import annotations

from pathlib import Path

from affectllm.taxonomy.builtin import NEUTRAL, default_taxonomy
from affectllm.taxonomy.facs import AU_NAMES, au_name, emotion_prototypes, normalize_au, prototype_aus
from affectllm.taxonomy.mer import MER_TABLES, load_mer_taxonomy
from affectllm.taxonomy.wheel import LEVELS, Taxonomy, Wheel

DEFAULT_WHEEL = "ekman"

__all__ = [
    "AU_NAMES",
    "DEFAULT_WHEEL",
    "LEVELS",
    "MER_TABLES",
    "NEUTRAL",
    "Taxonomy",
    "Wheel",
    "au_name",
    "core_emotions",
    "default_taxonomy",
    "emotion_prototypes",
    "get_taxonomy",
    "load_mer_taxonomy",
    "neighbours",
    "normalize_au",
    "normalize_label",
    "normalize_labels",
    "prototype_aus",
    "wheel_names",
]


def get_taxonomy(wheel_dir: str | Path | None = None, table: str = "mer2026") -> Taxonomy:
    """The built-in taxonomy, or the MER tables read from ``wheel_dir`` when given.

    Args:
        wheel_dir: folder of the MER emotion-wheel tables; None for affectllm's own taxonomy.
        table: ``"mer2026"`` or ``"mer2025"`` word forms (only with ``wheel_dir``).
    """
    return default_taxonomy() if wheel_dir is None else load_mer_taxonomy(wheel_dir, table)


def wheel_names(taxonomy: Taxonomy | None = None) -> list[str]:
    """Names of the wheels of ``taxonomy`` (the built-in one when None), in scoring order."""
    return (taxonomy or default_taxonomy()).wheel_names


def _default_wheel(taxonomy: Taxonomy | None, wheel: str | None) -> tuple[Taxonomy, str]:
    tax = taxonomy or default_taxonomy()
    if wheel is None:
        wheel = DEFAULT_WHEEL if DEFAULT_WHEEL in tax.wheel_names else tax.wheel_names[0]
    return tax, wheel


def core_emotions(wheel: str | None = None, taxonomy: Taxonomy | None = None) -> list[str]:
    """Core (inner-ring) emotions of a wheel, in wheel order.

    Args:
        wheel: wheel name; None for the default wheel (``"ekman"`` in the built-in taxonomy: happiness, sadness,
            anger, fear, surprise, disgust, contempt).
        taxonomy: None for the built-in taxonomy.
    """
    tax, name = _default_wheel(taxonomy, wheel)
    return tax.wheel(name).cores()


def normalize_label(
    label: str, wheel: str | None = None, level: str = "level1", taxonomy: Taxonomy | None = None
) -> str | None:
    """Canonical wheel form of a free-text emotion label, or None when it maps to nothing.

    ``level1`` gives the core emotion (``"elated" -> "happiness"``), ``level2`` the middle ring
    (``"elated" -> "joy"``). Word forms and synonyms are resolved first (``"happily"``, ``"joyful"``). In the
    built-in taxonomy ``neutral`` (and ``"no emotion"``, ``"emotionless"``, …) gives ``"neutral"`` on every wheel;
    the MER tables drop it, as upstream.

    Args:
        label: one label, any case, surrounding spaces ignored.
        wheel: wheel name; None for the default wheel.
        level: ``"level1"`` or ``"level2"``.
        taxonomy: None for the built-in taxonomy.
    """
    tax, name = _default_wheel(taxonomy, wheel)
    return tax.normalize(label, name, level)


def normalize_labels(
    labels: list[str], wheel: str | None = None, level: str = "level1", taxonomy: Taxonomy | None = None
) -> list[str]:
    """:func:`normalize_label` over a list: unknown labels dropped, duplicates collapsed, first-seen order kept."""
    tax, name = _default_wheel(taxonomy, wheel)
    out = (tax.normalize(x, name, level) for x in labels)
    return list(dict.fromkeys(x for x in out if x is not None))


def neighbours(label: str, wheel: str | None = None, taxonomy: Taxonomy | None = None) -> list[str]:
    """Words near ``label`` on a wheel: its same-branch (same middle ring) wheel words and their synonyms.

    The label is first normalised to its level-2 cluster; the result lists that branch's wheel words followed by
    the words whose synonyms land on them, sorted, the label itself excluded. Empty when the label maps to nothing
    (or is neutral). Useful to write paraphrased labels (synthetic data) that the EW metric still scores as equal.
    """
    tax, name = _default_wheel(taxonomy, wheel)
    middle = tax.normalize(label, name, "level2")
    if middle is None or middle == tax.neutral:
        return []
    branch = {w for row in tax.wheel(name).rows if row[1] == middle for w in row[1:]}
    near = {s for s, targets in tax.synonyms.items() if branch.intersection(targets)}
    key = label.lower().strip()
    return sorted(branch - {key}) + sorted(near - branch - {key})
