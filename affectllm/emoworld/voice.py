"""EmoWorld audio: a voice whose pitch, energy, tempo and voice quality follow arousal and valence.

Default: a numpy source-filter voice (deterministic, no system dependency). A Rosenberg glottal pulse train with
jitter and shimmer, plus aspiration noise for breathiness, goes through a cascade of three formant resonators per
syllable (one vowel each) and a syllable envelope; unvoiced bursts mark the consonants. The words are babble: the
audio carries prosody and voice quality, not the transcript.

Optional: ``voice="espeak"`` speaks the transcript with espeak-ng (pitch, speed and volume from the same
parameters) when the ``espeak-ng`` binary is installed; its output depends on the installed version.

How the cues follow the affect (``a`` = arousal, ``v`` = valence, both in [-1, 1]):

* pitch: ``f0 = speaker_f0 * 2 ** ((4a + v) / 12)``; pitch range ``2 + 2.5 (a + 1) + 1.5 max(v, 0)`` semitones;
* energy: ``-24 + 7a`` dBFS RMS; tempo: ``4.2 * 2 ** (0.45 a)`` syllables/s, fewer pauses when aroused;
* voice quality: breathy at low arousal, harsh (jitter, pressed) when aroused and negative, brighter spectral tilt
  with arousal, formants raised by ``5 v`` % (a smiling mouth shortens the vocal tract).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.signal import lfilter, resample_poly

# (F1, F2, F3) in Hz of an adult male vocal tract, for a, e, i, o, u.
VOWELS = (
    (730.0, 1090.0, 2440.0),
    (530.0, 1840.0, 2480.0),
    (270.0, 2290.0, 3010.0),
    (570.0, 840.0, 2410.0),
    (300.0, 870.0, 2240.0),
)


@dataclass(frozen=True)
class VoiceParams:
    """Prosody and voice-quality settings of one clip (see the module docstring for how affect sets them)."""

    f0: float  # mean pitch in Hz
    f0_range: float  # semitones
    rms_db: float  # dBFS
    rate: float  # syllables per second
    pause: float  # share of time in pauses
    breathiness: float  # aspiration noise level, 0..1
    jitter: float  # relative period perturbation
    tilt: float  # one-pole low-pass coefficient of the source (higher = darker)
    formant_shift: float  # multiplicative


def voice_params(arousal: float, valence: float, speaker_f0: float, tract: float) -> VoiceParams:
    """Map (arousal, valence) and the speaker's pitch and vocal-tract scale to voice parameters."""
    a, v = float(np.clip(arousal, -1, 1)), float(np.clip(valence, -1, 1))
    return VoiceParams(
        f0=speaker_f0 * 2 ** ((4 * a + v) / 12),
        f0_range=2 + 2.5 * (a + 1) + 1.5 * max(v, 0.0),
        rms_db=-24 + 7 * a,
        rate=4.2 * 2 ** (0.45 * a),
        pause=0.16 - 0.08 * a,
        breathiness=0.04 + 0.3 * max(-a, 0.0) + 0.05 * max(-v, 0.0),
        jitter=0.004 + 0.03 * max(-v, 0.0) * max(a, 0.0),
        tilt=0.72 - 0.2 * a,
        formant_shift=tract * (1 + 0.05 * v),
    )


def _syllables(p: VoiceParams, seconds: float, rng: np.random.Generator) -> list[tuple[float, float, int]]:
    """(start, duration, vowel) of each syllable; pauses between phrases."""
    out, t = [], 0.05
    while t < seconds - 0.12:
        dur = float(np.clip(rng.normal(1.0 / p.rate, 0.2 / p.rate), 0.08, 0.45))
        out.append((t, min(dur, seconds - 0.05 - t), int(rng.integers(len(VOWELS)))))
        t += dur
        if rng.random() < p.pause:
            t += float(rng.uniform(0.15, 0.4))
    return out


def _f0_contour(
    p: VoiceParams, sylls: list[tuple[float, float, int]], n: int, sr: int, rng: np.random.Generator
) -> np.ndarray:
    """Pitch in Hz per sample: per-syllable accents, declination and jitter."""
    knots_t, knots_v = [0.0], [0.0]
    for start, dur, _ in sylls:
        knots_t.append(start + dur / 2)
        knots_v.append(float(rng.uniform(-0.5, 0.5)))
    knots_t.append(n / sr)
    knots_v.append(-0.5)
    t = np.arange(n) / sr
    semis = np.interp(t, knots_t, knots_v) * p.f0_range - 1.0 * t / max(t[-1], 1e-6)
    wobble = lfilter([0.02], [1, -0.98], rng.normal(0.0, 1.0, n)) * p.jitter * 12
    return p.f0 * 2 ** (semis / 12) * (1 + wobble)


def _glottal(f0: np.ndarray, sr: int, open_q: float) -> tuple[np.ndarray, np.ndarray]:
    """Rosenberg glottal flow derivative for a pitch track (vectorised over the phase), and the open-phase mask."""
    phase = np.cumsum(f0 / sr) % 1.0
    tp, tn = 0.6 * open_q, 0.4 * open_q
    flow = np.where(
        phase < tp,
        0.5 * (1 - np.cos(np.pi * phase / tp)),
        np.where(phase < tp + tn, np.cos(np.pi * (phase - tp) / (2 * tn)), 0.0),
    )
    return np.diff(flow, prepend=0.0), (phase < tp + tn).astype(np.float64)


def _resonator(x: np.ndarray, freq: float, bw: float, sr: int) -> np.ndarray:
    r = np.exp(-np.pi * bw / sr)
    c = 2 * r * np.cos(2 * np.pi * freq / sr)
    return lfilter([1 - c + r * r], [1, -c, r * r], x)


def render_voice(p: VoiceParams, seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Synthesize a voiced babble clip.

    Args:
        p: voice parameters.
        seconds: clip duration.
        sr: sample rate in Hz.
        rng: random generator (syllables, accents, jitter, noise).

    Returns:
        float32 mono waveform ``[round(seconds * sr)]`` in [-1, 1].
    """
    n = int(round(seconds * sr))
    sylls = _syllables(p, seconds, rng)
    f0 = _f0_contour(p, sylls, n, sr, rng)
    pulses, open_mask = _glottal(f0, sr, open_q=0.55 + 0.35 * p.breathiness)
    shimmer = 1 + lfilter([0.05], [1, -0.95], rng.normal(0.0, 1.0, n)) * p.jitter * 20
    source = lfilter([1 - p.tilt], [1, -p.tilt], pulses * shimmer) * 40
    aspiration = rng.normal(0.0, 1.0, n) * (0.3 + 0.7 * open_mask)
    source = source + aspiration * p.breathiness * np.abs(source).mean() * 4
    out = np.zeros(n)
    for start, dur, vowel in sylls:
        i0, i1 = int(start * sr), min(n, int((start + dur) * sr))
        if i1 - i0 < 16:
            continue
        seg = source[i0:i1]
        for k, (freq, bw) in enumerate(zip(VOWELS[vowel], (80.0, 100.0, 140.0), strict=True)):
            seg = _resonator(seg, min(freq * p.formant_shift, 0.45 * sr), bw * (1 + p.breathiness), sr) * (0.9**k)
        env = np.sin(np.linspace(0, np.pi, i1 - i0)) ** 0.6 * rng.uniform(0.7, 1.0)
        burst = min(i1 - i0, int(0.025 * sr))
        cons = lfilter([1, -0.9], [1], rng.normal(0.0, 0.3, burst)) * np.linspace(1, 0, burst)
        out[i0:i1] += seg * env
        out[i0 : i0 + burst] += cons * np.abs(seg).mean() * 3
    rms = np.sqrt(np.mean(out**2)) + 1e-9
    out = out / rms * 10 ** (p.rms_db / 20) + rng.normal(0.0, 10 ** (-65 / 20), n)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def espeak_available() -> bool:
    """True when the ``espeak-ng`` binary is on PATH."""
    return shutil.which("espeak-ng") is not None


def render_espeak(text: str, p: VoiceParams, seconds: float, sr: int) -> np.ndarray:
    """Speak ``text`` with espeak-ng, fitted (cut or padded with silence) to ``seconds``.

    Raises:
        RuntimeError: espeak-ng is not installed or failed.
    """
    if not espeak_available():
        raise RuntimeError("voice='espeak' needs the espeak-ng binary (apt-get install espeak-ng); use voice=numpy")
    pitch = int(np.clip(50 + 40 * np.log2(p.f0 / 160.0), 0, 99))
    wpm = int(np.clip(p.rate * 40, 80, 450))
    amp = int(np.clip(100 * 10 ** ((p.rms_db + 24) / 20), 20, 200))
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "s.wav"
        cmd = ["espeak-ng", "-v", "en", "-p", str(pitch), "-s", str(wpm), "-a", str(amp), "-w", str(wav), text or "."]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"espeak-ng failed: {done.stderr.strip()}")
        speech, rate = read_wav(str(wav))
    if rate != sr:
        g = np.gcd(rate, sr)
        speech = resample_poly(speech, sr // g, rate // g).astype(np.float32)
    n = int(round(seconds * sr))
    return np.pad(speech[:n], (0, max(0, n - len(speech)))).astype(np.float32)


def write_wav(path: str, audio: np.ndarray, sr: int) -> None:
    """Write float audio ``[n]`` in [-1, 1] as 16-bit PCM mono wav."""
    pcm = np.clip(np.rint(audio * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(path, "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(sr)
        fh.writeframes(pcm.tobytes())


def read_wav(path: str) -> tuple[np.ndarray, int]:
    """Read a 16-bit PCM wav as float32 mono ``[n]`` and its sample rate."""
    with wave.open(path, "rb") as fh:
        sr, ch = fh.getframerate(), fh.getnchannels()
        pcm = np.frombuffer(fh.readframes(fh.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
    return (pcm.reshape(-1, ch).mean(axis=1) if ch > 1 else pcm), sr
