"""Source-dataset loaders: each turns a dataset's official release folder into manifest clips.

Importing this package registers every loader in :data:`affectllm.registry.DATASETS` (names below); nothing is
downloaded: point a loader at the folder you obtained from the dataset's owners. Each loader returns a
:class:`LoadResult` (clips with absolute paths, plus problems naming the label file's line) and has a data card in
``data_cards/<card>.md``. Labels are the dataset's own words, lower-cased; the cards map them to our taxonomy.

>>> from affectllm.registry import DATASETS
>>> import affectllm.data.sources
>>> "ravdess" in DATASETS and "mer2025" in DATASETS
True
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Any, cast

from affectllm.data.manifest import write_manifest
from affectllm.data.sources import acted, au, conversation, mer, wild  # noqa: F401  (registration)
from affectllm.data.sources._base import LayoutError, LoadResult
from affectllm.registry import DATASETS

__all__ = ["LayoutError", "LoadResult", "load_dataset", "parse_options", "prep_dataset_main"]


def load_dataset(name: str, root: str | Path, **options: Any) -> LoadResult:
    """Run the loader registered as ``name`` on ``root``.

    Raises:
        KeyError: unknown dataset (the message lists the known ones).
        LayoutError: the folder does not match the official layout (the message names the expected file).
    """
    return DATASETS.get(name)(root, **options)


def _tuple_typed(annotation: Any) -> bool:
    return "tuple" in str(annotation)


def parse_options(name: str, options: list[str]) -> dict[str, Any]:
    """Loader options from ``key=value`` words, read by OmegaConf's dotlist grammar and checked against the loader.

    Values are YAML scalars (``fold=2`` -> 2, ``keep_unlabelled=true`` -> True) or lists (``test_actors=[21,22]``);
    for a tuple-typed option a comma list (``test_actors=21,22``) or a single value is accepted as well.

    Raises:
        KeyError: unknown dataset.
        ValueError: a word is not ``key=value``, or the loader has no such option (the message lists its options).
    """
    from omegaconf import OmegaConf

    loader = DATASETS.get(name)
    params = dict(list(inspect.signature(loader).parameters.items())[1:])  # the first one is root
    for word in options:
        if "=" not in word or word.startswith("="):
            raise ValueError(f"option {word!r} is not key=value (e.g. fold=2)")
    opts = cast(dict[str, Any], OmegaConf.to_container(OmegaConf.from_dotlist(list(options))))
    for key, value in opts.items():
        if key not in params or isinstance(value, dict):
            known = ", ".join(params) or "none"
            raise ValueError(f"{name}: no option {key!r} (options: {known}; see data_cards/{loader.card}.md)")
        if _tuple_typed(params[key].annotation) and value is not None:
            items = value if isinstance(value, list) else str(value).split(",")
            opts[key] = tuple(int(v) if str(v).strip().isdigit() else str(v).strip() for v in items if str(v).strip())
    return opts


def prep_dataset_main(name: str, root: str, out: str, options: list[str] | None = None, **kwargs: Any) -> int:
    """Entry point of ``affectllm data import NAME ROOT --out MANIFEST [key=value ...]``.

    Args:
        name: a registered dataset name.
        root: the release folder.
        out: the manifest to write (media paths are written relative to its folder).
        options: ``key=value`` loader options (``fold=2``, ``test_actors=21,22,23,24``), see :func:`parse_options`.
        **kwargs: loader options given directly (take precedence over ``options``).

    Returns:
        0 on success, 1 when the folder does not match the layout or nothing was found, 2 for an unknown name or
        a bad option.
    """
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    try:
        opts = parse_options(name, options or [])
        opts.update(kwargs)
        started = time.perf_counter()
        result = load_dataset(name, root, **opts)
    except (KeyError, ValueError, TypeError) as err:
        console.print(f"[red]{err.args[0] if isinstance(err, KeyError) and err.args else err}[/red]")
        return 2
    except LayoutError as err:
        console.print(f"[red]{err}[/red]")
        return 1
    for problem in result.problems[:50]:
        console.print(f"[yellow]{problem}[/yellow]")
    if len(result.problems) > 50:
        console.print(f"... and {len(result.problems) - 50} more")
    if not result.clips:
        console.print(f"[red]{name}: no clips found under {root}[/red]")
        return 1
    written = write_manifest(result.clips, out, record_roots=True)  # its media lie in the release folder
    took = time.perf_counter() - started
    card = getattr(DATASETS.get(name), "card", name)
    console.print(
        f"{name}: wrote {written} rows to {out} in {took:.1f} s ({len(result.problems)} skipped or "
        f"doubtful label rows); run `affectllm data check {out}` next. Card: data_cards/{card}.md"
    )
    return 0
