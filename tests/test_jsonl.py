"""affectllm.jsonl: the one JSONL reader (line errors, never a crash) and the one atomic writer."""

from __future__ import annotations

from pathlib import Path

import pytest

from affectllm.jsonl import atomic_write, iter_jsonl, read_jsonl, write_jsonl


def test_every_unreadable_line_becomes_a_line_error(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    deep = "[" * 100_000 + "]" * 100_000
    head = b'\xef\xbb\xbf{"id": "a"}\r\n\n{broken\n\xff\xfe\n'
    path.write_bytes(head + deep.encode() + b'\n{"id": "b"}\n{"id": "c"')
    rows, errors = read_jsonl(path)
    assert rows == [(1, {"id": "a"}), (6, {"id": "b"})]  # BOM and CRLF accepted, the blank line 2 skipped
    assert [(e.line, e.torn) for e in errors] == [(3, False), (4, False), (5, False), (7, True)]
    assert "invalid JSON" in errors[0].message and "not UTF-8" in errors[1].message
    assert "nested too deeply" in errors[2].message and "interrupted" in errors[3].message
    assert all(e.hint for e in errors)


def test_iter_jsonl_yields_values_with_their_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    assert write_jsonl([{"id": "é"}, [1, 2], "text"], path) == 3
    assert path.read_text(encoding="utf-8") == '{"id": "é"}\n[1, 2]\n"text"\n'
    assert [(n, v) for n, v, e in iter_jsonl(path) if e is None] == [(1, {"id": "é"}), (2, [1, 2]), (3, "text")]


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "x.txt"
    with atomic_write(path) as fh:
        fh.write("old")
    with pytest.raises(RuntimeError), atomic_write(path) as fh:
        fh.write("half of the new")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old"
    assert [p.name for p in path.parent.iterdir()] == ["x.txt"], "no temporary file left behind"
    with pytest.raises(ValueError, match="mode 'a'"):
        with atomic_write(path, "a"):
            pass
