"""``affectllm data check MANIFEST``: validate every row and probe every media file, then summarise.

Each problem is printed with the manifest's line number and the field at fault; the exit status is 1 when any row
has an error (warnings alone exit 0) and 2 when the manifest itself cannot be read.

The probe opens each video/audio file with :func:`affectllm.media.decode.probe` when that module is importable,
else with PyAV (``av``) directly, reads its streams and duration, and checks that a
``video`` has a video stream and an ``audio`` an audio stream. It decodes nothing, so it is fast (a few ms a file);
files shared by several rows are probed once, in a small thread pool (PyAV releases the GIL while it demuxes).

A ``video`` may also be a still image or a folder of frames (FEA-20K, FERV39K, BP4D): the decoder reads them with
Pillow (:mod:`affectllm.media.stills`), so they are not errors; the report adds one note counting them, with the
ffmpeg line that turns a folder into a video (faster to decode). A row's ``start``/``end`` window is checked against
the probed duration: a window that starts after the file ends is an error, one that ends past it a warning (the
decoder clamps it), and the media duration sums windows rather than whole files.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from affectllm.data.manifest import MEDIA_FIELDS, Problem, iter_manifest
from affectllm.types import Clip


@dataclass
class MediaInfo:
    """What a light probe learnt about a media file (``error`` is None when the file is usable)."""

    path: str
    error: str | None = None
    hint: str = ""
    duration: float | None = None
    streams: list[str] = field(default_factory=list)
    width: int | None = None
    height: int | None = None
    form: str = "file"


def _file_error(path: Path) -> tuple[str, str] | None:
    """A missing, empty or unreadable file: (message, hint); None when the bytes can be read (or it is a folder)."""
    if not path.exists():
        return f"file not found: {path}", "fix the path (it is relative to the manifest's folder) or add the file"
    if path.is_dir():
        return None
    if path.stat().st_size == 0:
        return f"empty file: {path}", "re-copy or re-extract the file"
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as err:
        return f"not readable: {err.strerror or err}", "check the file's permissions"
    return None


def probe_file(path: str, kind: str, open_media: bool = True) -> MediaInfo:
    """Probe one media file without decoding it.

    Args:
        path: the file.
        kind: ``"video"`` or ``"audio"``: the stream the file must carry.
        open_media: open the container with PyAV; when False only existence and readability are checked.

    Returns:
        A :class:`MediaInfo`; its ``error`` says what is wrong, if anything.
    """
    info = MediaInfo(path)
    bad = _file_error(Path(path))
    if bad is not None:
        info.error, info.hint = bad
        return info
    if Path(path).is_dir():
        info.form = "frames"
    if not open_media:
        return info
    media_probe = _house_probe()
    if media_probe is not None:
        _fill_from_house_probe(info, *media_probe)
    elif info.form == "frames":
        info.error, info.hint = "is a folder and affectllm.media is not importable", "install PyAV and Pillow"
    else:
        _fill_from_pyav(info)
    if info.error is None and kind not in info.streams:
        found = ", ".join(info.streams) or "none"
        info.error = f"has no {kind} stream (streams: {found})"
        info.hint = f"move it to the field of the stream it has, or give a file with {kind}"
    return info


def _house_probe() -> tuple[Any, type[Exception]] | None:
    """``affectllm.media.decode.probe`` and its error type when that module is importable, else None."""
    try:
        from affectllm.media import decode
    except ImportError:
        return None
    probe = getattr(decode, "probe", None)
    return (probe, getattr(decode, "MediaError", OSError)) if callable(probe) else None


def _fill_from_house_probe(info: MediaInfo, probe: Any, error: type[Exception]) -> None:
    try:
        found = probe(info.path)
    except (error, OSError) as err:
        info.error, info.hint = f"cannot be opened as media: {err}", "re-encode (ffmpeg -i IN OUT.mp4) or replace it"
        return
    info.streams = [k for k, has in (("video", found.has_video), ("audio", found.has_audio)) if has]
    info.duration, info.width, info.height = found.duration_s, found.width, found.height
    from affectllm.media.stills import is_image  # importable whenever the house probe is

    if is_image(info.path):
        info.form = "image"


def _fill_from_pyav(info: MediaInfo) -> None:
    import av  # lazy: `data check --no-probe` and manifest users never pay for PyAV

    path = info.path
    try:
        with av.open(path, metadata_errors="ignore") as container:
            info.streams = [s.type for s in container.streams]
            if container.duration is not None:
                info.duration = container.duration / 1_000_000  # av.time_base: microseconds
            video = container.streams.video[0] if container.streams.video else None
            if video is not None:
                info.width, info.height = video.codec_context.width, video.codec_context.height
    except (av.FFmpegError, OSError, ValueError) as err:
        info.error, info.hint = f"cannot be opened as media: {err}", "re-encode (ffmpeg -i IN OUT.mp4) or replace it"


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


def _window(clip: Clip) -> tuple[float, float | None] | None:
    """The row's validated ``start``/``end`` (the manifest reader already rejected bad values)."""
    start, end = clip.extra.get("start"), clip.extra.get("end")
    if start is None and end is None:
        return None
    return float(start or 0.0), None if end is None else float(end)


def _media_problems(line: int, clip: Clip, infos: dict[tuple[str, str], MediaInfo], path: str) -> list[Problem]:
    out = []
    window = _window(clip)
    for kind in MEDIA_FIELDS:
        media = getattr(clip, kind)
        if media is None:
            continue
        info = infos[(media, kind)]
        if info.error is not None:
            out.append(Problem(line, kind, info.error, info.hint, id=clip.id, path=path))
        elif window is not None and info.duration is not None:
            start, end = window
            if start >= info.duration:
                msg = f"the window starts at {start:g} s, at or after the end of the file ({info.duration:.3f} s)"
                out.append(
                    Problem(line, "start", msg, "start/end are seconds into the row's media", id=clip.id, path=path)
                )
            elif end is not None and end > info.duration + 0.05:
                msg = f"the window ends at {end:g} s, past the end of the {kind} file ({info.duration:.3f} s)"
                out.append(Problem(line, "end", msg, "decoding clamps it; check the times", "warning", clip.id, path))
    return out


def _clip_seconds(clip: Clip, media: list[MediaInfo]) -> float:
    """Seconds of media a row stands for: its window inside the first file with a duration, else that file."""
    duration = next((i.duration for i in media if i.duration), 0.0)
    window = _window(clip)
    if window is None or not duration:
        return duration
    return max(0.0, min(duration, window[1] if window[1] is not None else duration) - window[0])


def _stills_note(infos: dict[tuple[str, str], MediaInfo]) -> str | None:
    forms = Counter(i.form for i in infos.values() if i.error is None)
    if not forms["frames"] and not forms["image"]:
        return None
    return (
        f"{forms['frames']} video path(s) are frame folders and {forms['image']} still images: decoded with Pillow "
        "(a folder at the row's fps, 25 by default); a folder decodes faster as a video: "
        "ffmpeg -framerate 25 -i DIR/%05d.jpg -c:v libx264 -pix_fmt yuv420p OUT.mp4 (match the names' pattern)"
    )


def check_manifest(manifest: str | os.PathLike[str], probe: bool = True, workers: int = 4) -> CheckReport:
    """Validate every row of a manifest and check every media file it names.

    Args:
        manifest: the JSONL manifest.
        probe: open media with PyAV (streams, duration); when False only existence and readability are checked.
        workers: threads probing files.

    Returns:
        A :class:`CheckReport` (problems in line order).

    Raises:
        OSError: the manifest cannot be opened.
    """
    report = CheckReport()
    rows: list[tuple[int, Clip | None, list[Problem]]] = list(iter_manifest(manifest))
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
            report.duration += _clip_seconds(clip, media)
        if clip is None or any(p.is_error for p in problems):
            report.bad_rows += 1
        report.problems.extend(problems)
    note = _stills_note(infos)
    report.notes += [note] if note else []
    return report


def _print_report(report: CheckReport, manifest: str, max_print: int) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, soft_wrap=True)
    for problem in report.problems[:max_print]:
        style = "red" if problem.is_error else "yellow"
        console.print(f"[{style}]{problem}[/{style}]", markup=True)
    if len(report.problems) > max_print:
        console.print(f"... and {len(report.problems) - max_print} more problems (see the counts below)")
    for note in report.notes:
        console.print(f"note: {note}", markup=False)
    table = Table(title=f"data check: {manifest}", show_header=False)
    table.add_row("rows", str(report.rows))
    table.add_row("rows ok", str(report.rows - report.bad_rows))
    table.add_row("rows with errors", f"[red]{report.bad_rows}[/red]" if report.bad_rows else "0")
    table.add_row("warnings", str(len(report.warnings)))
    how = "opened with PyAV" if report.opened else "existence only"
    table.add_row("media files checked", f"{report.probed} ({how})")
    table.add_row("modalities", _counts(report.modalities))
    table.add_row("splits", _counts(report.splits))
    table.add_row("sources", _counts(report.sources))
    if report.opened:
        table.add_row("media duration", f"{report.duration / 3600:.2f} h ({report.duration:.1f} s)")
    by_field = Counter(f"{p.field.split('[')[0]} ({p.severity})" for p in report.problems)
    if by_field:
        table.add_row("problems by field", _counts(by_field))
    console.print(table)


def _counts(counter: Counter[Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in counter.most_common()) or "-"


def check_main(manifest: str, probe: bool = True, workers: int = 4, max_print: int = 200) -> int:
    """Entry point of ``affectllm data check MANIFEST``.

    Args:
        manifest: the JSONL manifest.
        probe: open every media file with PyAV (``--no-probe`` checks existence only).
        workers: threads probing media files.
        max_print: print at most this many problems (all are counted in the summary).

    Returns:
        0 when every row is usable, 1 when any row has an error, 2 when the manifest cannot be read.
    """
    try:
        report = check_manifest(manifest, probe=probe, workers=workers)
    except OSError as err:
        from rich.console import Console

        Console(stderr=True).print(f"[red]cannot read manifest {manifest}: {err.strerror or err}[/red]")
        return 2
    _print_report(report, manifest, max_print)
    return 1 if report.bad_rows else 0
