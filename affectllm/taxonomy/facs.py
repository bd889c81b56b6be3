"""FACS Action Unit vocabulary and EMFACS-style emotion prototypes (data in ``data/facs.json``).

AU codes are written ``AU<number>`` without zero padding (DESIGN.md §3). :func:`normalize_au` is the one AU
normaliser (the manifest reader, the parser and the metrics use it): a number that is not a FACS AU (``AU3``,
``AU99``) is not an AU code.

>>> normalize_au("AU04"), normalize_au("au 6"), normalize_au("R12A"), normalize_au(25), normalize_au("AU3")
('AU4', 'AU6', 'AU12', 'AU25', None)
>>> prototype_aus("happy")
['AU6', 'AU12']
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

from affectllm.taxonomy.builtin import default_taxonomy, read_data_text

# Optional side prefix (L/R/U), "AU", number, optional intensity letter A-E: "AU06", "au 12", "R12A", "AU12B".
_AU_CODE = re.compile(r"^\s*(?:[lru]\s*)?(?:au\s*)?0*(\d{1,2})\s*[a-e]?\s*$", re.IGNORECASE)


@lru_cache(maxsize=1)
def _facs() -> dict:
    return json.loads(read_data_text("facs.json"))


AU_NAMES: dict[str, str] = {f"AU{n}": name for n, name in _facs()["aus"].items()}


def normalize_au(code: object) -> str | None:
    """Canonical ``AU<n>`` for an AU code in any usual spelling (``"AU06"``, ``"au 6"``, ``"R6B"``, ``6``), or None
    when it is not a FACS AU (a number FACS does not define, another type, or text)."""
    if isinstance(code, int) and not isinstance(code, bool):
        code = str(code)
    match = _AU_CODE.match(code) if isinstance(code, str) else None
    if match is None:
        return None
    canonical = f"AU{int(match.group(1))}"
    return canonical if canonical in AU_NAMES else None


def au_name(code: str) -> str | None:
    """FACS name of an AU (``"AU6" -> "cheek raiser"``), or None for an unknown code."""
    canonical = normalize_au(code)
    return AU_NAMES.get(canonical) if canonical else None


def emotion_prototypes() -> dict[str, list[str]]:
    """EMFACS-style prototypes: core emotion (Ekman wheel) -> AU codes (``{"happiness": ["AU6", "AU12"], ...}``)."""
    return {emotion: [f"AU{n}" for n in aus] for emotion, aus in _facs()["prototypes"].items()}


def prototype_aus(label: str) -> list[str]:
    """Prototype AUs of a free-text emotion label, through its Ekman core (``"joyful" -> ["AU6", "AU12"]``)."""
    core = default_taxonomy().normalize(label, "ekman", "level1")
    return emotion_prototypes().get(core or "", [])
