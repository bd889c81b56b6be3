"""`affectllm <command>`: one console script; each command imports its module lazily and calls one main()."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable
from typing import Any


def _model_init(a: argparse.Namespace) -> int:
    from .model.build import init_main

    return init_main(a.preset, a.out, a.overrides, seed=a.seed)


def _demo(a: argparse.Namespace) -> int:
    from .demo import demo_main

    return demo_main(a.out, n=a.n, seed=a.seed, quick=a.quick, fresh=a.fresh, threads=a.threads)


def _data_check(a: argparse.Namespace) -> int:
    from .data.check import check_main

    return check_main(a.manifest, probe=a.probe, workers=a.workers, max_print=a.max_print, allow_roots=a.allow_root)


def _data_import(a: argparse.Namespace) -> int:
    from .data.sources import prep_dataset_main

    return prep_dataset_main(a.name, a.root, a.out, options=a.options)


def _metric_ew(a: argparse.Namespace) -> int:
    from .evaluation.label_file import ew_main

    return ew_main(a.pred, a.gold, a.wheel_dir, a.table, a.level)


def _data_synth(a: argparse.Namespace) -> int:
    from .emoworld.generate import synth_main

    return synth_main(a.out, a.n, a.seed, a.preset, a.overrides)


def _data_prep(a: argparse.Namespace) -> int:
    from .data.roots import media_roots
    from .inputs.prep import PrepConfig, prep_main

    config = PrepConfig(**{f.name: getattr(a, f.name) for f in dataclasses.fields(PrepConfig)})
    return prep_main(a.manifest, a.out, config, roots=media_roots(a.manifest, a.allow_root))


def _add_allow_root(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-root", action="append", default=[], metavar="DIR",
                   help="a folder outside the manifest's own that media may lie in (repeatable; also read from "
                   "MANIFEST.roots beside the manifest); paths leading elsewhere are refused")


def _add_prep_arguments(p: argparse.ArgumentParser) -> None:
    """``data prep``'s options: one per :class:`~affectllm.inputs.prep.PrepConfig` field (``dest`` = the field),
    with its default and help, so the defaults are written once."""
    from .inputs.prep import PrepConfig

    d = PrepConfig()
    h = {f.name: f.metadata["help"] for f in dataclasses.fields(PrepConfig)}
    p.add_argument("manifest", help="JSONL manifest (paths relative to it)")
    p.add_argument("--out", required=True, help="output folder: prep.jsonl, arrays/, features/")
    p.add_argument("--workers", type=int, default=d.workers, help=h["workers"])
    p.add_argument("--num-frames", type=int, default=d.num_frames, help=h["num_frames"])
    p.add_argument("--strategy", choices=["uniform", "fps", "segment"], default=d.strategy, help=h["strategy"])
    p.add_argument("--fps", type=float, default=d.fps, help=h["fps"])
    p.add_argument("--max-frames", type=int, default=d.max_frames, help=h["max_frames"])
    p.add_argument("--backend", choices=["decord", "pyav"], default=d.backend, help=h["backend"])
    p.add_argument("--max-side", type=int, default=d.max_side, help=h["max_side"])
    p.add_argument("--max-duration", dest="max_duration_s", type=float, default=d.max_duration_s,
                   help=h["max_duration_s"])
    p.add_argument("--no-faces", dest="faces", action="store_false", help=f"do not {h['faces']}")
    p.add_argument("--face-size", type=int, default=d.face_size, help=h["face_size"])
    p.add_argument("--retry-errors", action="store_true", help=h["retry_errors"])
    p.add_argument("--no-progress", dest="progress", action="store_false", help=f"do not {h['progress']}")
    p.add_argument("--cache-features", action="store_true", help=h["cache_features"])
    p.add_argument("--model", default=d.model, help=h["model"])
    p.add_argument("--arrays-from", metavar="DIR", default=d.arrays_from, help=h["arrays_from"])
    _add_allow_root(p)


def _train(a: argparse.Namespace) -> int:
    from .train.run import train_main

    return train_main(a.recipe, a.overrides)


def _chat(a: argparse.Namespace) -> int:
    from .serve.chat import run_from_args

    return run_from_args(a)


def _label(a: argparse.Namespace) -> int:
    from .serve.label import run_from_args

    return run_from_args(a)


def _serve(a: argparse.Namespace) -> int:
    from .serve.server import ServerConfig, serve_main

    return serve_main(ServerConfig(**{k: v for k, v in vars(a).items() if k not in ("command", "func")}))


def _add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="a trained model directory (a stage's output_dir)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=os.environ.get("AFFECTLLM_API_KEY"),
                   help="require Authorization: Bearer KEY on every endpoint (default: $AFFECTLLM_API_KEY, which "
                   "keeps the key out of the process list)")
    p.add_argument("--media-root", default=None, help="the only folder file:// URLs may point into")
    p.add_argument("--max-upload-mb", type=float, default=64.0, help="largest request body, media included (64)")
    p.add_argument("--allow-remote-media", action="store_true", help="fetch http(s) media URLs (off by default)")
    p.add_argument("--remote-timeout-s", type=float, default=10.0, help="time limit of one remote download (10)")
    p.add_argument("--max-batch-size", type=int, default=8, help="most requests per generate call (8)")
    p.add_argument("--max-wait-ms", type=float, default=10.0, help="longest wait for a batch to fill (10 ms)")
    p.add_argument("--max-queue", type=int, default=64, help="requests in progress before 429 (64)")
    p.add_argument("--decode-workers", type=int, default=2, help="media decoding processes (2)")
    p.add_argument("--decode-timeout-s", type=float, default=60.0, help="time limit of one clip's decoding (60)")
    p.add_argument("--decode-memory-mb", type=int, default=4096, help="memory cap of a decoding process (4096)")
    p.add_argument("--decode-cache", type=int, default=16, help="decoded clips kept for repeat questions (16; 0: off)")
    p.add_argument("--max-tokens-limit", type=int, default=1024, help="largest max_tokens a request may ask (1024)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: the GPU when there is one)")
    p.add_argument("--num-frames", type=int, default=None, help="frames per clip (default: the recipe's)")
    p.add_argument("--served-model-name", default=None, help="the model id clients send (default: the folder name)")


class _IntermixedParser(argparse.ArgumentParser):
    """A sub-command parser whose positionals may come before and after its options."""

    _inner = False

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        if self._inner:  # parse_known_intermixed_args calls back into parse_known_args
            return super().parse_known_args(args, namespace)
        self._inner = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inner = False


def _eval(a: argparse.Namespace) -> int:
    from .serve.evaluate import compare_main, evaluate_main

    if a.compare:
        return compare_main(*a.compare, resamples=a.resamples)
    if not (a.model and a.tasks and a.out):
        print("affectllm eval: error: give --model DIR --tasks NAME|PATH ... --out OUT (or --compare OUT1 OUT2)",
              file=sys.stderr)
        return 2
    if a.resamples is not None and a.resamples < 1:
        print(f"affectllm eval: error: --resamples must be >= 1, got {a.resamples}", file=sys.stderr)
        return 2
    return evaluate_main(a.model, a.tasks, a.out, limit=a.limit, batch_size=a.batch_size, wheel_dir=a.wheel_dir,
                         device=a.device, dtype=a.dtype, resamples=a.resamples)


def _add(sub: Any, name: str, help_text: str, fn: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(func=fn)
    return parser


def _add_data_commands(sub: Any) -> None:
    """``affectllm data synth|prep|check|import``."""
    data = _add(sub, "data", "Data: synthesize EmoWorld, import datasets, check and prepare manifests.", lambda a: 2)
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    p = _add(dsub, "synth", "Synthesize EmoWorld: drawn-face mp4 + voice wav + manifest with splits and gold; prints "
             "oracle/baseline EW-F, HIT, AU-F1 on the test split.", _data_synth)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--n", type=int, default=200, help="number of clips (default: 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", choices=["easy", "default", "hard"], default="default")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="knob overrides, e.g. size=64 workers=2 (see docs/emoworld.md)")
    p = _add(dsub, "prep", "Decode, sample frames, crop faces, estimate AUs (and cache encoder features) per clip; "
             "resumable, parallel, writes DIR/prep.jsonl.", _data_prep)
    _add_prep_arguments(p)
    p = _add(dsub, "check", "Validate every manifest row and probe every media file; exit 1 if any row is bad.",
             _data_check)
    p.add_argument("manifest")
    p.add_argument("--no-probe", dest="probe", action="store_false",
                   help="check existence/readability only, don't open media")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--max-print", type=int, default=200, help="print at most this many problems")
    _add_allow_root(p)
    # Intermixed so that `data import NAME ROOT --out M key=value` (the order data_cards/README.md shows) parses:
    # plain argparse stops filling the trailing positional once an option has been seen.
    dsub._parser_class = _IntermixedParser
    p = _add(dsub, "import", "Turn a dataset's official release folder into a manifest (nothing is downloaded).",
             _data_import)
    dsub._parser_class = argparse.ArgumentParser
    p.add_argument("name", help="dataset name (see data_cards/README.md)")
    p.add_argument("root", help="the release folder you obtained")
    p.add_argument("--out", required=True, help="manifest to write")
    p.add_argument("options", nargs="*", help="loader options key=value, e.g. fold=2 test_actors=21,22,23,24")


def _add_model_commands(sub: Any) -> None:
    """``affectllm model init``."""
    model = _add(sub, "model", "Model utilities.", lambda a: 2)
    msub = model.add_subparsers(dest="model_command", required=True, metavar="SUBCOMMAND")
    p = _add(msub, "init", "Build a preset model and save a loadable model + processor directory.", _model_init)
    p.add_argument("--preset", default="tiny", help="tiny | smollm2-135m (default: tiny)")
    p.add_argument("--out", required=True, help="directory to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("overrides", nargs="*", help="model key=value overrides, e.g. llm=Qwen/Qwen2.5-0.5B-Instruct")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (cheap: nothing heavy is imported until a command runs)."""
    parser = argparse.ArgumentParser(prog="affectllm", description="Train and serve multimodal emotion LLMs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _add(sub, "demo", "Run the whole pipeline on EmoWorld with the tiny model on CPU: synthesize, prep, encoder "
             "warm-start, SFT, GRPO, calibration, every stage scored on the same test clips against the oracle and "
             "the baselines, label and chat; report.md and results.json. Reuses finished steps.", _demo)
    p.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    p.add_argument("--n", type=int, default=2400, help="number of synthetic clips (default: 2400)")
    p.add_argument("--quick", action="store_true", help="a few steps per stage (a smoke run, numbers meaningless)")
    p.add_argument("--fresh", action="store_true", help="delete --out first instead of reusing finished steps")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the CPUs this process may use)")
    p.add_argument("--seed", type=int, default=0)

    _add_data_commands(sub)

    p = _add(sub, "train", "Run the training stage a recipe names (sft, grpo or calibrate).", _train)
    p.add_argument("recipe", help="recipe YAML, e.g. recipes/tiny/sft.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="recipe overrides, e.g. data.manifest=M output_dir=O trainer.max_steps=3")

    p = _add(sub, "eval", "Score a trained model on evaluation tasks (eval/tasks/*.yaml): results.json with seeded "
             "bootstrap intervals, per-sample predictions, report.md with plots; --compare sets two runs side by "
             "side.", _eval)
    p.add_argument("--model", help="model directory (a training stage's output_dir)")
    p.add_argument("--tasks", nargs="+", metavar="NAME|PATH", help="shipped task names (eval/tasks/) or YAML files")
    p.add_argument("--out", help="output folder")
    p.add_argument("--limit", type=int, default=None, help="at most N clips per task (seeded draw)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per generate call (default: 8)")
    p.add_argument("--wheel-dir", default=None, help="MER emotion-wheel tables for every task (default: the task's)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: the GPU when there is one)")
    p.add_argument("--dtype", default=None, help="weights' dtype (default: the saved config's)")
    p.add_argument("--compare", nargs=2, metavar=("OUT1", "OUT2"), help="compare two eval output folders")
    p.add_argument("--resamples", type=int, default=None, help="bootstrap resamples of every task (and of the "
                   "paired bootstrap of --compare); default: the tasks' (1000)")

    metric = _add(sub, "metric", "Score predictions with the project's metrics.", lambda a: 2)
    msub = metric.add_subparsers(dest="metric_command", required=True, metavar="SUBCOMMAND")
    p = _add(msub, "ew", "Emotion-wheel F/precision/recall of a label file against a manifest (MER-UniBench EW).",
             _metric_ew)
    p.add_argument("--pred", required=True, help="label-output JSONL (id, labels)")
    p.add_argument("--gold", required=True, help="manifest JSONL (id, labels)")
    p.add_argument("--wheel-dir", default=None,
                   help="folder of the MER emotion-wheel tables; default: built-in taxonomy")
    p.add_argument("--table", choices=["mer2026", "mer2025"], default="mer2026",
                   help="word forms: format.csv or legacy_mer2025/format.csv")
    p.add_argument("--level", choices=["level1", "level2"], default="level1")

    from .serve.args import add_chat_arguments, add_label_arguments

    add_chat_arguments(_add(sub, "chat", "Ask a trained model about one clip (video, image or frame folder): one "
                            "answer with --question, else a chat; streamed; labels, confidence, AUs.", _chat))
    add_label_arguments(_add(sub, "label", "Label every clip of a manifest with a trained model: resumable shards and "
                             "a merged labels.jsonl; torchrun/accelerate ranks or Ray Data scale it out.", _label))
    _add_serve_arguments(_add(sub, "serve", "Serve a trained model: an OpenAI-compatible API (/v1/chat/completions "
                              "with video, image and audio parts, streamed or whole) and a web page at /; loopback, "
                              "media root and bearer key by default (docs/serving.md).", _serve))

    _add_model_commands(sub)
    return parser


def user_errors() -> tuple[type[BaseException], ...]:
    """The project's own error types, whose messages name the file, line or field and what to do: the CLI prints
    them as one line. Anything else (a KeyError, a RuntimeError...) is a bug and raises with its traceback."""
    from .config import RecipeError
    from .data.manifest import ManifestError
    from .data.sources._base import LayoutError
    from .errors import UserError
    from .evaluation.label_file import InputError
    from .evaluation.tasks import TaskError
    from .inputs.features import FeatureCacheError
    from .media.common import MediaError
    from .media.faces import FaceBackendError
    from .serve.shards import JobMismatchError

    return (RecipeError, ManifestError, LayoutError, InputError, TaskError, FeatureCacheError, MediaError,
            FaceBackendError, JobMismatchError, FileNotFoundError, UserError)


def _exit_launched_rank(code: int) -> None:
    """End a rank of a multi-process launch (``WORLD_SIZE`` > 1) with ``os._exit`` once its work is flushed.

    The process group is gone by then (:func:`affectllm.train.run.train_main`); what is left is the interpreter's
    teardown of C++ libraries (gloo, DeepSpeed ops), where a rank once aborted ("terminate called without an active
    exception") after a complete run, and the launcher then reported the whole job failed.
    """
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        if args.func is _train and argv is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            _exit_launched_rank(code)
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except user_errors() as err:  # evaluated only when something was raised: --help stays cheap
        print(f"affectllm: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
