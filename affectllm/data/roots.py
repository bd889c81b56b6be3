"""The folders a manifest's media may lie in (pure Python).

A manifest is data, often from someone else: by default ``data check`` and ``data prep`` read media only inside the
manifest's own folder, so a row cannot make them read ``../../etc/passwd`` or a symlink out of the folder. Paths are
compared after resolving ``..`` and symlinks (:func:`os.path.realpath`). Two ways widen the list:

* ``--allow-root DIR`` (repeatable) on the command line;
* the manifest-level setting: a file ``<manifest stem>.roots`` beside the manifest (``clips.jsonl`` ->
  ``clips.roots``), one folder a line (relative to the manifest's folder or absolute; blank lines and ``#`` comments
  skipped). :func:`affectllm.data.manifest.write_manifest` writes it for the clips it is given whose media lie
  elsewhere (``data import`` points a manifest into a dataset's release folder).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

PathLike = str | os.PathLike[str]


def roots_file(manifest: PathLike) -> Path:
    """The manifest-level roots file of ``manifest`` (``clips.jsonl`` -> ``clips.roots``)."""
    return Path(manifest).with_suffix(".roots")


def media_roots(manifest: PathLike, allow: Iterable[PathLike] = ()) -> list[str]:
    """The folders ``manifest``'s media may lie in: its own folder, ``allow``, and those its roots file lists.

    Returns:
        Resolved folder paths (symlinks followed), the manifest's folder first.
    """
    base = Path(manifest).resolve().parent
    listed: list[PathLike] = []
    sidecar = roots_file(manifest)
    if sidecar.is_file():
        lines = sidecar.read_text(encoding="utf-8", errors="replace").splitlines()
        listed = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    folders = [base, *allow, *listed]
    return list(dict.fromkeys(os.path.realpath(base / Path(f).expanduser()) for f in folders))


def outside(path: str, roots: Sequence[str]) -> str | None:
    """Where ``path`` really leads when that is outside every root (None when it is inside one)."""
    real = os.path.realpath(path)
    if any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in roots):
        return None
    return real


def write_roots(manifest: PathLike, paths: Iterable[str]) -> Path | None:
    """Write ``manifest``'s roots file listing the folders of ``paths`` that lie outside its folder.

    Returns:
        The roots file, or None when every path is inside the manifest's folder (an old roots file is kept).
    """
    base = os.path.realpath(Path(manifest).resolve().parent)
    away = sorted({os.path.dirname(os.path.realpath(p)) for p in paths if outside(p, [base]) is not None})
    if not away:
        return None
    from affectllm.jsonl import write_text

    common = os.path.commonpath(away)
    folders = [common] if common != os.sep else away
    target = roots_file(manifest)
    write_text(target, "# folders this manifest's media may lie in (see affectllm.data.roots)\n"
               + "".join(f"{f}\n" for f in folders))
    return target
