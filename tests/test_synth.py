"""EmoWorld (affectllm.emoworld.generate): determinism, schema, media, knobs, visible cues, oracle vs baselines."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from affectllm.data.manifest import read_manifest
from affectllm.emoworld.generate import generate, score_systems, simulate, synth_main
from affectllm.emoworld.oracle import Baselines
from affectllm.emoworld.render import AU_CODES, render_frame, sample_identity
from affectllm.emoworld.text import IMPLY, NEUTRAL, SAY, label_words
from affectllm.emoworld.voice import read_wav, render_voice, voice_params
from affectllm.emoworld.world import EMOTIONS, PROTOTYPES, Knobs, resolve_knobs, sample_latent
from affectllm.taxonomy import default_taxonomy, emotion_prototypes, normalize_label

TINY = ["size=32", "fps=6", "min_seconds=1.0", "max_seconds=1.5"]


def _decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict], Knobs]:
    out = tmp_path_factory.mktemp("ew")
    knobs = resolve_knobs("default", [*TINY, "missing_video=0.2", "missing_audio=0.2"])
    rows, _ = generate(str(out), 10, seed=3, knobs=knobs, progress=False)
    return out, rows, knobs


def test_knobs_presets_and_overrides() -> None:
    assert resolve_knobs("easy").cue_noise < resolve_knobs("default").cue_noise < resolve_knobs("hard").cue_noise
    knobs = resolve_knobs("default", ["size=64", "blend_rate=0.5", "voice=auto"])
    assert (knobs.size, knobs.blend_rate, knobs.voice) == (64, 0.5, "auto")
    with pytest.raises(ValueError, match="unknown EmoWorld knob 'colour'.*known: text_neutral"):
        resolve_knobs("default", ["colour=1"])
    with pytest.raises(ValueError, match="cue_noise"):
        resolve_knobs("default", ["cue_noise=abc"])
    with pytest.raises(ValueError, match="size must be a multiple of 4"):
        resolve_knobs("default", ["size=34"])
    with pytest.raises(ValueError, match="not key=value"):
        resolve_knobs("default", ["size"])
    with pytest.raises(ValueError, match="unknown EmoWorld preset"):
        resolve_knobs("extreme")


def test_rows_validate_and_carry_gold(tiny_world: tuple[Path, list[dict], Knobs]) -> None:
    out, rows, _ = tiny_world
    clips, problems = read_manifest(out / "manifest.jsonl", strict=True)
    assert len(clips) == 10 and not problems
    assert {c.split for c in clips} == {"train", "val", "test"}
    for clip, row in zip(clips, rows, strict=True):
        assert clip.source == "emoworld" and clip.emotion in EMOTIONS and clip.labels
        assert clip.video or clip.audio or clip.transcript
        assert -1 <= clip.valence <= 1 and -1 <= clip.arousal <= 1
        assert set(row["au_intensity"]) == set(clip.aus)
        assert clip.caption.startswith("Face:") and "Reasoning:" in clip.caption
        for code in clip.aus:
            if clip.video:
                assert code in clip.caption


def test_media_readable_with_the_right_shape(tiny_world: tuple[Path, list[dict], Knobs]) -> None:
    out, rows, knobs = tiny_world
    for row in rows:
        seconds = row["emoworld"]["seconds"]
        if "video" in row:
            frames = _decode(out / row["video"])
            assert frames.shape == (round(seconds * knobs.fps), knobs.size, knobs.size, 3)
        if "audio" in row:
            audio, sr = read_wav(str(out / row["audio"]))
            assert sr == knobs.sample_rate and len(audio) == round(seconds * sr)
            assert 0.001 < float(np.sqrt(np.mean(audio**2))) < 0.5


def test_deterministic_for_a_seed_whatever_the_workers(
    tmp_path: Path, tiny_world: tuple[Path, list[dict], Knobs]
) -> None:
    first, rows, knobs = tiny_world
    again = tmp_path / "again"
    generate(str(again), 10, seed=3, knobs=Knobs(**{**knobs.__dict__, "workers": 2}), progress=False)
    assert (first / "manifest.jsonl").read_bytes() == (again / "manifest.jsonl").read_bytes()
    for row in rows:
        if "video" in row:
            assert np.array_equal(_decode(first / row["video"]), _decode(again / row["video"]))
        if "audio" in row:
            assert (first / row["audio"]).read_bytes() == (again / row["audio"]).read_bytes()
    other = tmp_path / "other"
    generate(str(other), 4, seed=4, knobs=knobs, progress=False)
    assert (other / "manifest.jsonl").read_bytes() != (first / "manifest.jsonl").read_bytes()
    assert not (other / "video" / "ew00009.mp4").exists()


def test_synth_main_prints_scores_and_writes_summary(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert synth_main(str(tmp_path), 8, seed=1, preset="easy", overrides=TINY) == 0
    printed = capsys.readouterr().out
    assert "oracle" in printed and "majority baseline" in printed and "EW-F" in printed
    summary = json.loads((tmp_path / "emoworld.json").read_text())
    assert summary["seed"] == 1 and summary["knobs"]["size"] == 32 and summary["counts"]["clips"] == 8
    assert set(summary["scores"]["oracle"]) == {"ew_f", "hit", "au_f1", "au_f1_macro", "n"}
    assert synth_main(str(tmp_path / "bad"), 2, seed=1, overrides=["nope=1"]) == 2
    assert "known:" in capsys.readouterr().out


def test_oracle_beats_baselines_on_the_test_split() -> None:
    knobs = resolve_knobs("default")
    rows, latents = simulate(600, seed=0, knobs=knobs)
    scores = score_systems(rows, latents, knobs)
    oracle, keyword, majority = scores["oracle"], scores["keyword baseline"], scores["majority baseline"]
    for metric in ("ew_f", "hit", "au_f1"):
        assert oracle[metric] > keyword[metric] + 0.2 and oracle[metric] > majority[metric] + 0.2, metric
    assert keyword["ew_f"] > majority["ew_f"]
    assert oracle["ew_f"] >= scores["oracle (face only)"]["ew_f"] - 0.02


def test_knobs_have_effect_on_the_latent_world() -> None:
    rng = np.random.default_rng(0)

    def share(knobs: Knobs, pred: object, n: int = 800) -> float:
        return float(np.mean([pred(sample_latent(knobs, i, rng)) for i in range(n)]))  # type: ignore[operator]

    base = resolve_knobs("default")
    assert share(resolve_knobs("default", ["missing_video=0.5"]), lambda lat: not lat.has["video"]) == pytest.approx(
        0.5, abs=0.07
    )
    assert share(base, lambda lat: not lat.has["video"]) == pytest.approx(0.1, abs=0.04)
    mislead = resolve_knobs("default", ["text_misleading=0.6", "text_neutral=0.2"])
    assert share(mislead, lambda lat: lat.text_emotion not in (None, lat.emotion)) == pytest.approx(0.6, abs=0.07)
    assert share(resolve_knobs("default", ["blend_rate=0"]), lambda lat: lat.blend is not None) == 0.0
    assert share(
        resolve_knobs("default", ["label_noise=0.3"]), lambda lat: lat.label_emotion != lat.emotion
    ) == pytest.approx(0.3, abs=0.06)
    everything_missing = resolve_knobs("default", ["missing_video=1", "missing_audio=1", "missing_text=1"])
    assert share(everything_missing, lambda lat: sum(lat.has.values()) == 1) == 1.0


def test_transcripts_carry_hide_or_contradict() -> None:
    base = Baselines([{"emotion": "happy", "aus": ["AU12"]}])
    for emotion in EMOTIONS:
        for word in SAY[emotion]:
            if " " not in word:
                assert base.keyword_emotion(f"I am so {word} right now.") == emotion, word
        for line in IMPLY[emotion]:
            assert base.keyword_emotion(line) is None, line
    for line in NEUTRAL:
        assert base.keyword_emotion(line) is None, line


def test_labels_and_prototypes_come_from_the_taxonomy() -> None:
    tax = default_taxonomy()
    emfacs = emotion_prototypes()
    for emotion in EMOTIONS:
        core = normalize_label(emotion)
        assert core in emfacs
        drawable = {int(c[2:]) for c in emfacs[core]} & set(AU_CODES)
        assert drawable <= set(PROTOTYPES[emotion])
        for word in label_words(emotion):
            assert tax.normalize_all(word) == tax.normalize_all(emotion)


@pytest.mark.parametrize("code", AU_CODES)
def test_every_au_is_visible_in_pixels(code: int) -> None:
    rest = np.zeros(len(AU_CODES))
    active = rest.copy()
    active[AU_CODES.index(code)] = 1.0
    for seed in range(8):  # skin tones, hair and face shapes differ
        ident = sample_identity(np.random.default_rng(seed), head_motion=0.0, clutter=0.0)
        diff = np.abs(
            render_frame(ident, active, 0.0, 64).astype(int) - render_frame(ident, rest, 0.0, 64).astype(int)
        )
        assert (diff.max(axis=-1) > 20).sum() >= 6, f"AU{code} barely changes face {seed}"


def test_voice_follows_arousal() -> None:
    calm = voice_params(arousal=-0.8, valence=0.0, speaker_f0=120.0, tract=1.0)
    aroused = voice_params(arousal=0.8, valence=0.0, speaker_f0=120.0, tract=1.0)
    assert aroused.f0 > calm.f0 and aroused.rate > calm.rate and aroused.breathiness < calm.breathiness
    quiet = render_voice(calm, 2.0, 16000, np.random.default_rng(0))
    loud = render_voice(aroused, 2.0, 16000, np.random.default_rng(0))
    assert np.sqrt(np.mean(loud**2)) > 2 * np.sqrt(np.mean(quiet**2))
