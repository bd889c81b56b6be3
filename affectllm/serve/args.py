"""Command-line arguments of ``affectllm chat`` and ``affectllm label`` (cheap to import: no torch until a run)."""

from __future__ import annotations

import argparse
from typing import Any

FORMATS = ("manifest", "openai-batch")
ENGINES = ("torch", "ray")


def add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    """``--max-new-tokens``, ``--sample``, ``--temperature``, ``--top-p``, ``--seed`` (chat and label)."""
    parser.add_argument("--max-new-tokens", type=int, default=128, help="longest answer in tokens (default 128)")
    parser.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (with --sample)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus mass (with --sample)")
    parser.add_argument("--seed", type=int, default=None, help="seed for --sample (reproducible answers)")


def generation_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~affectllm.serve.engine.GenerationOptions` of parsed :func:`add_generation_arguments`."""
    from .engine import GenerationOptions

    return GenerationOptions(max_new_tokens=args.max_new_tokens, do_sample=args.sample, temperature=args.temperature,
                             top_p=args.top_p, seed=args.seed)


def add_chat_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``affectllm chat``."""
    parser.add_argument("--model", required=True, help="a trained model directory (a stage's output_dir)")
    parser.add_argument("--video", default=None, help="the clip: a video, a still image or a folder of frames")
    parser.add_argument("--audio", default=None, help="a separate audio file (default: the video's own track)")
    parser.add_argument("--transcript", default=None, help="what the person says")
    parser.add_argument("--question", default=None,
                        help="answer this once and exit (default: an interactive conversation)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: the GPU when there is one)")
    add_generation_arguments(parser)


def add_label_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``affectllm label``."""
    parser.add_argument("manifest", help="JSONL manifest (or an OpenAI Batch request file, --input-format)")
    parser.add_argument("--model", required=True, help="a trained model directory (a stage's output_dir)")
    parser.add_argument("--out", required=True, help="job folder: job.json, shards/, labels.jsonl")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per generate call (default 8)")
    parser.add_argument("--num-workers", type=int, default=2,
                        help="decoding processes beside the generating one (0: decode in the main process)")
    parser.add_argument("--retry-errors", action="store_true", help="redo only the clips whose rows have an error")
    parser.add_argument("--fresh", action="store_true", help="delete the folder's earlier rows and start over")
    parser.add_argument("--engine", choices=ENGINES, default="torch",
                        help="torch (this process, or one per torchrun rank) or ray (Ray Data actors)")
    parser.add_argument("--ray-address", default=None, help="with --engine ray: a running cluster (default: local)")
    parser.add_argument("--ray-workers", type=int, default=2, help="with --engine ray: engine actors (default 2)")
    parser.add_argument("--input-format", choices=FORMATS, default="manifest")
    parser.add_argument("--output-format", choices=FORMATS, default="manifest",
                        help="openai-batch also writes OUT/batch_output.jsonl (vLLM run-batch's output shape)")
    parser.add_argument("--question", default=None, help="the question (default: the model's training task's)")
    parser.add_argument("--num-frames", type=int, default=None, help="frames per clip (default: the recipe's)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--allow-root", action="append", default=[], metavar="DIR",
                        help="a folder media may lie in besides the manifest's own (repeatable; or list it in the "
                             "manifest's roots file)")
    add_generation_arguments(parser)
