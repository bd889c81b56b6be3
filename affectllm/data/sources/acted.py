"""Acted corpora: RAVDESS (filename codes), CREMA-D (filename codes + optional perceived votes), IEMOCAP."""

from __future__ import annotations

import re
from pathlib import Path

from affectllm.data.sources._base import (
    LoadResult,
    _clip,
    col,
    find,
    find_all,
    layout_error,
    read_csv,
    read_text,
    register,
    scale,
)
from affectllm.types import Clip

RAVDESS_EMOTIONS: dict[str, str] = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
RAVDESS_STATEMENTS: dict[str, str] = {"01": "Kids are talking by the door.", "02": "Dogs are sitting by the door."}
_RAVDESS_NAME = re.compile(r"^(0[1-3])-(0[12])-(0[1-8])-(0[12])-(0[12])-(0[12])-(\d\d)$")

CREMAD_EMOTIONS: dict[str, str] = {"ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral",
                                   "SAD": "sad"}
CREMAD_LEVELS: dict[str, str] = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}
CREMAD_SENTENCES: dict[str, str] = {
    "IEO": "It's eleven o'clock.",
    "TIE": "That is exactly what happened.",
    "IOM": "I'm on my way to the meeting.",
    "IWW": "I wonder what this is about.",
    "TAI": "The airplane is almost full.",
    "MTI": "Maybe tomorrow it will be cold.",
    "IWL": "I would like a new alarm clock.",
    "ITH": "I think I have a doctor's appointment.",
    "DFA": "Don't forget a jacket.",
    "ITS": "I think I've seen this before.",
    "TSI": "The surface is slick.",
    "WSI": "We'll stop in a couple of minutes.",
}
_CREMAD_VOTES: dict[str, str] = {code[0]: name for code, name in CREMAD_EMOTIONS.items()}  # A, D, F, H, N, S
_CREMAD_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")

IEMOCAP_LABELS: dict[str, str] = {"neu": "neutral", "fru": "frustrated", "ang": "angry", "sad": "sad", "hap": "happy",
                                  "exc": "excited", "sur": "surprised", "fea": "fearful", "dis": "disgusted",
                                  "oth": "other"}
_IEMOCAP_LINE = re.compile(r"^\[([\d.]+)\s*-\s*([\d.]+)\]\s+(\S+)\s+(\S+)\s+\[([\d.]+),\s*([\d.]+),\s*([\d.]+)\]")
_IEMOCAP_TEXT = re.compile(r"^(Ses\S+)\s+\[[^\]]*\]:\s*(.*)$")


def _actor_split(actor: int, test_actors: tuple[int, ...] | None) -> str | None:
    return None if not test_actors else ("test" if actor in test_actors else "train")


@register("ravdess", card="ravdess")
def load_ravdess(root: str | Path, test_actors: tuple[int, ...] | None = None) -> LoadResult:
    """RAVDESS: one clip per recording (speech and song), pairing the full-AV/video-only mp4 with the audio-only wav.

    File names are 7 codes, ``modality-channel-emotion-intensity-statement-repetition-actor``. No official split:
    ``test_actors`` (e.g. ``(21, 22, 23, 24)``) marks those actors' clips ``test`` and the rest ``train``.
    """
    root = Path(root)
    recordings: dict[str, dict[str, str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in (".mp4", ".wav")):
        match = _RAVDESS_NAME.match(path.stem)
        if match is None:
            continue
        key = "-".join(match.groups()[1:])
        slot = {"01": "av", "02": "video", "03": "audio"}[match.group(1)]
        recordings.setdefault(key, {})[slot] = str(path)
    if not recordings:
        raise layout_error("ravdess", root, "RAVDESS recording", ["Actor_*/03-01-05-01-02-01-12.wav (7 codes)"])
    out = LoadResult()
    for key, files in sorted(recordings.items()):
        channel, emotion, intensity, statement, repetition, actor = key.split("-")
        label = RAVDESS_EMOTIONS[emotion]
        out.clips.append(
            _clip(
                "ravdess",
                key,
                video=files.get("av") or files.get("video"),
                audio=files.get("audio"),
                transcript=RAVDESS_STATEMENTS[statement],
                labels=[label],
                split=_actor_split(int(actor), test_actors),
                extra={
                    "actor": int(actor),
                    "gender": "male" if int(actor) % 2 else "female",
                    "intensity": "strong" if intensity == "02" else "normal",
                    "vocal_channel": "song" if channel == "02" else "speech",
                    "repetition": int(repetition),
                },
            )
        )
    return out


def _cremad_votes(root: Path, labels: str) -> dict[str, tuple[str, str]]:
    if labels == "intended":
        return {}
    path = find(
        root, "processedResults/summaryTable.csv", "summaryTable.csv", what="summaryTable.csv", dataset="cremad"
    )
    column = {"voice": "voicevote", "face": "facevote", "multimodal": "multimodalvote"}[labels]
    return {
        r["filename"]: (col(r, column) or "", col(r, column.replace("vote", "level")) or "")
        for _, r in read_csv(path)
        if "filename" in r
    }


@register("cremad", card="cremad")
def load_cremad(root: str | Path, labels: str = "intended", test_actors: tuple[int, ...] | None = None) -> LoadResult:
    """CREMA-D: ``AudioWAV/1001_DFA_ANG_XX.wav`` (+ ``VideoFlash/*.flv`` or converted ``VideoMP4/*.mp4``).

    Args:
        root: the release (git-lfs checkout) folder.
        labels: ``"intended"`` (the acted emotion in the file name) or the crowd's ``"voice"``, ``"face"`` or
            ``"multimodal"`` vote from ``processedResults/summaryTable.csv`` (ties are ``"a:b"``: all kept).
        test_actors: actor ids (1001-1091) marked ``test``; no official split exists.
    """
    root = Path(root)
    audio = {p.stem: str(p) for p in find_all(root, "AudioWAV/*.wav")}
    video = {p.stem: str(p) for d in ("VideoMP4/*.mp4", "VideoFlash/*.flv") for p in find_all(root, d)}
    if not audio and not video:
        find(root, "AudioWAV", "VideoFlash", what="AudioWAV/ or VideoFlash/", dataset="cremad")
    votes = _cremad_votes(root, labels)
    out = LoadResult()
    for stem in sorted(set(audio) | set(video)):
        match = _CREMAD_NAME.match(stem)
        if match is None or match.group(3) not in CREMAD_EMOTIONS:
            continue
        actor, sentence, emo, level = match.groups()
        names = [CREMAD_EMOTIONS[emo]]
        if votes:
            vote, _ = votes.get(stem, ("", ""))
            names = [_CREMAD_VOTES.get(v.strip().upper(), v.strip().lower()) for v in vote.split(":") if v.strip()]
        out.clips.append(
            _clip(
                "cremad",
                stem,
                video=video.get(stem),
                audio=audio.get(stem),
                transcript=CREMAD_SENTENCES.get(sentence),
                labels=names,
                split=_actor_split(int(actor), test_actors),
                extra={
                    "actor": int(actor),
                    "intended": CREMAD_EMOTIONS[emo],
                    "level": CREMAD_LEVELS.get(level, level),
                },
            )
        )
    return out


def _iemocap_texts(session: Path) -> dict[str, str]:
    texts: dict[str, str] = {}
    for path in sorted((session / "dialog" / "transcriptions").glob("*.txt")):
        for line in read_text(path).splitlines():
            match = _IEMOCAP_TEXT.match(line.strip())
            if match:
                texts[match.group(1)] = match.group(2).strip()
    return texts


# The usual 4-class protocol (s3prl, MERTools' label_4way.npz, 5,531 utterances): excited merged into happy.
IEMOCAP_4CLASS: dict[str, str] = {"ang": "angry", "hap": "happy", "exc": "happy", "sad": "sad", "neu": "neutral"}


def _iemocap_clip(
    session: Path, match: re.Match[str], label: str | None, texts: dict[str, str], split: str | None
) -> Clip:
    start, end, utt, code, val, act, dom = match.groups()
    dialog = utt.rsplit("_", 1)[0]
    extra = {
        "session": int(session.name[-1]),
        "dominance": scale(dom, 1, 5),
        "dialog_video": str(session / "dialog" / "avi" / "DivX" / f"{dialog}.avi"),
        "dialog_start": float(start),
        "dialog_end": float(end),
        "speaker": utt.rsplit("_", 1)[1][0],
    }
    if label is not None and IEMOCAP_LABELS.get(code) != label:
        extra["original_label"] = IEMOCAP_LABELS.get(code)
    return _clip(
        "iemocap",
        utt,
        audio=str(session / "sentences" / "wav" / dialog / f"{utt}.wav"),
        transcript=texts.get(utt),
        labels=[label] if label else None,
        emotion=label,
        valence=scale(val, 1, 5),
        arousal=scale(act, 1, 5),
        split=split,
        extra=extra,
    )


@register("iemocap", card="iemocap")
def load_iemocap(
    root: str | Path, test_session: int | None = None, keep_unlabelled: bool = False, protocol: str = "all"
) -> LoadResult:
    """IEMOCAP: ``Session<n>/dialog/EmoEvaluation/*.txt`` + ``sentences/wav`` + transcriptions.

    Utterances get audio (the utterance wav, already cut) and transcript; the dialog ``.avi`` (both actors, whole
    dialog) goes to ``extra.dialog_video`` with the utterance's place in it as ``extra.dialog_start``/``dialog_end``.
    These are not ``start``/``end``: those are a decoding window on every media file of the row, and the wav starts
    at 0.

    Args:
        root: ``IEMOCAP_full_release``.
        test_session: 1-5 marks that session ``test`` (one fold of leave-one-session-out); None leaves splits unset.
        keep_unlabelled: keep ``xxx`` (no majority) utterances, without labels (``protocol="all"`` only).
        protocol: ``"all"`` (the 10 categories as annotated) or ``"4class"`` (angry, happy = happy + excited, sad,
            neutral; the other categories are left out, one count per file in the problems).
    """
    if protocol not in ("all", "4class"):
        raise ValueError(f"iemocap: protocol={protocol!r}; use 'all' or '4class'")
    root = Path(root)
    sessions = find_all(root, "Session[1-5]")
    if not sessions:
        find(root, "Session1", what="Session1..Session5 folders", dataset="iemocap")
    table = IEMOCAP_4CLASS if protocol == "4class" else IEMOCAP_LABELS
    out = LoadResult()
    for session in sessions:
        number = int(session.name[-1])
        split = None if test_session is None else ("test" if number == test_session else "train")
        texts = _iemocap_texts(session)
        for path in sorted((session / "dialog" / "EmoEvaluation").glob("*.txt")):
            left_out = 0
            for line_no, line in enumerate(read_text(path).splitlines(), start=1):
                match = _IEMOCAP_LINE.match(line.strip())
                if match is None:
                    continue
                utt, code = match.group(3), match.group(4)
                label = table.get(code)
                if label is None and protocol == "4class":
                    left_out += 1
                    continue
                if label is None and not keep_unlabelled:
                    out.warn(
                        path,
                        line_no,
                        "emotion",
                        f"{utt}: no majority label ({code!r}); skipped",
                        "pass keep_unlabelled=True to keep it",
                        f"iemocap/{utt}",
                    )
                    continue
                out.clips.append(_iemocap_clip(session, match, label, texts, split))
            if left_out:
                out.warn(path, 0, "emotion", f"{left_out} utterances outside the 4 classes left out (protocol=4class)")
    return out
