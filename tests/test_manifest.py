"""Manifest schema, reader (line numbers, strict/lenient, duplicates), AU normalisation and atomic writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from affectllm.data.manifest import (
    ManifestError,
    Problem,
    clip_to_row,
    iter_jsonl,
    normalize_au,
    read_jsonl,
    read_manifest,
    validate_row,
    write_jsonl,
    write_manifest,
)
from affectllm.types import Clip


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_good_rows_resolve_paths_and_normalise(tmp_path: Path) -> None:
    row = {
        "id": "a",
        "video": "clips/a.mp4",
        "audio": "/abs/a.wav",
        "labels": [" happy ", "calm"],
        "aus": ["AU06", "au12", 6],
        "valence": 0.5,
        "arousal": -1,
        "split": "train",
        "mine": {"x": 1},
    }
    path = _write(tmp_path / "m.jsonl", [json.dumps(row), "", json.dumps({"id": 7, "transcript": "hi"})])
    clips, problems = read_manifest(path)
    assert problems == []
    a, b = clips
    assert a.video == str(tmp_path.resolve() / "clips" / "a.mp4") and a.audio == "/abs/a.wav"
    assert a.labels == ["happy", "calm"] and a.aus == ["AU6", "AU12"] and a.extra == {"mine": {"x": 1}}
    assert a.valence == 0.5 and a.arousal == -1.0
    assert b.id == "7" and b.video is None and b.transcript == "hi"


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"video": "a.mp4"}, "id"),
        ({"id": "", "video": "a.mp4"}, "id"),
        ({"id": "a"}, "video/audio/transcript"),
        ({"id": "a", "transcript": "  "}, "video/audio/transcript"),
        ({"id": "a", "video": 3}, "video"),
        ({"id": "a", "video": ""}, "video"),
        ({"id": "a", "video": "a.mp4", "valence": 1.5}, "valence"),
        ({"id": "a", "video": "a.mp4", "arousal": "high"}, "arousal"),
        ({"id": "a", "video": "a.mp4", "valence": True}, "valence"),
        ({"id": "a", "video": "a.mp4", "labels": "happy"}, "labels"),
        ({"id": "a", "video": "a.mp4", "labels": ["ok", ""]}, "labels[1]"),
        ({"id": "a", "video": "a.mp4", "aus": ["AU6", "smile"]}, "aus[1]"),
        ({"id": "a", "video": "a.mp4", "aus": "AU6"}, "aus"),
        ({"id": "a", "video": "a.mp4", "emotion": ["happy"]}, "emotion"),
        ({"id": "a", "video": "a.mp4", "split": 1}, "split"),
    ],
)
def test_validate_row_names_the_field(row: dict, field: str) -> None:
    problems = validate_row(row, 5)
    errors = [p for p in problems if p.is_error]
    assert errors[0].field == field and errors[0].line == 5 and errors[0].hint


def test_misspelt_key_is_a_warning_and_kept(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.jsonl", [json.dumps({"id": "a", "video": "a.mp4", "lables": ["x"]})])
    clips, problems = read_manifest(path, strict=True)
    assert clips[0].extra == {"lables": ["x"]}
    assert len(problems) == 1 and problems[0].severity == "warning" and "'labels'" in problems[0].message


def test_lenient_collects_line_numbers_and_strict_raises(tmp_path: Path) -> None:
    lines = [
        json.dumps({"id": "a", "video": "a.mp4"}),
        "",
        "{not json",
        json.dumps({"id": "b", "valence": 3, "transcript": "x"}),
        json.dumps(["a", "list"]),
        json.dumps({"id": "a", "audio": "a.wav"}),
        json.dumps({"id": "c", "audio": "c.wav"}),
    ]
    path = _write(tmp_path / "m.jsonl", lines)
    clips, problems = read_manifest(path, strict=False)
    assert [c.id for c in clips] == ["a", "c"]
    assert [(p.line, p.field) for p in problems] == [(3, "json"), (4, "valence"), (5, "json"), (6, "id")]
    assert "first on line 1" in problems[-1].message
    assert str(problems[1]).startswith(f"{path}:4 (id 'b'): error: valence:")
    with pytest.raises(ManifestError) as info:
        read_manifest(path, strict=True)
    assert len(info.value.problems) == 4 and ":3" in str(info.value)


def test_torn_last_line_and_bad_utf8(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": "a", "video": "a.mp4"}\n{"id": "\xff"}\n{"id": "b", "vid')
    rows, problems = read_jsonl(path)
    assert rows == [(1, {"id": "a", "video": "a.mp4"})]
    assert [p.line for p in problems] == [2, 3]
    assert "UTF-8" in problems[0].message and "torn" in problems[1].message
    assert [n for n, _, _ in iter_jsonl(path)] == [1, 2, 3]


@pytest.mark.parametrize(
    ("code", "want"),
    [
        ("AU04", "AU4"),
        ("au12", "AU12"),
        (26, "AU26"),
        ("12", "AU12"),
        ("AU0", None),
        ("AU", None),
        (True, None),
        (None, None),
        ("A U1", None),
    ],
)
def test_normalize_au(code: object, want: str | None) -> None:
    assert normalize_au(code) == want


def test_write_manifest_roundtrip_relative_paths(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "m.jsonl"
    media = tmp_path / "media" / "a.mp4"
    clip = Clip(id="a", video=str(media), labels=["happy"], aus=["AU6"], valence=0.2, extra={"start": 1.5})
    assert clip_to_row(clip, out.parent) == {
        "id": "a",
        "video": os.path.join("..", "media", "a.mp4"),
        "labels": ["happy"],
        "aus": ["AU6"],
        "valence": 0.2,
        "start": 1.5,
    }
    assert write_manifest([clip, {"id": "b", "transcript": "hé"}], out) == 2
    clips, _ = read_manifest(out)
    assert Path(clips[0].video).resolve() == media.resolve() and clips[0].extra == {"start": 1.5}
    assert clips[1].transcript == "hé"
    assert [p.name for p in out.parent.iterdir()] == ["m.jsonl"]  # no temp file left behind


def test_write_manifest_refuses_bad_rows_and_keeps_old_file(tmp_path: Path) -> None:
    out = _write(tmp_path / "m.jsonl", ['{"id": "old", "audio": "x.wav"}'])
    with pytest.raises(ManifestError) as info:
        write_manifest([{"id": "a", "video": "a.mp4"}, {"id": "a", "video": "b.mp4"}, {"id": "c"}], out)
    assert [(p.line, p.field) for p in info.value.problems] == [(2, "id"), (3, "video/audio/transcript")]
    assert out.read_text() == '{"id": "old", "audio": "x.wav"}\n'


def test_write_jsonl_failure_leaves_no_temp(tmp_path: Path) -> None:
    def rows():
        yield {"a": 1}
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_jsonl(rows(), tmp_path / "x.jsonl")
    assert list(tmp_path.iterdir()) == []


def test_problem_str_without_path() -> None:
    assert str(Problem(2, "aus[0]", "bad", "fix it")) == "line 2: error: aus[0]: bad; fix it"
