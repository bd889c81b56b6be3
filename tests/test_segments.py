"""Clip windows (manifest start/end), still images and frame folders: decoding, validation and data check."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from affectllm.data.check import check_manifest
from affectllm.data.manifest import read_manifest
from affectllm.media import decode as dec
from affectllm.media.decode import (
    DecodeConfig,
    MediaDecodeError,
    MediaWindowError,
    decode_audio,
    decode_clip_info,
    decode_video,
    probe,
)
from affectllm.media.sampling import SamplingConfig, uniform_indices
from affectllm.types import Clip
from tests.media_fixtures import write_video, write_wav

BACKENDS = ["pyav"] + (["decord"] if dec._decord_available() else [])
FPS = 25


def _gray_video(path: Path, count: int = 75) -> Path:
    """Frame ``i`` is flat gray ``20 + 3 * i``: the decoded brightness tells which frame came back."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        stream.options = {"preset": "ultrafast", "qp": "0", "g": "10", "keyint_min": "10", "sc_threshold": "0"}
        for i in range(count):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.full((32, 64, 3), 20 + 3 * i, np.uint8))))
        out.mux(stream.encode(None))
    return path


def _frame_numbers(frames: np.ndarray) -> list[int]:
    return np.round((frames.reshape(len(frames), -1).mean(axis=1) - 20) / 3).astype(int).tolist()


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("segments")
    return {
        "gray": _gray_video(d / "gray.mp4"),
        "av": write_video(d / "av.mp4", seconds=4.0, fps=FPS, size=(32, 64), audio=True, gop=10),
        "wav": write_wav(d / "voice.wav", seconds=3.0, sample_rate=44100, channels=2, hz=330.0),
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_frames_are_sampled_inside_the_window(media: dict[str, Path], backend: str) -> None:
    cfg = DecodeConfig(backend=backend, fallback=False)
    res = decode_video(media["gray"], cfg, window=(1.0, 2.0))
    expected = (25 + uniform_indices(25, 8)).tolist()
    assert res.backend == backend and res.total_frames == 75
    assert res.indices.tolist() == expected and _frame_numbers(res.frames) == expected
    assert np.all((res.times >= 1.0 - 1e-3) & (res.times < 2.0))
    fps_cfg = DecodeConfig(backend=backend, fallback=False, sampling=SamplingConfig(strategy="fps", fps=5.0))
    assert decode_video(media["gray"], fps_cfg, window=(2.0, 3.0)).indices.tolist() == [50, 55, 60, 65, 70]
    tail = decode_video(media["gray"], cfg, window=(2.9, None))
    assert _frame_numbers(tail.frames) == tail.indices.tolist() == [73, 74]


@pytest.mark.skipif("decord" not in BACKENDS, reason="decord is x86_64-only")
def test_the_fallback_keeps_the_window(media: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(path: str, cfg: DecodeConfig, window: object = None) -> dec.VideoResult:
        raise RuntimeError("simulated decord crash")

    monkeypatch.setitem(dec._READERS, "decord", broken)
    res = decode_video(media["gray"], DecodeConfig(backend="decord"), window=(0.4, 0.8))
    assert res.backend == "pyav" and "simulated decord crash" in res.warnings[0]
    assert _frame_numbers(res.frames) == res.indices.tolist() == (10 + uniform_indices(10, 8)).tolist()


def test_audio_cut_is_exact_to_the_sample(media: dict[str, Path]) -> None:
    full = decode_audio(media["wav"], 16000)
    cut = decode_audio(media["wav"], 16000, window=(0.5, 1.25))
    np.testing.assert_array_equal(cut, full[8000:20000])
    np.testing.assert_array_equal(decode_audio(media["wav"], 16000, window=(2.0, None)), full[32000:])
    assert decode_audio(media["wav"], 16000, window=(5.0, 6.0)) is None  # nothing there: no audio


def test_clip_window_cuts_frames_and_the_video_track(media: dict[str, Path]) -> None:
    clip = Clip(id="utt1", video=str(media["av"]), extra={"start": 1.0, "end": 2.5})
    decoded, info = decode_clip_info(clip, DecodeConfig(backend="pyav"))
    assert np.all((decoded.frame_times >= 1.0 - 1e-3) & (decoded.frame_times < 2.5)) and info.warnings == []
    assert len(decoded.audio) == 24000
    np.testing.assert_array_equal(decoded.audio, decode_audio(media["av"], 16000)[16000:40000])
    with_wav = Clip(id="utt2", video=str(media["gray"]), audio=str(media["wav"]), extra={"start": 0.5, "end": 1.0})
    decoded, _ = decode_clip_info(with_wav)
    assert len(decoded.audio) == 8000 and decoded.frame_times.min() >= 0.5 - 1e-3


def test_a_window_past_the_end_is_clamped_with_a_warning(media: dict[str, Path]) -> None:
    clip = Clip(id="late", video=str(media["av"]), extra={"start": 3.5, "end": 9.0})
    decoded, info = decode_clip_info(clip)
    assert decoded.frame_times.min() >= 3.5 - 1e-3 and len(decoded.audio) <= 8000 + 1024
    assert any("past the file's duration" in w and "'late'" in w for w in info.warnings)
    with pytest.raises(MediaWindowError, match=r"'gone'.*starts at or after the end"):
        decode_clip_info(Clip(id="gone", video=str(media["av"]), extra={"start": 5.0, "end": 6.0}))
    with pytest.raises(MediaDecodeError, match="no frame in the window"):
        decode_video(media["gray"], DecodeConfig(backend="pyav", fallback=False), window=(7.0, 8.0))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"start": 2.0, "end": 2.0}, r"'empty'.*empty time window start=2.0 s, end=2.0 s"),
        ({"start": 3, "end": 1}, r"'empty'.*empty time window start=3 s, end=1 s"),
        ({"start": "00:01:02,5"}, r"'empty'.*start='00:01:02,5' is not a number"),
    ],
)
def test_an_empty_or_bad_window_is_a_clear_error(media: dict[str, Path], extra: dict, message: str) -> None:
    with pytest.raises(MediaWindowError, match=message):
        decode_clip_info(Clip(id="empty", video=str(media["gray"]), extra=extra))


def test_manifest_validates_start_and_end(tmp_path: Path) -> None:
    rows = [
        {"id": "ok", "video": "a.mp4", "start": 1.5, "end": 3},
        {"id": "text", "video": "a.mp4", "start": "00:14:38,127", "end": 2.0},
        {"id": "neg", "video": "a.mp4", "start": -1},
        {"id": "empty", "video": "a.mp4", "start": 4.0, "end": 4.0},
        {"id": "flag", "video": "a.mp4", "end": True},
    ]
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    clips, problems = read_manifest(path, strict=False)
    assert [c.id for c in clips] == ["ok"] and clips[0].extra == {"start": 1.5, "end": 3}
    assert [(p.line, p.field, p.severity) for p in problems] == [
        (2, "start", "error"),
        (3, "start", "error"),
        (4, "end", "error"),
        (5, "end", "error"),
    ]
    assert "not after start 4.0" in problems[2].message


def test_a_still_image_is_a_one_frame_video(tmp_path: Path) -> None:
    rgb = np.zeros((30, 40, 3), np.uint8)
    rgb[:, :20, 0] = 200
    Image.fromarray(rgb).save(tmp_path / "face.png")
    info = probe(tmp_path / "face.png")
    assert (info.has_video, info.has_audio, info.width, info.height, info.num_frames) == (True, False, 40, 30, 1)
    assert info.duration_s is None
    decoded, meta = decode_clip_info(Clip(id="s", video=str(tmp_path / "face.png"), extra={"still_image": True}))
    assert decoded.frames.shape == (1, 30, 40, 3) and decoded.audio is None and meta.backend == "pillow"
    np.testing.assert_array_equal(decoded.frames[0], rgb)
    fixed = DecodeConfig(sampling=SamplingConfig(num_frames=4, repeat=True), max_side=20)
    res = decode_video(tmp_path / "face.png", fixed, window=(1.0, 2.0))
    assert res.frames.shape == (4, 16, 20, 3) and res.indices.tolist() == [0, 0, 0, 0]
    assert "no timeline" in res.warnings[0]


def test_a_frame_folder_is_sampled_in_natural_order(tmp_path: Path) -> None:
    folder = tmp_path / "clip"
    folder.mkdir()
    for i in range(30):
        Image.fromarray(np.full((12, 16, 3), 20 + 3 * i, np.uint8)).save(folder / f"f{i + 1}.png")
    (folder / "notes.txt").write_text("not a frame")
    info = probe(folder, frame_rate=10)
    assert (info.num_frames, info.fps, info.duration_s, info.width, info.height) == (30, 10.0, 3.0, 16, 12)
    clip = Clip(id="ferv/1", video=str(folder), extra={"fps": 10, "start": 1.0, "end": 2.0})
    decoded, meta = decode_clip_info(clip, DecodeConfig(sampling=SamplingConfig(num_frames=4)))
    assert _frame_numbers(decoded.frames) == (10 + uniform_indices(10, 4)).tolist() == [11, 13, 16, 18]
    np.testing.assert_allclose(decoded.frame_times, [1.1, 1.3, 1.6, 1.8])
    assert meta.total_frames == 30 and probe(folder).duration_s == pytest.approx(30 / 25)
    with pytest.raises(Exception, match="no image files"):
        probe(tmp_path)


def test_data_check_accepts_stills_and_checks_windows(tmp_path: Path, media: dict[str, Path]) -> None:
    (tmp_path / "frames").mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "frames" / f"{i:05d}.jpg")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "face.jpg")
    rows = [
        {"id": "folder", "video": "frames"},
        {"id": "still", "video": "face.jpg"},
        {"id": "win", "video": str(media["gray"]), "start": 1.0, "end": 2.0},
        {"id": "long", "video": str(media["gray"]), "start": 2.0, "end": 9.0},
        {"id": "after", "video": str(media["gray"]), "start": 6.0, "end": 7.0},
    ]
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = check_manifest(path)
    assert [(p.line, p.field, p.severity) for p in report.problems] == [(4, "end", "warning"), (5, "start", "error")]
    assert report.bad_rows == 1 and "1 video path(s) are frame folders and 1 still images" in report.notes[0]
    assert report.duration == pytest.approx(3 / 25 + 1.0 + 1.0)


def test_meld_episode_times_are_not_a_window(tmp_path: Path) -> None:
    from affectllm.data.manifest import validate_row
    from affectllm.data.sources import load_dataset

    header = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\n"
    (tmp_path / "MELD.Raw").mkdir()
    row = "1,Hi,Joey,Joy,positive,0,0,3,19,00:14:38,00:14:40\n"
    (tmp_path / "MELD.Raw/train_sent_emo.csv").write_text(header + row)
    for name in ("dev_sent_emo.csv", "test_sent_emo.csv"):
        (tmp_path / "MELD.Raw" / name).write_text(header)
    (clip,) = load_dataset("meld", tmp_path).clips
    assert "start" not in clip.extra and clip.extra["episode_start"] == "00:14:38"
    assert validate_row({"id": clip.id, "video": clip.video, **clip.extra}, 1) == []
