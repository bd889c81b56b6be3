"""Taxonomy: built-in wheels and word tables, the MER loader, the xlsx reader, FACS vocabulary."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from affectllm import taxonomy as tx
from affectllm.taxonomy.wheel import Taxonomy, Wheel
from affectllm.taxonomy.xlsx import read_xlsx_rows

WHEEL_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "emotion_wheel"
needs_mer = pytest.mark.skipif(not WHEEL_DIR.is_dir(), reason=f"MER emotion-wheel tables not found at {WHEEL_DIR}")


@pytest.mark.parametrize(
    ("label", "wheel", "level", "expected"),
    [
        ("happy", "ekman", "level1", "happiness"),
        ("Happiness ", "ekman", "level1", "happiness"),
        ("happily", "ekman", "level1", "happiness"),
        ("joyful", "ekman", "level1", "happiness"),
        ("elated", "ekman", "level2", "joy"),
        ("afraid", "plutchik", "level1", "fear"),
        ("terrified", "plutchik", "level2", "terror"),
        ("furious", "parrott", "level1", "anger"),
        ("worried", "ekman", "level2", "anxiety"),
        ("sadness", "ekman", "level2", "sadness"),  # a core that is also a middle maps to itself
        ("joy", "plutchik", "level2", "joy"),
        ("neutral", "plutchik", "level1", "neutral"),
        ("No Emotion", "ekman", "level2", "neutral"),
        ("banana", "ekman", "level1", None),
        ("", "ekman", "level1", None),
    ],
)
def test_builtin_normalisation(label: str, wheel: str, level: str, expected: str | None) -> None:
    assert tx.normalize_label(label, wheel=wheel, level=level) == expected


def test_builtin_api() -> None:
    assert tx.core_emotions() == ["happiness", "sadness", "anger", "fear", "surprise", "disgust", "contempt"]
    assert len(tx.core_emotions("plutchik")) == 8
    assert tx.wheel_names() == ["ekman", "parrott", "plutchik"]
    assert tx.normalize_labels(["happy", "joyful", "sad", "xyz"]) == ["happiness", "sadness"]
    near = tx.neighbours("joy")
    assert "delight" in near and "joy" not in near and "fear" not in near
    assert tx.neighbours("banana") == [] and tx.neighbours("neutral") == []
    with pytest.raises(KeyError, match="no wheel"):
        tx.normalize_label("happy", wheel="nope")
    with pytest.raises(ValueError, match="level"):
        tx.normalize_label("happy", level="level3")


def test_every_wheel_word_maps_to_its_own_cluster() -> None:
    """A word written on a wheel lands on that wheel's cluster for it (synonyms never steal wheel words)."""
    tax = tx.default_taxonomy()
    for wheel in tax.wheels:
        for core, _middle, outer in wheel.rows:
            assert tax.normalize_uncached(outer, wheel.name, "level1") == wheel.maps["level1"][outer] == core
            assert tax.normalize_uncached(outer, wheel.name, "level2") == wheel.maps["level2"][outer]


def test_generated_tables_are_sane() -> None:
    tax = tx.default_taxonomy()
    wheel_words = set().union(*(w.words() for w in tax.wheels))
    assert len(tax.forms) > 2000 and len(tax.synonyms) > 500
    assert all(set(v) <= wheel_words for v in tax.synonyms.values())  # synonyms only point at wheel words
    assert all(k == k.strip().lower() and k for k in tax.forms)


def test_wheel_last_row_wins_and_level2_core() -> None:
    wheel = Wheel.from_rows("w", [("Sad", "Hurt", "Lonely"), ("sad", "grief", "x"), ("Mad", "hostile", "lonely ")])
    assert wheel.maps["level1"]["lonely"] == "mad" and wheel.maps["level2"]["lonely"] == "hostile"
    assert wheel.maps["level2"]["sad"] == "grief"  # sorted(middles)[0]
    assert wheel.cores() == ["sad", "mad"]


def test_alphabetical_candidate_order_decides() -> None:
    wheel = Wheel.from_rows("w", [("a", "a1", "zeta"), ("b", "b1", "alpha")])
    tax = Taxonomy("t", [wheel], forms={"x": ["x"]}, synonyms={"x": ["zeta", "alpha"]})
    assert tax.candidates("X ") == ("alpha", "zeta")
    assert tax.normalize("x") == "b"
    with pytest.raises(ValueError):
        Taxonomy("t", [], {}, {})


def test_cache_agrees_with_uncached() -> None:
    tax = tx.default_taxonomy()
    for word in ["happy", "fearfully", "grieving", "nope", "NEUTRAL"]:
        for level in tx.LEVELS:
            cached = tax.normalize_all(word, level)
            assert cached == tuple(tax.normalize_uncached(word, w, level) for w in tax.wheel_names)
            assert tax.normalize_all(word, level) is cached  # the second call is served from the cache


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("AU6", "AU6"),
        ("AU06", "AU6"),
        ("au 12", "AU12"),
        ("R12A", "AU12"),
        ("AU 004", "AU4"),
        ("AU3", None),
        ("AU99", None),
        ("", None),
        ("happy", None),
        ("12", "AU12"),
        (26, "AU26"),
        (3, None),
        (True, None),
        (None, None),
    ],
)
def test_normalize_au(code: object, expected: str | None) -> None:
    assert tx.normalize_au(code) == expected


def test_one_au_normaliser_for_manifest_parser_and_metrics() -> None:
    from affectllm.data.manifest import normalize_au as manifest_normalize_au
    from affectllm.data.manifest import validate_row
    from affectllm.metrics import au_f1_sample
    from affectllm.parsing import extract_aus

    assert manifest_normalize_au is tx.normalize_au
    # a non-FACS number is an error on its line and field in a manifest, as the parser and metrics drop it
    (problem,) = [p for p in validate_row({"id": "a", "transcript": "hi", "aus": ["AU6", "AU3"]}, 7, "m.jsonl")
                  if p.field.startswith("aus")]
    assert (problem.severity, problem.field, problem.line) == ("error", "aus[1]", 7) and "FACS" in problem.message
    assert extract_aus("AU3 and AU6") == ["AU6"] and au_f1_sample(["AU6"], ["AU6", "AU3"]) == 1.0


def test_facs_data() -> None:
    assert tx.au_name("AU12") == "lip corner puller" and tx.au_name("AU3") is None
    protos = tx.emotion_prototypes()
    assert protos["happiness"] == ["AU6", "AU12"]
    assert set(protos) == set(tx.core_emotions())
    assert all(au in tx.AU_NAMES for aus in protos.values() for au in aus)
    assert tx.prototype_aus("joyful") == ["AU6", "AU12"] and tx.prototype_aus("neutral") == []


def test_xlsx_reader_cells_and_gaps(tmp_path: Path) -> None:
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    sheet = book.active
    sheet["A1"], sheet["C1"], sheet["B3"], sheet["A3"] = "level1", "inline", 7, "=1+1"
    sheet["A5"].font = openpyxl.styles.Font(bold=True)  # a styled but empty cell: no row of its own
    book.save(tmp_path / "t.xlsx")
    # a formula without a cached value (openpyxl writes none) reads as empty: data_only, no formula text
    assert read_xlsx_rows(tmp_path / "t.xlsx") == [["level1", None, "inline"], [None, None, None], [None, "7", None]]


def test_xlsx_reader_without_openpyxl_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openpyxl", None)  # import openpyxl now raises ImportError
    with pytest.raises(ImportError, match=r"affectllm\[mer\]"):
        read_xlsx_rows(tmp_path / "t.xlsx")


@needs_mer
def test_mer_loader_hand_checked() -> None:
    new = tx.get_taxonomy(WHEEL_DIR, "mer2026")
    old = tx.get_taxonomy(WHEEL_DIR, "mer2025")
    assert new.wheel_names == [f"wheel{k}" for k in range(1, 6)] and new is tx.load_mer_taxonomy(WHEEL_DIR)
    assert tx.core_emotions(taxonomy=new) == ["mad", "disgusted", "sad", "happy", "surprised", "scared"]
    # README: the legacy word forms list `fear` under `fearless`, so `fear` lands on happy on wheels 2-5.
    assert new.normalize_all("fear") == ("scared", "fearful", "scared", "fear", "scared")
    assert old.normalize_all("Fear ") == ("scared", "happy", "joyful", "genius", "joyful")
    # `disappointed` is a middle of `disgusted` and an outer word of sad/hurt in wheel 2: the last row wins.
    assert new.wheel("wheel2").maps["level1"]["disappointed"] == "sad"
    assert new.normalize("disappointed", "wheel2", "level2") == "hurt"
    assert new.normalize("neutral", "wheel1") is None  # MER drops neutral
    with pytest.raises(ValueError):
        tx.load_mer_taxonomy(WHEEL_DIR, "mer2024")


def test_mer_loader_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="wheel1.xlsx"):
        tx.load_mer_taxonomy(tmp_path)
