"""`affectllm <command>`: one console script; each command imports its module lazily and calls one main()."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any


def _model_init(a: argparse.Namespace) -> int:
    from .model.build import init_main

    return init_main(a.preset, a.out, a.overrides, seed=a.seed)


def _demo(a: argparse.Namespace) -> int:
    from .demo import demo_main

    return demo_main(a.out, n=a.n, seed=a.seed)


def _add(sub: Any, name: str, help_text: str, fn: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(func=fn)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (cheap: nothing heavy is imported until a command runs)."""
    parser = argparse.ArgumentParser(prog="affectllm", description="Train and serve multimodal emotion LLMs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _add(sub, "demo", "Run the built-in end-to-end demo on EmoWorld (tiny model, CPU).", _demo)
    p.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    p.add_argument("--n", type=int, default=24, help="number of synthetic clips (default: 24)")
    p.add_argument("--seed", type=int, default=0)

    model = _add(sub, "model", "Model utilities.", lambda a: 2)
    msub = model.add_subparsers(dest="model_command", required=True, metavar="SUBCOMMAND")
    p = _add(msub, "init", "Build a preset model and save a loadable model + processor directory.", _model_init)
    p.add_argument("--preset", default="tiny", help="tiny | smollm2-135m (default: tiny)")
    p.add_argument("--out", required=True, help="directory to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("overrides", nargs="*", help="model key=value overrides, e.g. llm=Qwen/Qwen2.5-0.5B-Instruct")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as err:
        from .config import RecipeError

        if isinstance(err, RecipeError) or not _debug():
            print(f"affectllm: error: {err}", file=sys.stderr)
            return 2
        raise


def _debug() -> bool:
    import os

    return os.environ.get("AFFECTLLM_DEBUG", "") not in ("", "0")


if __name__ == "__main__":
    sys.exit(main())
