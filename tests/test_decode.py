"""Decoding (affectllm.media.decode): both backends, fallback, audio, probe and limits, on clips written here."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from affectllm.media import decode as dec
from affectllm.media.decode import (
    DecodeConfig,
    MediaDecodeError,
    MediaError,
    MediaLimitError,
    decode_audio,
    decode_clip,
    decode_clip_info,
    decode_video,
    probe,
)
from affectllm.media.sampling import SamplingConfig
from affectllm.types import Clip
from tests.media_fixtures import write_corrupt, write_truncated, write_video, write_wav

BACKENDS = ["pyav"] + (["decord"] if dec._decord_available() else [])


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    return {
        "av": write_video(d / "with_audio.mp4", seconds=2.0, fps=30, size=(96, 128), audio=True, gop=12),
        "silent": write_video(d / "silent.mp4", seconds=1.0, fps=25, size=(64, 80)),
        "wav": write_wav(d / "voice.wav", seconds=1.0, sample_rate=44100, channels=2, hz=880.0),
        "corrupt": write_corrupt(d / "corrupt.mp4"),
        "cut": write_truncated(
            write_video(d / "stream.mp4", seconds=2.0, fps=30, size=(64, 64), gop=10, faststart=True),
            d / "cut.mp4",
            keep=0.6,
        ),
    }


def _all_frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_decodes_the_sampled_frames(clips: dict[str, Path], backend: str) -> None:
    ref = _all_frames(clips["av"])
    res = decode_video(clips["av"], DecodeConfig(backend=backend, fallback=False))
    assert res.backend == backend and res.total_frames == 60 and res.fps == pytest.approx(30.0)
    assert res.frames.shape == (8, 96, 128, 3) and res.frames.dtype == np.uint8
    assert res.indices.tolist() == [3, 11, 18, 26, 33, 41, 48, 56]
    np.testing.assert_array_equal(res.frames, ref[res.indices])
    np.testing.assert_allclose(res.times, res.indices / 30.0, atol=1e-3)
    assert res.warnings == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_fps_sampling_and_resize(clips: dict[str, Path], backend: str) -> None:
    cfg = DecodeConfig(backend=backend, fallback=False, max_side=64, sampling=SamplingConfig("fps", fps=5.0))
    res = decode_video(clips["av"], cfg)
    assert res.frames.shape == (10, 48, 64, 3)
    np.testing.assert_allclose(np.diff(res.times), 0.2, atol=1e-3)


def test_both_backends_fail_on_garbage_with_a_clear_error(clips: dict[str, Path]) -> None:
    with pytest.raises(MediaDecodeError) as err:
        decode_video(clips["corrupt"])
    msg = str(err.value)
    assert str(clips["corrupt"]) in msg and "pyav" in msg and "re-encode" in msg
    if "decord" in BACKENDS:
        assert "decord" in msg
    with pytest.raises(MediaDecodeError, match="cannot read the file's headers"):
        probe(clips["corrupt"])


@pytest.mark.skipif("decord" not in BACKENDS, reason="decord is x86_64-only")
def test_fallback_recovers_a_cut_off_clip(clips: dict[str, Path]) -> None:
    with pytest.raises(MediaDecodeError, match="decord"):
        decode_video(clips["cut"], DecodeConfig(backend="decord", fallback=False))
    res = decode_video(clips["cut"], DecodeConfig(backend="decord"))
    assert res.backend == "pyav" and 0 < len(res.frames) <= 8
    assert any("decord" in w and "recovered with pyav" in w for w in res.warnings)


def test_fallback_on_a_decoder_error(clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(path: str, cfg: DecodeConfig, window: object = None) -> dec.VideoResult:
        raise RuntimeError("simulated decoder crash")

    monkeypatch.setitem(dec._READERS, "pyav", broken)
    if "decord" in BACKENDS:
        res = decode_video(clips["av"], DecodeConfig(backend="pyav"))
        assert res.backend == "decord" and "simulated decoder crash" in res.warnings[0]
    with pytest.raises(MediaDecodeError, match="simulated decoder crash"):
        decode_video(clips["av"], DecodeConfig(backend="pyav", fallback=False))


def test_unknown_backend_and_missing_file(clips: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown decode backend"):
        decode_video(clips["av"], DecodeConfig(backend="opencv"))
    with pytest.raises(MediaError, match="no such file"):
        decode_clip(tmp_path / "nope.mp4")


def test_audio_from_the_video_track(clips: dict[str, Path]) -> None:
    out, info = decode_clip_info(clips["av"])
    assert info.probe is not None and info.probe.has_audio and info.backend in BACKENDS
    assert out.audio.dtype == np.float32 and out.audio.ndim == 1 and out.sample_rate == 16000
    assert abs(len(out.audio) - 32000) < 1600, "2 s at 16 kHz (plus codec padding)"
    assert out.present() == ["video", "audio"]


def test_clip_without_audio_track_is_not_an_error(clips: dict[str, Path]) -> None:
    out = decode_clip(clips["silent"])
    assert out.audio is None and out.frames.shape[0] == 8
    assert decode_audio(clips["silent"]) is None
    assert out.present() == ["video"]


def _peak_hz(wave: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave))
    return float(np.fft.rfftfreq(len(wave), 1 / rate)[np.argmax(spectrum)])


def test_separate_audio_file_is_resampled_to_16k_mono(clips: dict[str, Path]) -> None:
    wave = decode_audio(clips["wav"])
    assert wave.dtype == np.float32 and wave.ndim == 1 and len(wave) == 16000
    assert _peak_hz(wave, 16000) == pytest.approx(880.0, abs=2.0)
    assert 0.3 < np.abs(wave).max() <= 1.0
    clip = Clip(id="c1", video=str(clips["av"]), audio=str(clips["wav"]), transcript="hi")
    out = decode_clip(clip)
    assert out.id == "c1" and out.transcript == "hi"
    assert _peak_hz(out.audio, 16000) == pytest.approx(880.0, abs=2.0), "the separate file wins over the track"
    assert _peak_hz(decode_audio(clips["av"]), 16000) == pytest.approx(440.0, abs=2.0)


def test_audio_only_clip(clips: dict[str, Path]) -> None:
    out = decode_clip(Clip(id="a", audio=str(clips["wav"])))
    assert out.frames is None and out.present() == ["audio"]


def test_probe_reads_headers(clips: dict[str, Path]) -> None:
    info = probe(clips["av"])
    assert (info.width, info.height, info.num_frames) == (128, 96, 60)
    assert info.has_video and info.has_audio and info.fps == pytest.approx(30.0)
    assert info.duration_s == pytest.approx(2.0, abs=0.1) and info.video_codec == "h264"
    wav = probe(clips["wav"])
    assert not wav.has_video and wav.audio_rate == 44100 and wav.audio_channels == 2


@pytest.mark.parametrize(
    "limits,setting",
    [
        ({"max_duration_s": 1.0}, "max_duration_s"),
        ({"max_pixels": 64 * 64}, "max_pixels"),
        ({"max_file_mb": 1e-4}, "max_file_mb"),
    ],
)
def test_limits_refuse_before_decoding(
    clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch, limits: dict, setting: str
) -> None:
    monkeypatch.setattr(dec, "decode_video", lambda *a, **k: pytest.fail("decoded a clip over the limits"))
    with pytest.raises(MediaLimitError) as err:
        decode_clip(clips["av"], DecodeConfig(**limits))
    assert str(clips["av"]) in str(err.value) and setting in str(err.value)
