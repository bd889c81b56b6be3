"""Taxonomy: built-in wheels and word tables, the MER loader, the xlsx reader, FACS vocabulary."""

from __future__ import annotations

import zipfile
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
            assert tax.lookup_table(level)[word] is cached


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
    ],
)
def test_normalize_au(code: str, expected: str | None) -> None:
    assert tx.normalize_au(code) == expected


def test_facs_data() -> None:
    assert tx.au_name("AU12") == "lip corner puller" and tx.au_name("AU3") is None
    protos = tx.emotion_prototypes()
    assert protos["happiness"] == ["AU6", "AU12"]
    assert set(protos) == set(tx.core_emotions())
    assert all(au in tx.AU_NAMES for aus in protos.values() for au in aus)
    assert tx.prototype_aus("joyful") == ["AU6", "AU12"] and tx.prototype_aus("neutral") == []


def _write_xlsx(path: Path, sheet_xml: str, shared: list[str]) -> None:
    ns = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    rel_ns = 'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"'
    sst = "".join(f"<si><t>{s}</t></si>" for s in shared)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(
            "xl/workbook.xml",
            f'<workbook {ns} {rel_ns}><sheets><sheet name="S" sheetId="1" r:id="rId1"/></sheets></workbook>',
        )
        z.writestr(
            "xl/_rels/workbook.xml.rels",
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" Target="worksheets/sheet1.xml" Type="x"/></Relationships>',
        )
        z.writestr("xl/sharedStrings.xml", f"<sst {ns}>{sst}</sst>")
        z.writestr("xl/worksheets/sheet1.xml", f"<worksheet {ns}><sheetData>{sheet_xml}</sheetData></worksheet>")


def test_xlsx_reader_cell_kinds(tmp_path: Path) -> None:
    sheet = (
        '<row r="1"><c r="A1" t="s"><v>0</v></c><c r="C1" t="inlineStr"><is><t>in</t><t>line</t></is></c></row>'
        '<row r="3"><c r="B3"><v>7</v></c><c r="A3"/></row>'
    )
    _write_xlsx(tmp_path / "t.xlsx", sheet, ["level1"])
    assert read_xlsx_rows(tmp_path / "t.xlsx") == [["level1", None, "inline"], [None, None, None], [None, "7", None]]


@needs_mer
def test_xlsx_reader_matches_openpyxl() -> None:
    openpyxl = pytest.importorskip("openpyxl", reason="openpyxl not installed (optional cross-check)")
    for name in [*(f"wheel{k}.xlsx" for k in range(1, 6)), "synonym.xlsx"]:
        sheet = openpyxl.load_workbook(WHEEL_DIR / name, read_only=True).worksheets[0]
        expected = [[None if v is None else str(v) for v in row] for row in sheet.iter_rows(values_only=True)]
        ours = read_xlsx_rows(WHEEL_DIR / name)
        assert ours[: len(expected)] == expected


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
