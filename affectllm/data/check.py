"""``affectllm data check MANIFEST``: validate every row and probe every media file, then summarise.

Each problem is printed with the manifest's line number and the field at fault; the exit status is 1 when any row
has an error (warnings alone exit 0) and 2 when the manifest itself cannot be read.

The probe opens each video/audio file with :func:`affectllm.media.decode.probe`, reads its streams and duration, and
checks that a ``video`` has a video stream and an ``audio`` an audio stream. It decodes nothing, so it is fast (a
few ms a file); files shared by several rows are probed once, in a small thread pool (PyAV releases the GIL while
it demuxes).

A ``video`` may also be a still image or a folder of frames (FEA-20K, FERV39K, BP4D): the decoder reads them with
Pillow (:mod:`affectllm.media.stills`), so they are not errors; the report adds one note counting them, with the
ffmpeg line that turns a folder into a video (faster to decode). A row's ``start``/``end`` window is checked against
the probed duration with the decoder's own rules (:func:`affectllm.media.common.clamp_window`): a window that starts
after the file ends is an error, one that ends more than ``WINDOW_SLACK_S`` past it a warning (the decoder clamps
it), and the media duration sums windows rather than whole files.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from affectllm.data.manifest import MEDIA_FIELDS, Problem, iter_manifest
from affectllm.data.prompts import MAX_TRANSCRIPT_CHARS
from affectllm.data.roots import media_roots
from affectllm.media.common import (
    MIN_AUDIO_S,
    DecodeConfig,
    MediaError,
    MediaInfo,
    MediaLimitError,
    MediaWindowError,
    Window,
    check_limits,
    clamp_window,
    clip_window,
    path_problem,
)
from affectllm.types import Clip

LIMITS = DecodeConfig()
"""The limits ``data check`` holds files to: the decoder's defaults, which ``data prep``'s defaults keep."""


@dataclass
class FileCheck:
    """What ``data check`` learnt about one media file.

    Attributes:
        path: the file.
        error: what is wrong with it (None when it is usable), and ``hint`` what to do.
        info: the decoder's probe of its headers (None without ``--probe`` or when it could not be opened).
        form: ``"file"``, ``"image"`` (a still) or ``"frames"`` (a folder of frames).
    """

    path: str
    error: str | None = None
    hint: str = ""
    info: MediaInfo | None = None
    form: str = "file"

    @property
    def streams(self) -> list[str]:
        """The stream kinds the probe found (``["video", "audio"]``)."""
        if self.info is None:
            return []
        return [k for k, has in (("video", self.info.has_video), ("audio", self.info.has_audio)) if has]

    @property
    def duration(self) -> float | None:
        """Seconds, from the probe (None when unknown)."""
        return None if self.info is None else self.info.duration_s

    @property
    def width(self) -> int | None:
        """Frame width in pixels, from the probe."""
        return None if self.info is None else self.info.width


def _file_error(path: Path) -> tuple[str, str] | None:
    """A missing, empty, special or unreadable file: (message, hint); None when its bytes can be read (or it is a
    folder, read as frames). The decoder's own :func:`~affectllm.media.common.path_problem` says what it is."""
    problem = path_problem(str(path), folder_ok=True)
    if problem is not None:
        hint = ("re-copy or re-extract the file" if problem.startswith("empty") else
                "fix the path (it is relative to the manifest's folder) or add the file")
        return f"{problem}: {str(path)[:300]}", hint
    if path.is_dir():
        return None
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as err:
        return f"not readable: {err.strerror or err}", "check the file's permissions"
    return None


def probe_file(path: str, kind: str, open_media: bool = True) -> FileCheck:
    """Probe one media file without decoding it.

    Args:
        path: the file.
        kind: ``"video"`` or ``"audio"``: the stream the file must carry.
        open_media: open the container (:func:`affectllm.media.decode.probe`); when False only existence and
            readability are checked.

    Returns:
        A :class:`FileCheck`; its ``error`` says what is wrong, if anything.
    """
    from affectllm.media.decode import probe
    from affectllm.media.stills import is_image

    check = FileCheck(path)
    bad = _file_error(Path(path))
    if bad is not None:
        check.error, check.hint = bad
        return check
    check.form = "frames" if Path(path).is_dir() else "image" if is_image(path) else "file"
    if not open_media:
        return check
    try:
        check.info = probe(path)
    except (MediaError, OSError) as err:
        check.error, check.hint = f"cannot be opened as media: {err}", "re-encode (ffmpeg -i IN OUT.mp4) or replace it"
        return check
    if kind not in check.streams:
        found = ", ".join(check.streams) or "none"
        check.error = f"has no {kind} stream (streams: {found})"
        check.hint = f"move it to the field of the stream it has, or give a file with {kind}"
    elif kind == "audio" and (check.info.duration_s or 0.0) < MIN_AUDIO_S:
        check.error = f"no audio samples to use ({check.info.duration_s or 0:.4f} s, under {MIN_AUDIO_S * 1000:g} ms)"
        check.hint = "give a longer recording or drop the row's 'audio'"
    return check


@dataclass
class CheckReport:
    """Everything ``data check`` found, for printing or for tests."""

    rows: int = 0
    bad_rows: int = 0
    problems: list[Problem] = field(default_factory=list)
    modalities: Counter = field(default_factory=Counter)
    splits: Counter = field(default_factory=Counter)
    sources: Counter = field(default_factory=Counter)
    duration: float = 0.0
    probed: int = 0
    opened: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        """The errors only."""
        return [p for p in self.problems if p.is_error]

    @property
    def warnings(self) -> list[Problem]:
        """The warnings only."""
        return [p for p in self.problems if not p.is_error]


def _window(clip: Clip, media: list[FileCheck]) -> tuple[Window | None, str | None, list[str]]:
    """The row's window clamped to the first probed duration, as the decoder clamps it: ``(window, error,
    warnings)``; the manifest reader has already rejected malformed ``start``/``end`` values."""
    window = clip_window(clip)
    info = next((m.info for m in media if m.info is not None and m.info.duration_s), None)
    if window is None or info is None:
        return window, None, []
    warnings: list[str] = []
    try:
        return clamp_window(window, info, clip.id, warnings), None, warnings
    except MediaWindowError as err:
        return None, str(err), []


def _limit_error(check: FileCheck, clip: Clip) -> str | None:
    """The decoder's limits (:func:`~affectllm.media.common.check_limits`, ``data prep``'s defaults) on a file."""
    if check.info is None:
        return None
    try:
        check_limits(check.info, LIMITS, clip_window(clip))
    except MediaLimitError as err:
        return str(err)
    return None


def _row_problems(line: int, clip: Clip, path: str) -> list[Problem]:
    """What ``data check`` says of the row itself: a transcript the prompts cut."""
    if clip.transcript and len(clip.transcript) > MAX_TRANSCRIPT_CHARS:
        return [Problem(line, "transcript", f"{len(clip.transcript)} characters: prompts cut it to the first "
                        f"{MAX_TRANSCRIPT_CHARS}", "shorten it, or split the clip", "warning", clip.id, path)]
    return []


def _media_problems(line: int, clip: Clip, checks: dict[tuple[str, str], FileCheck], path: str) -> list[Problem]:
    out = _row_problems(line, clip, path)
    media = [(kind, checks[(getattr(clip, kind), kind)]) for kind in MEDIA_FIELDS if getattr(clip, kind)]
    for kind, check in media:
        error = check.error or _limit_error(check, clip)
        if error is not None:
            hint = check.hint if check.error else "the limits are data prep's (affectllm data prep --help)"
            out.append(Problem(line, kind, error, hint, id=clip.id, path=path))
    media = [(kind, check) for kind, check in media if check.error is None]
    _, error, warnings = _window(clip, [c for _, c in media])
    if error is not None:
        out.append(Problem(line, "start", error, "fix the row's start/end", id=clip.id, path=path))
    out += [Problem(line, "end", w, "decoding clamps it; check the times", "warning", clip.id, path) for w in warnings]
    return out


def _clip_seconds(clip: Clip, media: list[FileCheck]) -> float:
    """Seconds of media a row stands for: its window inside the first file with a duration, else that file."""
    duration = next((m.duration for m in media if m.duration), 0.0)
    window, error, _ = _window(clip, media)
    if window is None or not duration:
        return 0.0 if error else duration
    return max(0.0, min(duration, window[1] if window[1] is not None else duration) - window[0])


def _stills_note(infos: dict[tuple[str, str], FileCheck]) -> str | None:
    forms = Counter(i.form for i in infos.values() if i.error is None)
    if not forms["frames"] and not forms["image"]:
        return None
    return (
        f"{forms['frames']} video path(s) are frame folders and {forms['image']} still images: decoded with Pillow "
        "(a folder at the row's fps, 25 by default); a folder decodes faster as a video: "
        "ffmpeg -framerate 25 -i DIR/%05d.jpg -c:v libx264 -pix_fmt yuv420p OUT.mp4 (match the names' pattern)"
    )


def check_manifest(manifest: str | os.PathLike[str], probe: bool = True, workers: int = 4,
                   roots: Sequence[str] | None = None) -> CheckReport:
    """Validate every row of a manifest and check every media file it names.

    Args:
        manifest: the JSONL manifest.
        probe: open media (streams, duration); when False only existence and readability are checked.
        workers: threads probing files.
        roots: folders media may lie in (:func:`affectllm.data.roots.media_roots`); None: anywhere.

    Returns:
        A :class:`CheckReport` (problems in line order).

    Raises:
        OSError: the manifest cannot be opened.
    """
    report = CheckReport()
    rows: list[tuple[int, Clip | None, list[Problem]]] = list(iter_manifest(manifest, roots))
    wanted = {(getattr(c, k), k) for _, c, _ in rows if c is not None for k in MEDIA_FIELDS if getattr(c, k)}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        jobs = {key: pool.submit(probe_file, key[0], key[1], probe) for key in sorted(wanted)}
        infos = {key: job.result() for key, job in jobs.items()}
    report.probed, report.opened = len(infos), probe
    for line, clip, problems in rows:
        report.rows += 1
        if clip is not None:
            problems = problems + _media_problems(line, clip, infos, str(manifest))
            report.modalities.update(k for k in ("video", "audio", "transcript") if getattr(clip, k))
            report.splits[clip.split or "(none)"] += 1
            report.sources[clip.source or "(none)"] += 1
            media = [infos[(m, k)] for k, m in (("video", clip.video), ("audio", clip.audio)) if m]
        if clip is None or any(p.is_error for p in problems):
            report.bad_rows += 1
        else:
            report.duration += _clip_seconds(clip, media)
        report.problems.extend(problems)
    note = _stills_note(infos)
    report.notes += [note] if note else []
    return report


def _print_report(report: CheckReport, manifest: str, max_print: int) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(highlight=False, soft_wrap=True)
    for problem in report.problems[:max_print]:
        # Text, not markup: ids and paths come from the data and may hold "[/red]"-like brackets.
        console.print(Text(str(problem), style="red" if problem.is_error else "yellow"))
    if len(report.problems) > max_print:
        console.print(f"... and {len(report.problems) - max_print} more problems (see the counts below)")
    for note in report.notes:
        console.print(f"note: {note}", markup=False)
    table = Table(title=Text(f"data check: {manifest}"), show_header=False)
    table.add_row("rows", str(report.rows))
    table.add_row("rows ok", str(report.rows - report.bad_rows))
    table.add_row("rows with errors", f"[red]{report.bad_rows}[/red]" if report.bad_rows else "0")
    table.add_row("warnings", str(len(report.warnings)))
    how = "opened" if report.opened else "existence only"
    table.add_row("media files checked", f"{report.probed} ({how})")
    table.add_row("modalities", _counts(report.modalities))
    table.add_row("splits", Text(_counts(report.splits)))
    table.add_row("sources", Text(_counts(report.sources)))
    if report.opened:
        table.add_row("media duration", f"{report.duration / 3600:.2f} h ({report.duration:.1f} s)")
    by_field = Counter(f"{p.field.split('[')[0]} ({p.severity})" for p in report.problems)
    if by_field:
        table.add_row("problems by field", _counts(by_field))
    console.print(table)


def _counts(counter: Counter[Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in counter.most_common()) or "-"


def check_main(manifest: str, probe: bool = True, workers: int = 4, max_print: int = 200,
               allow_roots: Sequence[str] | None = ()) -> int:
    """Entry point of ``affectllm data check MANIFEST``.

    Args:
        manifest: the JSONL manifest.
        probe: open every media file (``--no-probe`` checks existence only).
        workers: threads probing media files.
        max_print: print at most this many problems (all are counted in the summary).
        allow_roots: folders besides the manifest's own (and its roots file's) that media may lie in
            (``--allow-root``); None reads media anywhere.

    Returns:
        0 when every row is usable, 1 when any row has an error or the manifest has no row, 2 when the manifest
        cannot be read.
    """
    from rich.console import Console
    from rich.text import Text

    roots = None if allow_roots is None else media_roots(manifest, allow_roots)
    errors = Console(stderr=True, soft_wrap=True)
    try:
        report = check_manifest(manifest, probe=probe, workers=workers, roots=roots)
    except OSError as err:
        errors.print(Text(f"cannot read manifest {manifest}: {err.strerror or err}", style="red"))
        return 2
    _print_report(report, manifest, max_print)
    if not report.rows:
        errors.print(Text(f"warning: {manifest} has no row (empty, or blank lines only)", style="yellow"))
        return 1
    return 1 if report.bad_rows else 0
