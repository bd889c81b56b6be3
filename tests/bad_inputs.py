"""The bad-input corpus: media files and manifest lines that are broken in every way the issue lists (issue 14),
written by the tests themselves (PyAV, Pillow, raw bytes; nothing is committed or downloaded).

:func:`write_corpus` writes one folder: ``media/`` (the files), ``manifest.jsonl`` (one line per case, good clips
first) and ``good.jsonl`` (the good clips alone, for the byte-identity check), and returns a :class:`Case` per line
with the outcome each command must reach. :func:`write_manifest_cases` writes the cases that are whole manifests
(empty, blank lines, BOM, CRLF, a folder). Any command can run the corpus and compare against ``Case``: ``data
check``, ``data prep`` and the training loader here; ``label`` and the server later.

Outcomes: ``ok`` (usable, no message), ``warning`` (usable, with a message), ``row`` (the manifest row itself is
refused: every command reports line and field and skips it), ``media`` (the row is valid but its media give
nothing usable: refused with the cause, the batch goes on).
"""

from __future__ import annotations

import json
import os
import signal
import struct
import zlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image

from tests.media_fixtures import write_corrupt, write_truncated, write_video, write_wav

OK, WARNING, ROW, MEDIA = "ok", "warning", "row", "media"


@dataclass(frozen=True)
class Case:
    """One manifest line of the corpus and what every command must make of it.

    Attributes:
        name: the kind of bad input.
        line: its 1-based line in ``manifest.jsonl``.
        id: the row's id as commands report it (None when it has none that can be read).
        outcome: ``ok``, ``warning``, ``row`` or ``media`` (see the module docs).
        field: the field the message must name (``video``, ``json``, ``id``...); empty for ``ok``.
        cause: a lower-case phrase the message must contain.
    """

    name: str
    line: int
    id: str | None
    outcome: str
    field: str = ""
    cause: str = ""

    @property
    def usable(self) -> bool:
        """True when a command must use the row (ok or warning)."""
        return self.outcome in (OK, WARNING)


def _png_header(width: int, height: int) -> bytes:
    """A valid PNG of one black row declaring ``width x height`` (a decompression bomb's header, 60 bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def _wav_bytes(samples: int, sample_rate: int = 16000, declared: int | None = None) -> bytes:
    """A mono 16-bit PCM wav of ``samples`` zeros whose header declares ``declared`` data bytes."""
    data = b"\0\0" * samples
    size = len(data) if declared is None else declared
    fmt = struct.pack("<HHIIHH", 1, 1, sample_rate, sample_rate * 2, 2, 16)
    return (b"RIFF" + struct.pack("<I", 36 + size) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data"
            + struct.pack("<I", size) + data)


def _encode(path: Path, codec: str, fmt: str | None, frames: int = 8, size: tuple[int, int] = (48, 64),
            pix_fmt: str = "yuv420p") -> Path:
    """A short clip in ``codec`` (a moving bar), for the unusual-codec cases."""
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=8)
        stream.height, stream.width = size
        stream.pix_fmt = pix_fmt
        for i in range(frames):
            img = np.zeros((*size, 3), np.uint8)
            img[:, (i * 6) % size[1]:(i * 6) % size[1] + 6] = 255
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode(None))
    return path


def _two_frames_far_apart(path: Path, seconds: int) -> Path:
    """An MJPEG Matroska file of two frames ``seconds`` apart: a few kB declaring a huge duration."""
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("mjpeg", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
        for pts in (0, seconds * 25):
            frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 25)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def _no_streams_mp4(path: Path) -> Path:
    """An mp4 whose only track never got a packet: the muxer drops it, leaving a container with no stream."""
    out = av.open(str(path), "w")
    stream = out.add_stream("mjpeg", rate=8)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
    out.start_encoding()
    out.close()
    return path


def _audio_only_mp4(path: Path) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        stream.layout = "mono"
        wave = (0.3 * np.sin(np.arange(16000) / 5)).astype(np.float32)[None]
        for start in range(0, wave.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, start:start + 1024]), format="fltp",
                                               layout="mono")
            frame.sample_rate, frame.pts = 16000, start
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def _faces_video(path: Path, faces: int) -> Path:
    from skimage import data

    face = data.astronaut()[:256, 96:352]
    image = np.concatenate([face] * faces, axis=1) if faces > 1 else face
    return write_video(path, seconds=0.5, fps=8, size=(160, 160 * faces), image=image)


def _write_media(media: Path, outside: Path) -> dict[str, Path]:
    """Every media file of the corpus, by kind."""
    m: dict[str, Path] = {}
    m["good"] = _faces_video(media / "good.mp4", 1)
    m["good_av"] = write_video(media / "good_av.mp4", seconds=1.0, fps=8, size=(48, 64), audio=True,
                               sample_rate=16000, channels=1)
    m["good_wav"] = write_wav(media / "good.wav", seconds=0.5, sample_rate=16000, channels=1)
    m["mpeg4"] = _encode(media / "mpeg4.mp4", "mpeg4", "mp4")
    m["mjpeg"] = _encode(media / "mjpeg.avi", "mjpeg", "avi", pix_fmt="yuvj420p")
    m["vp9"] = _encode(media / "vp9.webm", "libvpx-vp9", "webm")
    m["one_frame"] = _encode(media / "one_frame.mp4", "libx264", "mp4", frames=1)
    m["no_face"] = write_video(media / "no_face.mp4", seconds=0.5, fps=8, size=(64, 64))
    m["two_faces"] = _faces_video(media / "two_faces.mp4", 2)
    m["silent"] = media / "silent.wav"
    m["silent"].write_bytes(_wav_bytes(8000))
    m["zero_byte"] = media / "zero_byte.mp4"
    m["zero_byte"].write_bytes(b"")
    full = write_video(media / ".full.mp4", seconds=2.0, fps=8, size=(48, 64))
    m["truncated"] = write_truncated(full, media / "truncated.mp4", keep=0.3)
    faststart = write_video(media / ".faststart.mp4", seconds=2.0, fps=8, size=(48, 64), audio=True,
                            sample_rate=16000, channels=1, faststart=True)
    m["cut_faststart"] = write_truncated(faststart, media / "cut_faststart.mp4", keep=0.6)
    m["random"] = write_corrupt(media / "random.mp4")
    m["image_as_mp4"] = media / "image_as.mp4"
    Image.new("RGB", (64, 48), (200, 120, 40)).save(m["image_as_mp4"], format="JPEG")
    m["audio_only"] = _audio_only_mp4(media / "audio_only.mp4")
    m["no_streams"] = _no_streams_mp4(media / "no_streams.mp4")
    m["huge_res"] = _encode(media / "huge_res.mp4", "libx264", "mp4", frames=1, size=(2400, 4000))
    m["huge_duration"] = _two_frames_far_apart(media / "huge_duration.mkv", 97 * 3600)
    m["corrupt_wav"] = media / "corrupt_header.wav"
    m["corrupt_wav"].write_bytes(b"RIFF\xff\xff\xff\xffWAVEfmt " + bytes(range(40)))
    m["zero_wav"] = media / "zero_length.wav"
    m["zero_wav"].write_bytes(_wav_bytes(0))
    m["one_sample_wav"] = media / "one_sample.wav"
    m["one_sample_wav"].write_bytes(_wav_bytes(1))
    m["png_bomb"] = media / "bomb.png"
    m["png_bomb"].write_bytes(_png_header(20000, 20000))
    m["empty_dir"] = media / "folder.mp4"
    m["empty_dir"].mkdir()
    m["fifo"] = media / "fifo.mp4"
    os.mkfifo(m["fifo"])
    m["loop"] = media / "loop.mp4"
    os.symlink("loop.mp4", m["loop"])
    outside.mkdir(parents=True, exist_ok=True)
    m["outside"] = write_video(outside / "outside.mp4", seconds=0.5, fps=8, size=(48, 64))
    m["link_out"] = media / "link_out.mp4"
    os.symlink(m["outside"], m["link_out"])
    return m


def _cases(m: dict[str, Path], corpus: Path) -> list[tuple[str, Any, str, str, str]]:
    """(name, row or raw bytes, outcome, field, cause) per line, good clips first."""
    rel = {k: os.path.relpath(v, corpus) for k, v in m.items()}

    def v(key: str, **extra: Any) -> dict[str, Any]:
        return {"id": key, "video": rel[key], "labels": ["happy"], **extra}

    def a(key: str, **extra: Any) -> dict[str, Any]:
        return {"id": key, "audio": rel[key], "labels": ["calm"], **extra}

    nested = b'{"id": "nested", "transcript": "x", "deep": ' + b"[" * 100000 + b"]" * 100000 + b"}"
    return [
        ("good video with a face", v("good", transcript="I am glad."), OK, "", ""),
        ("good video with audio", v("good_av"), OK, "", ""),
        ("good wav", a("good_wav", transcript="fine"), OK, "", ""),
        ("valid mpeg4", v("mpeg4"), OK, "", ""),
        ("valid mjpeg in avi", v("mjpeg"), OK, "", ""),
        ("valid vp9 in webm", v("vp9"), OK, "", ""),
        ("one-frame video", v("one_frame"), OK, "", ""),
        ("no face in any frame", v("no_face"), OK, "", ""),
        ("several faces", v("two_faces"), OK, "", ""),
        ("silent audio", a("silent"), OK, "", ""),
        ("numeric id", {"id": 12345, "transcript": "a number as id", "labels": ["calm"]}, OK, "", ""),
        ("rich markup in an id", {**v("good_av"), "id": "[/red]oops[bold]"}, OK, "", ""),
        ("5 MB transcript", {"id": "long_transcript", "transcript": "la " * (5 * 2**20 // 3), "labels": ["sad"]},
         WARNING, "transcript", "cut"),
        ("end beyond the duration", v("good_av", id="end_past", start=0.2, end=30.0), WARNING, "end", "past"),
        ("cut faststart mp4 with audio", v("cut_faststart"), WARNING, "video", "audio"),
        ("zero-byte file", v("zero_byte"), MEDIA, "video", "empty file"),
        ("truncated mp4", v("truncated"), MEDIA, "video", "cannot"),
        ("random bytes named .mp4", v("random"), MEDIA, "video", "cannot"),
        ("image renamed .mp4", v("image_as_mp4"), WARNING, "video", "recovered"),
        ("mp4 with only audio", v("audio_only"), MEDIA, "video", "no video stream"),
        ("mp4 with no stream", v("no_streams"), MEDIA, "video", "no video stream"),
        ("wav named as video", {"id": "wav_as_video", "video": rel["good_wav"], "labels": ["x"]}, MEDIA, "video",
         "no video stream"),
        ("video in the audio field", {"id": "video_as_audio", "audio": rel["no_face"], "labels": ["x"]}, MEDIA,
         "audio", "no audio stream"),
        ("huge declared resolution", v("huge_res"), MEDIA, "video", "over the limit"),
        ("huge declared duration", v("huge_duration"), MEDIA, "video", "over the limit"),
        ("corrupt wav header", a("corrupt_wav"), MEDIA, "audio", "cannot"),
        ("zero-length wav", a("zero_wav"), MEDIA, "audio", "no audio samples"),
        ("one-sample wav", a("one_sample_wav"), MEDIA, "audio", "no audio samples"),
        ("PNG declaring 20000x20000", v("png_bomb"), MEDIA, "video", "over the limit"),
        ("directory where a file is expected", v("empty_dir"), MEDIA, "video", "directory"),
        ("FIFO", v("fifo"), MEDIA, "video", "fifo"),
        ("symlink loop", v("loop"), MEDIA, "video", "symlink loop"),
        ("symlink pointing outside", v("link_out"), ROW, "video", "outside"),
        ("../ path escaping the folder", v("outside", id="dotdot"), ROW, "video", "outside"),
        ("absolute path outside", {**v("outside", id="absolute"), "video": str(m["outside"])}, ROW, "video",
         "outside"),
        ("5000-character file name", {"id": "long_name", "video": "media/" + "n" * 5000 + ".mp4"}, MEDIA, "video",
         "name too long"),
        ("missing file", {"id": "missing", "video": "media/nowhere.mp4"}, MEDIA, "video", "no such file"),
        ("rich markup in a path", {"id": "markup_path", "video": "media/[bold]x[/bold].mp4"}, MEDIA, "video",
         "no such file"),
        ("rich markup in a failing row's id", {"id": "[/red]bad[bold]", "video": "media/gone.mp4"}, MEDIA, "video",
         "no such file"),
        ("start after the end of the file", v("good_av", id="start_past", start=50.0), MEDIA, "start", "after"),
        ("non-UTF-8 bytes", b'{"id": "latin1", "transcript": "caf\xe9"}', ROW, "json", "utf-8"),
        ("broken JSON line", b'{"id": "broken", "video": ', ROW, "json", "invalid json"),
        ("deeply nested JSON", nested, ROW, "json", "nested"),
        ("not an object", b'["a", "list"]', ROW, "json", "object"),
        ("missing id", {"video": rel["good_av"]}, ROW, "id", "missing"),
        ("duplicated id", v("good_av"), ROW, "id", "duplicate"),
        ("non-string id", {"id": ["x"], "video": rel["good_av"]}, ROW, "id", "string"),
        ("wrong types", {"id": "wrong_types", "video": 7, "labels": "happy"}, ROW, "video", "string"),
        ("NaN valence", b'{"id": "nan", "transcript": "x", "valence": NaN}', ROW, "valence", "number"),
        ("inf valence", b'{"id": "inf", "transcript": "x", "valence": Infinity}', ROW, "valence", "number"),
        ("out-of-range valence", {"id": "v5", "transcript": "x", "valence": 5}, ROW, "valence", "outside"),
        ("start after end", {"id": "window", "transcript": "x", "start": 3, "end": 1}, ROW, "end", "not after"),
    ]


def _readable_id(raw: bytes) -> str | None:
    """The id a command can report for a line: None when the line cannot be read or has no usable id."""
    try:
        row = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    ok = isinstance(row, dict) and isinstance(row.get("id"), (str, int)) and not isinstance(row.get("id"), bool)
    return str(row["id"]) if ok else None


def crash_on_clip_named_crash(decoded: Any) -> dict[str, np.ndarray]:
    """A ``data prep`` feature hook (picklable) that kills its process on the clip whose id is ``crash``: a stand-in
    for a decoder that segfaults on one file."""
    if decoded.id == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    return {}


def write_corpus(root: str | Path) -> tuple[Path, list[Case]]:
    """Write the corpus under ``root``: ``root/corpus/manifest.jsonl`` (every case), ``root/corpus/good.jsonl``
    (the usable cases alone, same rows), ``root/corpus/media/``, and one file outside the corpus folder.

    Returns:
        ``(manifest, cases)``: the cases in line order.
    """
    corpus = Path(root) / "corpus"
    (corpus / "media").mkdir(parents=True)
    media = _write_media(corpus / "media", Path(root) / "outside")
    cases, lines, good = [], [], []
    for number, (name, row, outcome, field, cause) in enumerate(_cases(media, corpus), start=1):
        raw = row if isinstance(row, bytes) else json.dumps(row).encode()
        lines.append(raw + b"\n")
        ident = _readable_id(raw)
        case = Case(name, number, ident, outcome, field, cause)
        cases.append(case)
        if case.usable:
            good.append(raw + b"\n")
    (corpus / "manifest.jsonl").write_bytes(b"".join(lines))
    (corpus / "good.jsonl").write_bytes(b"".join(good))
    return corpus / "manifest.jsonl", cases


def write_manifest_cases(root: str | Path, video: str) -> dict[str, tuple[Path, bool]]:
    """Whole-manifest cases: name -> (path, usable). ``video`` is a good clip's path relative to ``root``.

    ``empty`` and ``blank lines`` hold no row (a non-zero exit with a warning); ``BOM`` and ``CRLF`` hold one good
    row each and must work; ``directory`` is a folder given as the manifest (a clear error).
    """
    root = Path(root)
    row = json.dumps({"id": "one", "video": video, "labels": ["happy"]}).encode()
    files = {"empty": (b"", False), "blank lines": (b"\n  \n\t\n\r\n", False),
             "BOM": (b"\xef\xbb\xbf" + row + b"\n", True), "CRLF": (row + b"\r\n", True)}
    out = {}
    for name, (data, usable) in files.items():
        path = root / f"{name.replace(' ', '_')}.jsonl"
        path.write_bytes(data)
        out[name] = (path, usable)
    (root / "dir.jsonl").mkdir()
    out["directory"] = (root / "dir.jsonl", False)
    return out


def prep_outputs(folder: Path) -> dict[str, tuple[dict, dict[str, np.ndarray]]]:
    """id -> (``data prep`` row without its wall time, its arrays) of a prep folder; an id written twice fails."""
    rows = [json.loads(x) for x in (folder / "prep.jsonl").read_text().splitlines()]
    assert len({r["id"] for r in rows}) == len(rows), "an id written twice"
    result = {}
    for row in rows:
        arrays = {}
        if row["arrays"]:
            with np.load(folder / row["arrays"]) as z:
                arrays = {k: z[k] for k in z.files}
        result[row["id"]] = ({k: v for k, v in row.items() if k != "seconds"}, arrays)
    return result
