"""Decode clips in worker processes with a time and a memory limit, so a hostile file cannot hang or kill the server.

Each worker is a spawned process (no model, no torch: it imports the media pipeline only) whose address space is
capped with ``RLIMIT_AS``; a call that runs past its time limit gets its worker killed and replaced, and a worker that
dies (a decoder crash, the memory cap) is replaced too. Either way the request gets an error, the server goes on.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing as mp
import os
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..types import Clip, DecodedClip

log = logging.getLogger(__name__)


class WorkerError(Exception):
    """A call failed in its worker: ``kind`` is ``"timeout"``, ``"died"``, ``"memory"`` or ``"error"``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class Timeline:
    """AU intensities over a clip's sampled frames (what the web page plots).

    Attributes:
        times: seconds of each sampled frame, ``[t]``.
        aus: AU code -> intensity in [0, 1] per frame (None where the frame has no face), each ``[t]``.
        names: AU code -> FACS name.
    """

    times: list[float]
    aus: dict[str, list[float | None]]
    names: dict[str, str]


def decode_clip(policy: Any, decode_cfg: Any, clip: Clip) -> tuple[DecodedClip, Timeline | None]:
    """Decode ``clip`` as the model's :class:`~affectllm.serve.media_policy.MediaPolicy` does (data prep's
    pipeline), keeping the AU estimates as a :class:`Timeline` (None without a face track)."""
    if not (clip.video or clip.audio):
        return DecodedClip(id=clip.id, transcript=clip.transcript), None
    import numpy as np

    from ..media.aus import AU_CODES, AU_NAMES
    from ..media.pipeline import analyze_clip

    result = analyze_clip(clip, decode_cfg, policy.analyzer())
    if result.aus is None or result.decoded.frame_times is None:
        return result.decoded, None
    values = np.where(result.aus.valid[:, None], result.aus.intensities, np.nan)  # [t, 11]
    aus = {code: [None if np.isnan(v) else round(float(v), 4) for v in values[:, i]] for i, code in
           enumerate(AU_CODES)}
    times = [round(float(t), 4) for t in result.decoded.frame_times]
    return result.decoded, Timeline(times=times, aus=aus, names={c: AU_NAMES[c] for c in AU_CODES})


def _serve(conn: Any, memory_mb: int) -> None:
    """A worker's loop: receive ``(fn, args)``, answer ``("ok", value)`` or ``("error", kind, message)``."""
    import resource

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if memory_mb > 0:
        limit = memory_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    while True:
        try:
            fn, args = conn.recv()
        except EOFError:
            return
        try:
            conn.send(("ok", fn(*args)))
        except MemoryError:
            conn.send(("error", "memory", f"decoding needed more than the {memory_mb} MB memory limit"))
        except Exception as err:  # noqa: BLE001 - any decoder failure becomes an error answer, never a dead worker
            conn.send(("error", "error", f"{type(err).__name__}: {err}"))


class _Worker:
    def __init__(self, ctx: Any, memory_mb: int) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, memory_mb), daemon=True, name="affectllm-decode")
        self.process.start()
        child.close()

    def kill(self) -> None:
        self.process.kill()
        self.process.join(5)
        self.conn.close()


class DecodeCache:
    """The last ``size`` decoded clips by media content and decode settings: a clip asked about again (a second
    question on the page) is not decoded again. Thread-safe; ``size`` 0 keeps nothing.

    >>> cache = DecodeCache(1); cache.put("a", 1); cache.put("b", 2); cache.get("a"), cache.get("b")
    (None, 2)
    """

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(paths: tuple[str | None, ...], *settings: Any) -> str:
        """sha256 of the files' bytes and the settings' ``repr`` (blocking: reads the files)."""
        h = hashlib.sha256(repr(settings).encode())
        for path in paths:
            h.update(b"\0" if path is None else b"\1")
            if path is not None:
                with open(path, "rb") as fh:
                    while block := fh.read(1 << 20):
                        h.update(block)
        return h.hexdigest()

    def get(self, key: str) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        return None

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


class WorkerPool:
    """``size`` decode processes; :meth:`call` runs a picklable function in a free one, within ``timeout_s``.

    Args:
        size: worker processes.
        timeout_s: longest call; a worker past it is killed and replaced.
        memory_mb: address-space cap of each worker (0: none).
    """

    def __init__(self, size: int = 2, timeout_s: float = 60.0, memory_mb: int = 4096) -> None:
        self._ctx = mp.get_context("spawn")  # a fork of a process holding a model and threads is unsafe
        self.timeout_s, self.memory_mb = timeout_s, memory_mb
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        for _ in range(size):
            self._add()

    def _add(self) -> None:
        worker = _Worker(self._ctx, self.memory_mb)
        with self._lock:
            self._all.append(worker)
        self._idle.put(worker)

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            self._all.remove(worker)
        self._add()

    def call(self, fn: Callable[..., Any], *args: Any, timeout_s: float | None = None) -> Any:
        """``fn(*args)`` in a worker process (blocks until one is free).

        Raises:
            WorkerError: the call raised, ran past the time limit, hit the memory limit or killed its worker.
        """
        limit = self.timeout_s if timeout_s is None else timeout_s
        worker = self._idle.get()
        try:
            worker.conn.send((fn, args))
            if not worker.conn.poll(limit):
                self._replace(worker)
                raise WorkerError("timeout", f"decoding took longer than the {limit:g} s limit")
            answer = worker.conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            worker.process.join(5)  # reap it, so its exit code is known
            code = worker.process.exitcode
            self._replace(worker)
            raise WorkerError("died", f"the decoder crashed (exit code {code}); the file is probably malformed "
                              "or needs more than the memory limit") from None
        except WorkerError:
            raise
        except BaseException:
            self._replace(worker)
            raise
        self._idle.put(worker)
        if answer[0] == "ok":
            return answer[1]
        raise WorkerError(answer[1], answer[2])

    def close(self) -> None:
        """Stop every worker."""
        with self._lock:
            workers, self._all = self._all, []
        for worker in workers:
            worker.kill()
