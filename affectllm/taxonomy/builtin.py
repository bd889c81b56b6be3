"""affectllm's own default taxonomy, shipped in the package (no MER tables needed).

Data files under ``affectllm/taxonomy/data/``:

* ``wheels.json``: the wheels (Ekman, Parrott, Plutchik), hand-written from the published emotion models, and the
  words that mean ``neutral``.
* ``forms.tsv`` / ``synonyms.tsv``: word forms and synonyms generated once from Princeton WordNet 3.0 by
  ``scripts/build_taxonomy.py`` and committed. ``docs/taxonomy.md`` says how and under which licenses.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

from affectllm.taxonomy.wheel import Taxonomy, Wheel

DATA_PACKAGE = "affectllm.taxonomy.data"
NEUTRAL = "neutral"


def read_data_text(name: str) -> str:
    """Text of a data file shipped in ``affectllm/taxonomy/data``."""
    return resources.files(DATA_PACKAGE).joinpath(name).read_text(encoding="utf-8")


def read_word_table(name: str) -> dict[str, list[str]]:
    """A two-column TSV ``word<TAB>a,b,c`` as ``{word: [a, b, c]}`` ('#' lines are comments)."""
    table: dict[str, list[str]] = {}
    for line in read_data_text(name).splitlines():
        if not line or line.startswith("#"):
            continue
        word, _, values = line.partition("\t")
        table[word] = [v for v in values.split(",") if v]
    return table


def wheel_spec() -> dict[str, Any]:
    """The parsed ``wheels.json``."""
    return json.loads(read_data_text("wheels.json"))


def wheel_rows(tree: dict[str, dict[str, list[str]]]) -> list[tuple[str, str, str]]:
    """``{core: {middle: [outer, ...]}}`` as ``(core, middle, outer)`` rows in file order."""
    return [
        (core, middle, outer) for core, mids in tree.items() for middle, outers in mids.items() for outer in outers
    ]


@lru_cache(maxsize=1)
def default_taxonomy() -> Taxonomy:
    """affectllm's default taxonomy (wheels ``ekman``, ``parrott``, ``plutchik``; neutral is its own class).

    Loaded once per process; the returned object caches normalised labels, so share it.
    """
    spec = wheel_spec()
    wheels = [Wheel.from_rows(name, wheel_rows(w["tree"])) for name, w in spec["wheels"].items()]
    forms = read_word_table("forms.tsv")
    synonyms = read_word_table("synonyms.tsv")
    for word in set().union(*(w.words() for w in wheels)):
        # A wheel word is a form of itself only (plus the hand-written forms below) and its own only synonym, so
        # a generated derivation never moves a wheel word to another cluster.
        forms[word] = [word]
        synonyms[word] = [word]
    for form, bases in spec["forms"].items():
        forms[form] = sorted({*forms.get(form, ()), *bases})
    return Taxonomy("affectllm", wheels, forms, synonyms, neutral=NEUTRAL, neutral_forms=spec["neutral"])
