"""Emotion wheels and the label normaliser shared by the built-in taxonomy and the MER tables.

A :class:`Taxonomy` holds one or more :class:`Wheel` objects plus two word tables:

* ``forms``: surface form -> base words (``"happily" -> ("happy",)``): inflections and derivations.
* ``synonyms``: base word -> wheel words (``"joyful" -> ("joy",)``).

Normalising a label for wheel ``k`` at level ``l`` follows the MER-UniBench emotion-wheel algorithm exactly
(``EW_METRIC.md``): lower/strip; drop the label if it is not a known form; collect the wheel words reachable through
``forms`` then ``synonyms``, sort them alphabetically and return the cluster of the first one that wheel ``k``
knows. affectllm adds one explicit rule: an optional ``neutral`` class whose word forms map to ``neutral`` on every
wheel (the MER tables have none, so ``neutral`` is dropped there, as upstream).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

LEVELS: tuple[str, ...] = ("level1", "level2")


@dataclass(frozen=True)
class Wheel:
    """One emotion wheel: rows of ``(core, middle, outer)`` and its word -> cluster maps.

    Attributes:
        name: wheel name (``"plutchik"``, ``"wheel1"``).
        rows: ``(core, middle, outer)`` triples in file order, lower-cased and stripped.
        maps: ``{"level1": {word: core}, "level2": {word: middle}}``.
    """

    name: str
    rows: tuple[tuple[str, str, str], ...]
    maps: Mapping[str, Mapping[str, str]] = field(repr=False)

    @classmethod
    def from_rows(cls, name: str, rows: Iterable[Sequence[str]]) -> Wheel:
        """Build the cluster maps from ``(core, middle, outer)`` rows.

        level1: every word maps to its core. level2: a core maps to the alphabetically first of its middles, a
        middle to itself, an outer word to its middle. Core defaults are set first, then rows in file order, so
        a word listed in several rows keeps the assignment of its last row (as upstream), and a word that is
        both a core and a middle (Plutchik's ``joy``) maps to itself at level 2.
        """
        clean = tuple(tuple(w.strip().lower() for w in row) for row in rows)
        middles: dict[str, set[str]] = {}
        for core, middle, _ in clean:
            middles.setdefault(core, set()).add(middle)
        level1: dict[str, str] = {core: core for core in middles}
        level2: dict[str, str] = {core: sorted(mids)[0] for core, mids in middles.items()}
        for core, middle, outer in clean:
            level1[middle] = core
            level1[outer] = core
            level2[middle] = middle
            level2[outer] = middle
        return cls(name=name, rows=clean, maps={"level1": level1, "level2": level2})  # type: ignore[arg-type]

    def cores(self) -> list[str]:
        """Core emotions in first-seen order."""
        return list(dict.fromkeys(row[0] for row in self.rows))

    def words(self) -> set[str]:
        """Every word on the wheel (all rings)."""
        return {w for row in self.rows for w in row}


class Taxonomy:
    """Wheels plus word tables; normalises free-text labels to wheel clusters (with a per-label cache).

    Args:
        name: taxonomy name (``"affectllm"``, ``"mer2026"``).
        wheels: the wheels, scored in this order.
        forms: surface form -> base words.
        synonyms: base word -> wheel words.
        neutral: canonical neutral label, or None to drop neutral words (the MER behaviour).
        neutral_forms: words that mean ``neutral`` (ignored when ``neutral`` is None).
    """

    def __init__(
        self,
        name: str,
        wheels: Sequence[Wheel],
        forms: Mapping[str, Sequence[str]],
        synonyms: Mapping[str, Sequence[str]],
        neutral: str | None = None,
        neutral_forms: Iterable[str] = (),
    ) -> None:
        if not wheels:
            raise ValueError("a taxonomy needs at least one wheel")
        self.name = name
        self.wheels: tuple[Wheel, ...] = tuple(wheels)
        self.forms = {k: tuple(v) for k, v in forms.items()}
        self.synonyms = {k: tuple(v) for k, v in synonyms.items()}
        self.neutral = neutral
        self.neutral_forms = frozenset(w.strip().lower() for w in neutral_forms) if neutral else frozenset()
        self._index = {w.name: i for i, w in enumerate(self.wheels)}
        self._candidates: dict[str, tuple[str, ...]] = {}
        self._tables: dict[str, dict[str, tuple[str | None, ...]]] = {level: {} for level in LEVELS}

    @property
    def wheel_names(self) -> list[str]:
        """Names of the wheels, in scoring order."""
        return [w.name for w in self.wheels]

    def wheel(self, name: str | None = None) -> Wheel:
        """The wheel called ``name`` (the first wheel when None)."""
        if name is None:
            return self.wheels[0]
        if name not in self._index:
            raise KeyError(f"taxonomy {self.name!r} has no wheel {name!r}; wheels: {', '.join(self.wheel_names)}")
        return self.wheels[self._index[name]]

    def candidates(self, label: str) -> tuple[str, ...]:
        """Wheel words reachable from ``label`` through forms then synonyms, sorted (order decides ties)."""
        key = label.lower().strip()
        bases = self.forms.get(key)
        if bases is None:
            return ()
        return tuple(sorted(w for b in bases for w in self.synonyms.get(b, ())))

    def normalize_uncached(self, label: str, wheel: str | None = None, level: str = "level1") -> str | None:
        """Cluster of ``label`` on one wheel at one level, or None when it maps to nothing (no cache)."""
        _check_level(level)
        key = label.lower().strip()
        if key in self.neutral_forms:
            return self.neutral
        mapping = self.wheel(wheel).maps[level]
        for word in self.candidates(key):
            if word in mapping:
                return mapping[word]
        return None

    def normalize_all(self, label: str, level: str = "level1") -> tuple[str | None, ...]:
        """Clusters of ``label`` on every wheel (a tuple in wheel order), cached per raw label string."""
        table = self._tables.get(level)
        if table is None:
            _check_level(level)  # raises: the tables are keyed by the valid levels (checked only on a miss: hot path)
        hit = table.get(label)  # type: ignore[union-attr]
        if hit is None:
            hit = tuple(self.normalize_uncached(label, w.name, level) for w in self.wheels)
            table[label] = hit
        return hit

    def normalize(self, label: str, wheel: str | None = None, level: str = "level1") -> str | None:
        """Cluster of ``label`` on ``wheel`` (first wheel when None) at ``level``; None when it maps to nothing."""
        index = 0 if wheel is None else self._index.get(wheel)
        if index is None:
            self.wheel(wheel)  # raises with the known names
        return self.normalize_all(label, level)[index]  # type: ignore[index]

    def clear_cache(self) -> None:
        """Forget cached normalisations (benchmarks; tables edited in place)."""
        for table in self._tables.values():
            table.clear()

    def vocabulary(self) -> set[str]:
        """Every surface form the taxonomy knows, neutral forms included."""
        return set(self.forms) | set(self.neutral_forms)


def _check_level(level: str) -> None:
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
