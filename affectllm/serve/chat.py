"""``affectllm chat --model DIR --video CLIP``: ask a trained model about one clip, streamed, rendered with rich.

With ``--question`` it answers once and exits (non-zero when the clip cannot be decoded); otherwise it keeps a
conversation about the clip: each line typed is a question, ``/clip PATH`` switches to another clip (and starts a
new conversation), ``/quit`` (or end of input) leaves. The clip may be a video, a still image or a folder of frames,
as in a manifest.
"""

from __future__ import annotations

import sys
from typing import Any

from ..media.decode import MediaError
from ..taxonomy.facs import au_name
from ..types import Clip
from .engine import Engine, GenerationOptions

PROMPT = "you> "


def make_clip(video: str | None, audio: str | None = None, transcript: str | None = None) -> Clip:
    """The clip the user named (a video, a still image or a frame folder; optional separate audio)."""
    if not (video or audio):
        raise ValueError("give --video CLIP (a video, an image or a folder of frames) or --audio WAV")
    return Clip(id="chat", video=video, audio=audio, transcript=transcript or None)


def render(console: Any, row: dict[str, Any]) -> None:
    """Show a label-output row: the explanation, labels with their confidence, the AUs with their FACS names."""
    from rich.panel import Panel
    from rich.table import Table

    if row["explanation"]:
        console.print(Panel(row["explanation"], title="reasoning", expand=False))
    table = Table(show_header=True, header_style="bold")
    table.add_column("labels")
    table.add_column("confidence", justify="right")
    table.add_column("AUs")
    conf = "-" if row["confidence"] is None else f"{row['confidence']:.2f}"
    if row["confidence"] is not None and row["confidence_raw"] != row["confidence"]:
        stated = "none" if row["confidence_raw"] is None else f"{row['confidence_raw']:.2f}"
        conf += f" (stated {stated})"
    aus = ", ".join(f"{a} {au_name(a) or ''}".strip() for a in row["aus"]) or "-"
    table.add_row(", ".join(row["labels"]) or "(none)", conf, aus)
    console.print(table)


def answer(engine: Engine, console: Any, clip: Clip, question: str | None, history: list[dict[str, str]],
           gen: GenerationOptions) -> str:
    """Stream one answer to the console, render it, and return its text.

    Raises:
        MediaError: the clip cannot be decoded.
    """
    pieces: list[str] = []
    for piece in engine.stream(clip, question, history, gen):
        pieces.append(piece)
        console.print(piece, end="", markup=False, highlight=False, soft_wrap=True)
    console.print()
    text = "".join(pieces)
    post = engine.posteriors([clip])
    render(console, engine.row(clip.id, [text], engine.fingerprint, post[0] if post else None))
    return text


def _fail(clip: Clip, err: MediaError) -> None:
    where = "" if str(clip.video or clip.audio) in str(err) else f" {clip.video or clip.audio}"
    print(f"affectllm chat: cannot read the clip{where}: {err}", file=sys.stderr)  # media errors name the file


def interactive(engine: Engine, console: Any, clip: Clip, gen: GenerationOptions) -> int:
    """The conversation loop (see the module docs); returns 0."""
    history: list[dict[str, str]] = []
    console.print(f"clip: {clip.video or clip.audio}  (type a question; /clip PATH switches clip; /quit leaves)")
    while True:
        try:
            line = input(PROMPT).strip()
        except EOFError:
            return 0
        if line in ("/quit", "/exit"):
            return 0
        if line.startswith("/clip"):
            path = line[len("/clip"):].strip()
            if not path:
                console.print("usage: /clip PATH")
                continue
            clip, history = make_clip(path), []
            console.print(f"clip: {path}")
            continue
        try:
            text = answer(engine, console, clip, line or None, history, gen)
        except MediaError as err:
            _fail(clip, err)
            continue
        history += [{"role": "user", "content": line or engine.question()}, {"role": "assistant", "content": text}]


def chat_main(model: str, video: str | None, audio: str | None = None, transcript: str | None = None,
              question: str | None = None, gen: GenerationOptions | None = None, device: str | None = None) -> int:
    """Run ``affectllm chat``; returns 0, or 1 when a one-shot question's clip cannot be decoded."""
    from rich.console import Console

    console = Console()
    clip = make_clip(video, audio, transcript)
    engine = Engine.load(model, device=device)
    gen = gen or GenerationOptions()
    if question is None:
        return interactive(engine, console, clip, gen)
    try:
        answer(engine, console, clip, question, [], gen)
    except MediaError as err:
        _fail(clip, err)
        return 1
    return 0


def run_from_args(args: Any) -> int:
    """Run :func:`chat_main` from parsed :func:`affectllm.serve.args.add_chat_arguments` arguments."""
    from .args import generation_from_args

    return chat_main(args.model, args.video, args.audio, args.transcript, args.question, generation_from_args(args),
                     args.device)
