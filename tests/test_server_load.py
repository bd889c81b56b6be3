"""The server under load on a free loopback port: 200 chat completions with video parts from 16 concurrent clients
against the tiny model. No 5xx; each request answered or refused with 429/503 and ``Retry-After``; the server's
peak RSS stays bounded; latency percentiles printed. Bounded: 200 requests, and no new request after 90 s."""

from __future__ import annotations

import statistics
import threading
import time

import httpx
import pytest
from conftest import save_tiny_model

psutil = pytest.importorskip("psutil")
pytest.importorskip("uvicorn")

from affectllm.serve.engine import Engine  # noqa: E402
from affectllm.serve.server import ServerConfig, serve_in_thread  # noqa: E402

pytestmark = pytest.mark.slow
KEY = "load-key"
REQUESTS, CLIENTS, BUDGET_S = 200, 16, 90.0
RSS_GROWTH_LIMIT_MB = 1024  # the tiny model, 12 decoded clips in the cache and 16 requests' buffers fit well under


def _rss_mb() -> float:
    """This process's RSS (the server runs in a thread of it) plus its decode workers', in MiB."""
    me = psutil.Process()
    procs = [me, *me.children(recursive=True)]
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:  # a worker replaced while we looked
            pass
    return total / (1 << 20)


class PeakRss:
    """Samples :func:`_rss_mb` every 50 ms in a thread while the ``with`` block runs."""

    def __enter__(self) -> PeakRss:
        self.peak, self.stop = _rss_mb(), threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while not self.stop.wait(0.05):
            self.peak = max(self.peak, _rss_mb())

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()


def _load(base: str, clips: list[str]) -> tuple[list[tuple[int, float, dict]], list[dict], float]:
    """``CLIENTS`` threads share ``REQUESTS`` requests (clip ``i % len(clips)``), each retried after the
    ``Retry-After`` of a 429/503 until the time budget ends: ``(status, seconds, headers)`` of each request's last
    answer, the headers of every refusal, and the wall time."""
    results: list[tuple[int, float, dict]] = []
    refusals: list[dict] = []
    lock, counter = threading.Lock(), iter(range(REQUESTS))
    deadline = time.monotonic() + BUDGET_S

    def client() -> None:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as http:
            while time.monotonic() < deadline:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                part = {"type": "video_url", "video_url": {"url": clips[i % len(clips)]}}
                body = {"model": "tiny-emo", "max_tokens": 4, "temperature": 0,
                        "messages": [{"role": "user", "content": [part, {"type": "text", "text": "Feeling?"}]}]}
                start = time.perf_counter()
                resp = http.post("/v1/chat/completions", json=body)
                while resp.status_code in (429, 503) and time.monotonic() < deadline:  # a client that backs off
                    with lock:
                        refusals.append(dict(resp.headers))
                    time.sleep(float(resp.headers["retry-after"]))
                    resp = http.post("/v1/chat/completions", json=body)
                with lock:
                    results.append((resp.status_code, time.perf_counter() - start, dict(resp.headers)))

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, refusals, time.perf_counter() - start


def test_200_requests_from_16_clients(tmp_path, emoworld):
    root = emoworld.parent
    clips = sorted(p.as_uri() for p in (root / "video").glob("*.mp4"))
    model_dir = save_tiny_model(tmp_path / "tiny-emo")
    config = ServerConfig(model=str(model_dir), device="cpu", decode_workers=2, media_root=str(root), api_key=KEY,
                          max_queue=12, max_batch_size=8)
    with serve_in_thread(config, Engine.load(model_dir, device="cpu"), ready_s=120) as (base, state):
        before = _rss_mb()
        with PeakRss() as rss:
            results, refusals, wall = _load(base, clips)
        assert state.in_flight == 0
    statuses = [status for status, _, _ in results]
    ok = [seconds for status, seconds, _ in results if status == 200]
    assert len(ok) > 1, sorted(set(statuses))
    latency = statistics.quantiles(ok, n=100, method="inclusive")
    print(f"\nload: {len(results)} requests in {wall:.1f} s, {len(ok)} answered, {len(refusals)} refusals (429/503) "
          f"retried, {len(results) - len(ok)} still refused at the end; latency (with retries) "
          f"p50 {latency[49]:.2f} s p90 {latency[89]:.2f} s p99 {latency[98]:.2f} s; "
          f"RSS {before:.0f} MiB before, peak {rss.peak:.0f} MiB")
    assert len(results) == REQUESTS or wall >= BUDGET_S  # all sent, or stopped by the time budget
    assert set(statuses) <= {200, 429, 503}, sorted(set(statuses))
    for headers in refusals + [h for status, _, h in results if status != 200]:
        assert int(headers["retry-after"]) >= 1
    assert len(ok) >= len(results) // 2  # refusals are back-pressure, not the norm
    assert rss.peak - before < RSS_GROWTH_LIMIT_MB
