"""Requests that arrive together are generated together: one ``generate`` call per batch, streamed per request.

A :class:`Batcher` owns one generation thread. :meth:`Batcher.submit` queues a :class:`Job` (a decoded clip, its
question and decoding settings); the thread takes the oldest job and every queued job that can share its
``generate`` call (same decoding settings: :class:`~affectllm.serve.engine.GenerationOptions` are per call), up to
``max_batch_size``, waiting at most ``max_wait_s`` for more, and only while requests announced by
:meth:`Batcher.expect` (admitted, still decoding) may still join. Prompts differ per job
(each clip its own question, through :func:`affectllm.inputs.collate.build_prompt_inputs`); a conversation with
earlier turns runs alone (:meth:`Engine.chat_inputs` builds one prompt). Text goes back to each job's asyncio queue
as it is generated (:class:`BatchStreamer`, a transformers streamer that follows every row of the batch), then the
final completions, cut at the first ``stop`` string as OpenAI does, with token counts and finish reasons.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import astuple, dataclass, field
from typing import Any

import torch
from transformers.generation.streamers import BaseStreamer

from ..inputs.collate import build_prompt_inputs
from ..types import Clip, DecodedClip
from .engine import Engine, GenerationOptions, _Decoded

log = logging.getLogger(__name__)


@dataclass
class Choice:
    """One finished completion: ``text`` (cut at a stop string), ``finish_reason`` and ``tokens`` generated."""

    text: str
    finish_reason: str
    tokens: int


@dataclass
class Job:
    """One request waiting for generation.

    Attributes:
        clip: the clip (its id unique among queued jobs).
        decoded: its decoded media.
        question: the question asked.
        gen: decoding settings (jobs with equal settings share a batch).
        history: earlier ``{"role", "content"}`` turns (such a job runs alone).
        stream: send text deltas as they are generated.
        loop: the event loop of the request; ``events`` lives on it.
        events: ``("delta", choice, text)``, then ``("done", prompt_tokens, [Choice])`` or ``("error", message)``.
    """

    clip: Clip
    decoded: DecodedClip
    question: str
    gen: GenerationOptions
    history: list[dict] | None = None
    stream: bool = False
    loop: asyncio.AbstractEventLoop | None = None
    events: asyncio.Queue = field(default_factory=asyncio.Queue)

    def key(self) -> tuple:
        """Jobs with equal keys can share one ``generate`` call."""
        return (id(self),) if self.history else astuple(self.gen)

    def send(self, *event: Any) -> None:
        """Hand an event to the request's loop (called from the generation thread)."""
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)


def cut_at_stop(text: str, stop: Sequence[str] | None) -> tuple[str, bool]:
    """``text`` up to the first stop string (excluded, as OpenAI does) and whether one was found.

    >>> cut_at_stop("a</answer>b", ["</answer>"])
    ('a', True)
    >>> cut_at_stop("abc", None)
    ('abc', False)
    """
    cuts = [i for i in (text.find(s) for s in stop or ()) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


class BatchStreamer(BaseStreamer):
    """Follows every row of a batched ``generate`` and sends each streaming job its new text.

    ``put`` receives the prompt ids ``[rows, seq]`` once, then each step's new tokens ``[rows]``. Text is sent
    when it decodes to whole characters, and held back by the longest stop string's length less one, so a stop
    string never reaches the client.

    Args:
        tokenizer: the processor's tokenizer.
        rows: per output row, ``(job, choice index)``; rows of non-streaming jobs are ``None``.
        end_ids: token ids that end a row (eos and pad).
    """

    def __init__(self, tokenizer: Any, rows: list[tuple[Job, int] | None], end_ids: set[int]) -> None:
        self.tokenizer, self.rows, self.end_ids = tokenizer, rows, end_ids
        self.tokens: list[list[int]] = [[] for _ in rows]
        self.sent = [""] * len(rows)
        self.done = [row is None for row in rows]
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        for r, token in enumerate(value.reshape(len(self.rows), -1)[:, 0].tolist()):
            if self.done[r]:
                continue
            if token in self.end_ids:
                self.done[r] = True
                continue
            self.tokens[r].append(token)
            self._emit(r)

    def _emit(self, r: int) -> None:
        job, choice = self.rows[r]
        text = self.tokenizer.decode(self.tokens[r], skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return  # a multi-byte character is not complete yet
        text, stopped = cut_at_stop(text, job.gen.stop)
        hold = 0 if stopped else max((len(s) for s in job.gen.stop or ()), default=1) - 1
        ready = text[: len(text) - hold] if hold else text
        if len(ready) > len(self.sent[r]) and ready.startswith(self.sent[r]):
            job.send("delta", choice, ready[len(self.sent[r]):])
            self.sent[r] = ready
        self.done[r] = stopped

    def end(self) -> None:
        """Nothing to flush: the final text of every row is sent from ``generate``'s output."""


class Batcher:
    """The generation thread and its queue (see the module docs).

    Args:
        engine: the loaded engine.
        max_batch_size: most jobs per ``generate`` call (1: one request after another).
        max_wait_s: longest wait for more jobs once one is queued.
    """

    def __init__(self, engine: Engine, max_batch_size: int = 8, max_wait_s: float = 0.01) -> None:
        self.engine, self.max_batch_size, self.max_wait_s = engine, max_batch_size, max_wait_s
        self.batch_sizes: list[int] = []
        self.last_batch_s = 0.0
        self._pending: list[Job] = []
        self._incoming = 0
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="affectllm-generate", daemon=True)
        self._thread.start()

    def expect(self, count: int = 1) -> None:
        """Announce ``count`` requests that are being decoded and will be submitted (-1: one will not be). A batch
        waits for more jobs only while some are announced, so a request alone is never held back."""
        with self._cond:
            self._incoming += count
            self._cond.notify_all()

    def submit(self, job: Job) -> None:
        """Queue ``job`` (its events arrive on ``job.events``), one announced by :meth:`expect`."""
        with self._cond:
            self._incoming -= 1
            self._pending.append(job)
            self._cond.notify_all()

    def pending(self) -> int:
        """Jobs waiting for a batch."""
        with self._cond:
            return len(self._pending)

    def close(self) -> None:
        """Stop the thread after the running batch."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(30)

    def _take(self) -> list[Job]:
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if self._closed:
                return []
            key = self._pending[0].key()
            deadline = time.monotonic() + self.max_wait_s
            while True:
                batch = [j for j in self._pending if j.key() == key][: self.max_batch_size]
                left = deadline - time.monotonic()
                if len(batch) >= self.max_batch_size or left <= 0 or self._incoming <= 0:
                    break
                self._cond.wait(left)
            self._pending = [j for j in self._pending if all(j is not b for b in batch)]
            return batch

    def _loop(self) -> None:
        while jobs := self._take():
            start = time.monotonic()
            try:
                prompt_tokens, choices = self.run(jobs)
            except Exception:  # noqa: BLE001 - one failed batch must not stop the server; logged with its trace
                log.exception("generation failed for a batch of %d", len(jobs))
                for job in jobs:
                    job.send("error", "generation failed (see the server log)")
                continue
            finally:
                self.last_batch_s = time.monotonic() - start
            self.batch_sizes.append(len(jobs))
            for job, tokens, job_choices in zip(jobs, prompt_tokens, choices):
                job.send("done", tokens, job_choices)

    def _inputs(self, jobs: list[Job]) -> Any:
        engine = self.engine
        if jobs[0].history:
            job = jobs[0]
            return engine.chat_inputs(job.clip, job.decoded, job.question, job.history)
        built = build_prompt_inputs(engine.processor, _Decoded([j.decoded for j in jobs]), [j.clip for j in jobs],
                                    [j.question for j in jobs], engine.modalities)
        return built.inputs

    @torch.inference_mode()
    def run(self, jobs: list[Job]) -> tuple[list[int], list[list[Choice]]]:
        """One ``generate`` call for ``jobs`` (equal keys): prompt tokens and choices per job."""
        engine, gen = self.engine, jobs[0].gen
        tokenizer = engine.processor.tokenizer
        inputs = self._inputs(jobs).to(engine.model.device)
        config = engine.model.generation_config
        eos = config.eos_token_id
        end_ids = {*(eos if isinstance(eos, list) else [eos]), config.pad_token_id} - {None}
        rows = [(job, c) if job.stream else None for job in jobs for c in range(gen.n)]
        streamer = BatchStreamer(tokenizer, rows, end_ids) if any(rows) else None
        if gen.seed is not None:
            torch.manual_seed(gen.seed)
        ids = engine.model.generate(**inputs, streamer=streamer, suppress_tokens=engine._suppressed(),
                                    **gen.generate_kwargs(tokenizer))
        new = ids[:, inputs["input_ids"].shape[1]:].tolist()
        choices = [[self._choice(tokenizer, new[j * gen.n + c], end_ids, gen) for c in range(gen.n)]
                   for j in range(len(jobs))]
        if streamer is not None:
            for r, row in enumerate(rows):
                final = choices[r // gen.n][r % gen.n].text
                if row is not None and final.startswith(streamer.sent[r]) and len(final) > len(streamer.sent[r]):
                    row[0].send("delta", row[1], final[len(streamer.sent[r]):])
        return inputs["attention_mask"].sum(1).tolist(), choices

    @staticmethod
    def _choice(tokenizer: Any, tokens: list[int], end_ids: set[int], gen: GenerationOptions) -> Choice:
        ended = next((i for i, t in enumerate(tokens) if t in end_ids), None)
        kept = tokens if ended is None else tokens[:ended]
        text, stopped = cut_at_stop(tokenizer.decode(kept, skip_special_tokens=True), gen.stop)
        finished = stopped or ended is not None or len(tokens) < gen.max_new_tokens
        return Choice(text=text, finish_reason="stop" if finished else "length",
                      tokens=len(kept) + (ended is not None))
