"""`data check`: good and broken manifests, line numbers and fields in the messages, exit codes."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest

from affectllm.data.check import check_main, check_manifest, probe_file


def _video(path: Path, frames: int = 4, audio: bool = False) -> Path:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=8)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            img = np.full((32, 32, 3), 30 * i, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _wav(path: Path, seconds: float = 0.25) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.zeros(int(16000 * seconds), dtype=np.int16).tobytes())
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("media")
    _video(root / "a.mp4")
    _wav(root / "a.wav")
    (root / "empty.mp4").write_bytes(b"")
    (root / "junk.mp4").write_bytes(b"this is not a video at all" * 10)
    return root


def _manifest(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_probe_reads_streams_and_duration(media: Path) -> None:
    video = probe_file(str(media / "a.mp4"), "video")
    assert video.error is None and "video" in video.streams and video.width == 32
    assert video.duration == pytest.approx(0.5, abs=0.2)
    audio = probe_file(str(media / "a.wav"), "audio")
    assert audio.error is None and audio.duration == pytest.approx(0.25, abs=0.05)
    wrong = probe_file(str(media / "a.wav"), "video")
    assert "no video stream" in wrong.error and "audio" in wrong.error


def test_good_manifest_exits_zero_with_summary(media: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _manifest(
        media / "good.jsonl",
        [
            {"id": "1", "video": "a.mp4", "audio": "a.wav", "labels": ["happy"], "split": "train"},
            {"id": "2", "audio": "a.wav", "split": "test"},
            {"id": "3", "transcript": "hello", "split": "test"},
        ],
    )
    assert check_main(str(path)) == 0
    out = capsys.readouterr().out
    assert "rows with errors" in out and "train: 1" in out and "(opened)" in out


def test_broken_manifest_reports_lines_and_fields(media: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _manifest(
        media / "bad.jsonl",
        [
            {"id": "ok", "video": "a.mp4"},  # 1
            {"id": "missing", "video": "nope.mp4"},  # 2
            {"id": "empty", "video": "empty.mp4"},  # 3
            {"id": "junk", "video": "junk.mp4"},  # 4
            {"id": "wrong", "audio": "a.mp4"},  # 5: a video without an audio track given as audio
            "{broken",  # 6
            {"id": "ok", "audio": "a.wav"},  # 7: duplicate id
            {"id": "va", "video": "a.mp4", "valence": 4},  # 8
            {"id": "dir", "video": "."},  # 9
            {"id": "warn", "transcript": "x", "lables": ["y"]},  # 10: warning only
        ],
    )
    report = check_manifest(path)
    got = [(p.line, p.field, p.severity) for p in report.problems]
    assert got == [
        (2, "video", "error"),
        (3, "video", "error"),
        (4, "video", "error"),
        (5, "audio", "error"),
        (6, "json", "error"),
        (7, "id", "error"),
        (8, "valence", "error"),
        (9, "video", "error"),
        (10, "lables", "warning"),
    ]
    assert report.rows == 10 and report.bad_rows == 8
    msgs = {p.line: p.message for p in report.problems}
    assert "not found" in msgs[2] and "empty" in msgs[3] and "cannot be opened" in msgs[4]
    assert "no audio stream" in msgs[5] and "directory" in msgs[9]
    assert check_main(str(path)) == 1
    out = capsys.readouterr().out
    assert f"{path}:2 (id 'missing'): error: video: file not found" in out
    assert f"{path}:8 (id 'va'): error: valence:" in out
    assert "rows with errors" in out and "8" in out


def test_no_probe_checks_existence_only(media: Path) -> None:
    path = _manifest(media / "np.jsonl", [{"id": "j", "video": "junk.mp4"}, {"id": "m", "audio": "gone.wav"}])
    report = check_manifest(path, probe=False)
    assert [(p.line, p.field) for p in report.problems] == [(2, "audio")]
    assert check_main(str(path), probe=False) == 1


def test_missing_manifest_exits_two(tmp_path: Path) -> None:
    assert check_main(str(tmp_path / "nope.jsonl")) == 2


def test_print_is_capped(media: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _manifest(media / "many.jsonl", [{"id": str(i), "video": f"x{i}.mp4"} for i in range(5)])
    assert check_main(str(path), probe=False, max_print=2) == 1
    assert "and 3 more problems" in capsys.readouterr().out


def test_probe_gives_the_decoders_media_info(media: Path) -> None:
    from affectllm.media.common import MediaInfo

    check = probe_file(str(media / "a.mp4"), "video")
    assert isinstance(check.info, MediaInfo) and check.info.has_video and check.width == 32
    assert "no audio stream" in probe_file(str(media / "a.mp4"), "audio").error
    assert "cannot be opened" in probe_file(str(media / "junk.mp4"), "video").error


def test_windows_follow_the_decoders_rules(media: Path) -> None:
    """Same rules as decoding (clip_window/clamp_window): an end within WINDOW_SLACK_S of the file's end is fine,
    one further past it is a warning, a start past the end an error; the duration counts the clamped window."""
    from affectllm.media.common import WINDOW_SLACK_S

    duration = probe_file(str(media / "a.wav"), "audio").duration
    rows = [
        {"id": "slack", "audio": "a.wav", "start": 0.0, "end": duration + WINDOW_SLACK_S / 2},
        {"id": "past", "audio": "a.wav", "start": 0.1, "end": duration + 2 * WINDOW_SLACK_S},
        {"id": "after", "audio": "a.wav", "start": duration + 1.0},
    ]
    report = check_manifest(_manifest(media / "win.jsonl", rows))
    assert [(p.line, p.field, p.severity) for p in report.problems] == [(2, "end", "warning"), (3, "start", "error")]
    assert "past the file's duration" in report.problems[0].message
    assert report.duration == pytest.approx(duration + (duration - 0.1))  # windows, inside the file


def test_cli_prints_project_errors_as_one_line_and_lets_bugs_raise(monkeypatch, capsys) -> None:
    import affectllm.data.check as check
    from affectllm.cli import main
    from affectllm.data.manifest import ManifestError, Problem

    def manifest_error(*args, **kwargs):
        raise ManifestError([Problem(3, "labels", "must be a list", "write it as a JSON list", path="m.jsonl")])

    monkeypatch.setattr(check, "check_main", manifest_error)
    assert main(["data", "check", "m.jsonl"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("affectllm: error: ") and "m.jsonl:3" in err and "labels: must be a list" in err

    def bug(*args, **kwargs):
        return {}["missing key"]

    monkeypatch.setattr(check, "check_main", bug)
    with pytest.raises(KeyError, match="missing key"):  # a bug keeps its traceback
        main(["data", "check", "m.jsonl"])
