"""`affectllm serve`: the OpenAI client against a real server on a free loopback port (started in the test, bounded in
time, stopped by the test), media confinement, limits, errors, batching, the decode workers."""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from conftest import save_tiny_model

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

from affectllm.serve.engine import Engine, GenerationOptions  # noqa: E402
from affectllm.serve.server import ServerConfig, serve_in_thread  # noqa: E402
from affectllm.serve.worker import WorkerError, WorkerPool  # noqa: E402
from affectllm.types import Clip  # noqa: E402

KEY = "test-key"
ANSWER = ("<think>The cheeks rise (AU6) and the lip corners pull up (AU12).</think><answer>happy, joy</answer>"
          "<confidence>0.80</confidence>")
READY_S = 120


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A saved tiny model in a folder named tiny-emo (the served model's id)."""
    return save_tiny_model(tmp_path_factory.mktemp("serve_model") / "tiny-emo")


@pytest.fixture(scope="module")
def engine(model_dir):
    return Engine.load(model_dir, device="cpu")


@pytest.fixture(scope="module")
def root(emoworld):
    return emoworld.parent


def running(engine, **settings):
    """A server on a free 127.0.0.1 port, started here and stopped when the ``with`` block ends."""
    config = ServerConfig(model=str(engine.model_dir), device="cpu", decode_workers=1, **settings)
    return serve_in_thread(config, engine, ready_s=READY_S)


@pytest.fixture(scope="module")
def server(engine, root):
    with running(engine, media_root=str(root), api_key=KEY, max_upload_mb=2) as started:
        yield started


@pytest.fixture()
def client(server):
    return openai.OpenAI(base_url=f"{server[0]}/v1", api_key=KEY, max_retries=0, timeout=120)


def _video_part(url):
    return {"type": "video_url", "video_url": {"url": url}}


def _data_url(path: Path, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def _clip(root, name="ew00000"):
    return root / "video" / f"{name}.mp4", root / "audio" / f"{name}.wav"


@contextlib.contextmanager
def scripted(engine, text=ANSWER, gate: threading.Event | None = None, entered: threading.Event | None = None):
    """The model's ``generate`` writes ``text`` for every row (streamed token by token), after ``gate`` opens."""
    real = engine.model.generate
    eos = engine.model.generation_config.eos_token_id
    ids = engine.processor.tokenizer.encode(text, add_special_tokens=False) + [eos]

    def generate(input_ids, streamer=None, num_return_sequences=1, max_new_tokens=128, **_):
        if entered is not None:
            entered.set()
        if gate is not None:
            assert gate.wait(60)
        prompt = input_ids.repeat_interleave(num_return_sequences, 0)
        new = torch.tensor(ids[:max_new_tokens]).repeat(prompt.shape[0], 1)
        if streamer is not None:
            streamer.put(prompt)
            for step in range(new.shape[1]):
                streamer.put(new[:, step])
            streamer.end()
        return torch.cat([prompt, new], 1)

    engine.model.generate = generate
    try:
        yield
    finally:
        engine.model.generate = real


def test_models_list_health_and_readiness(server, client):
    base, _ = server
    assert [m.id for m in client.models.list()] == ["tiny-emo"]
    assert client.models.retrieve("tiny-emo").owned_by == "affectllm"
    auth = {"Authorization": f"Bearer {KEY}"}
    assert httpx.get(f"{base}/health", headers=auth).json() == {"status": "ok", "ready": True}
    assert httpx.get(f"{base}/health/ready", headers=auth).json()["status"] == "ready"


def test_a_model_that_is_not_ready_gives_503_and_health_still_answers(tmp_path):
    config = ServerConfig(model=str(tmp_path / "no-model"), device="cpu", decode_workers=1)
    with serve_in_thread(config, wait=False) as (base, state):
        deadline = time.monotonic() + READY_S
        while state.load_error is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert httpx.get(f"{base}/health").json() == {"status": "ok", "ready": False}
        ready = httpx.get(f"{base}/health/ready")
        assert ready.status_code == 503 and ready.headers["Retry-After"]
        assert ready.json()["error"]["code"] == "not_ready" and "no-model" not in ready.text
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0)
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(model="no-model", messages=[{"role": "user", "content": "hi"}])
        assert err.value.status_code == 503


def test_non_streaming_video_file_url_with_an_audio_part(client, root):
    video, audio = _clip(root)
    resp = client.chat.completions.create(model="tiny-emo", max_tokens=8, messages=[{"role": "user", "content": [
        _video_part(video.as_uri()),
        {"type": "input_audio", "input_audio": {"data": base64.b64encode(audio.read_bytes()).decode(),
                                                "format": "wav"}},
        {"type": "text", "text": "How does this person feel?"}]}])
    choice = resp.choices[0]
    assert resp.object == "chat.completion" and resp.model == "tiny-emo" and choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.finish_reason in ("stop", "length")
    assert resp.usage.completion_tokens <= 8 and resp.usage.prompt_tokens > 0
    assert {"video", "audio"} <= set(resp.model_extra["affect"]["modalities"])
    assert set(choice.model_extra["affect"]) == {"labels", "confidence", "confidence_raw", "aus", "explanation",
                                                 "format_ok"}


def test_streaming_data_url_gives_the_non_streaming_text(client, root):
    video, audio = _clip(root, "ew00001")
    content = [_video_part(_data_url(video, "video/mp4")),
               {"type": "audio_url", "audio_url": {"url": _data_url(audio, "audio/wav")}}]
    messages = [{"role": "user", "content": content}]
    whole = client.chat.completions.create(model="tiny-emo", max_tokens=10, messages=messages)
    chunks = list(client.chat.completions.create(model="tiny-emo", max_tokens=10, messages=messages, stream=True,
                                                 stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1 and finish[0].choices[0].model_extra["affect"]["labels"] == []
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens


def test_an_image_part_and_a_conversation_with_earlier_turns(client, root, tmp_path):
    from PIL import Image

    still = tmp_path / "face.png"
    Image.fromarray(np.full((48, 48, 3), 128, dtype=np.uint8)).save(still)
    resp = client.chat.completions.create(model="tiny-emo", max_tokens=4, messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": _data_url(still, "image/png")}}]}])
    assert "video" in resp.model_extra["affect"]["modalities"]  # a still is a one-frame video
    video, _ = _clip(root)
    turns = [{"role": "system", "content": "ignored"},
             {"role": "user", "content": [_video_part(video.as_uri()), {"type": "text", "text": "What do you see?"}]},
             {"role": "assistant", "content": "A face."}, {"role": "user", "content": "And the feeling?"}]
    again = client.chat.completions.create(model="tiny-emo", max_tokens=4, messages=turns)
    alone = client.chat.completions.create(model="tiny-emo", max_tokens=4, messages=[{"role": "user", "content": [
        _video_part(video.as_uri()), {"type": "text", "text": "And the feeling?"}]}])
    assert again.usage.prompt_tokens > alone.usage.prompt_tokens  # the earlier turns are in the prompt


def test_n_sampled_choices_whole_and_streamed_are_seeded(client, root):
    video, _ = _clip(root)
    ask = {"model": "tiny-emo", "max_tokens": 6, "n": 2, "temperature": 1.5, "seed": 7,
           "messages": [{"role": "user", "content": [_video_part(video.as_uri())]}]}
    whole = client.chat.completions.create(**ask)
    assert [c.index for c in whole.choices] == [0, 1]
    assert client.chat.completions.create(**ask).choices[1].message.content == whole.choices[1].message.content
    chunks = list(client.chat.completions.create(**ask, stream=True))
    texts = ["".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == i)
             for i in (0, 1)]
    assert texts == [c.message.content for c in whole.choices]
    assert sorted(c.choices[0].index for c in chunks if c.choices[0].finish_reason) == [0, 1]


def test_media_knobs_change_the_frames_decoded(client, root):
    video, _ = _clip(root)  # 2.125 s at 8 fps

    def times(**knobs):
        resp = client.chat.completions.create(model="tiny-emo", max_tokens=1, messages=[
            {"role": "user", "content": [_video_part(video.as_uri())]}],
            extra_body={"mm_processor_kwargs": knobs, "affect": {"timeline": True}})
        return resp.model_extra["affect"]["timeline"]["times"]

    assert len(times(num_frames=3)) == 3
    assert len(times(fps=2.0)) == 4  # one frame every 0.5 s
    window = times(window=[1.0, 2.0], num_frames=4)
    assert len(window) == 4 and all(1.0 <= t < 2.0 for t in window)


def test_a_clip_asked_about_again_is_not_decoded_again(client, server, root):
    video, _ = _clip(root, "ew00003")
    state = server[1]

    def ask(transcript, **knobs):
        return client.chat.completions.create(model="tiny-emo", max_tokens=1, messages=[
            {"role": "user", "content": [_video_part(video.as_uri())]}],
            extra_body={"affect": {"transcript": transcript}, "mm_processor_kwargs": knobs})

    first = ask("Fine.")
    calls = []
    real = state.pool.call
    state.pool.call = lambda *a, **k: calls.append(a) or real(*a, **k)
    try:
        again = ask("I am not fine at all, believe me.")
        assert calls == []  # served from the cache
        assert again.usage.prompt_tokens > first.usage.prompt_tokens  # with this request's transcript
        ask("Fine.", num_frames=3)
        assert len(calls) == 1  # other decode settings: decoded again
    finally:
        state.pool.call = real


def test_parsed_answer_extension_streamed_and_whole(client, engine, root):
    video, _ = _clip(root)
    messages = [{"role": "user", "content": [_video_part(video.as_uri()), {"type": "text", "text": "Feeling?"}]}]
    with scripted(engine):
        whole = client.chat.completions.create(model="tiny-emo", messages=messages)
        chunks = list(client.chat.completions.create(model="tiny-emo", messages=messages, stream=True,
                                                     extra_body={"affect": {"timeline": True}}))
    assert whole.choices[0].message.content == ANSWER and whole.choices[0].finish_reason == "stop"
    affect = whole.choices[0].model_extra["affect"]
    assert affect["labels"] == ["happy", "joy"] and affect["confidence"] == pytest.approx(0.8)
    assert affect["format_ok"] and [a["code"] for a in affect["aus"]] == ["AU6", "AU12"]
    assert affect["aus"][0]["name"] and "cheek" in affect["aus"][0]["name"].lower()
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
    assert [c for c in chunks if c.choices[0].finish_reason][0].choices[0].model_extra["affect"] == affect
    timeline = chunks[0].model_extra["affect"]["timeline"]
    assert timeline is not None and len(timeline["times"]) == engine.media.num_frames and "AU12" in timeline["aus"]


def test_stop_strings_and_max_tokens(client, engine, root):
    video, _ = _clip(root)
    messages = [{"role": "user", "content": [_video_part(video.as_uri())]}]
    with scripted(engine):
        cut = client.chat.completions.create(model="tiny-emo", messages=messages, stop=["</answer>"])
        streamed = list(client.chat.completions.create(model="tiny-emo", messages=messages, stop="</answer>",
                                                       stream=True))
        short = client.chat.completions.create(model="tiny-emo", messages=messages, max_completion_tokens=3)
    assert cut.choices[0].message.content == ANSWER[: ANSWER.index("</answer>")]
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == cut.choices[0].message.content
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3


def _status(client, **kwargs):
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(**{"model": "tiny-emo", **kwargs})
    body = err.value.body
    assert set(body) == {"message", "type", "param", "code"} and "Traceback" not in body["message"]
    return err.value.status_code, body


def test_bad_requests_get_openai_errors_with_the_right_status(client, server, root, tmp_path):
    video, _ = _clip(root)
    part = _video_part(video.as_uri())
    user = [{"role": "user", "content": [part]}]
    assert _status(client, messages=[{"role": "user", "content": [{"type": "hologram"}]}])[0] == 400
    assert _status(client, messages=[{"role": "user", "content": [{"type": "video_url"}]}])[0] == 400
    assert _status(client, messages=[*user, {"role": "assistant", "content": "hi"}])[0] == 400
    assert _status(client, messages=[{"role": "user", "content": [part, part]}])[0] == 400
    status, body = _status(client, messages=user, temperature=3)
    assert status == 422 and body["param"] == "temperature"
    assert _status(client, messages=user, n=2)[0] == 422  # n > 1 needs sampling
    assert _status(client, messages=user, max_tokens=100000)[0] == 422
    assert _status(client, messages=user, extra_body={"mm_processor_kwargs": {"window": [2.0, 1.0]}})[0] == 422
    assert _status(client, model="gpt-4o", messages=user)[0] == 404
    bad64 = _video_part("data:video/mp4;base64,@@@")
    assert _status(client, messages=[{"role": "user", "content": [bad64]}])[0] == 400
    html = _video_part("data:text/html;base64," + base64.b64encode(b"<p>").decode())
    assert _status(client, messages=[{"role": "user", "content": [html]}])[0] == 415
    junk = _video_part("data:video/mp4;base64," + base64.b64encode(b"not a video at all" * 50).decode())
    status, body = _status(client, messages=[{"role": "user", "content": [junk]}])
    assert status == 415 and "affectllm-serve" not in body["message"]  # no server temp path in the message
    assert _status(client, messages=[{"role": "user", "content": [_video_part("http://example.com/a.mp4")]}])[0] \
        == 403  # remote media off by default
    raw = httpx.post(f"{server[0]}/v1/chat/completions", content=b"{not json", headers={"Authorization":
                                                                                        f"Bearer {KEY}"})
    assert raw.status_code == 400 and raw.json()["error"]["type"] == "invalid_request_error"
    assert httpx.get(f"{server[0]}/v1/nothing", headers={"Authorization": f"Bearer {KEY}"}).status_code == 404


def test_failures_inside_the_server_never_show_a_trace(client, server, engine, root, monkeypatch):
    from affectllm.serve import protocol

    video, _ = _clip(root)
    messages = [{"role": "user", "content": [_video_part(video.as_uri())]}]

    def boom(*_, **__):
        raise RuntimeError("boom in /secret/server/path")

    real = engine.model.generate
    engine.model.generate = boom
    try:
        status, body = _status(client, messages=messages)
        assert status == 500 and body["code"] == "generation_failed" and "secret" not in body["message"]
        with pytest.raises(openai.APIError) as err:
            list(client.chat.completions.create(model="tiny-emo", messages=messages, stream=True))
        assert "secret" not in str(err.value) and "generation failed" in str(err.value)
    finally:
        engine.model.generate = real
    monkeypatch.setattr(protocol, "conversation", boom)
    status, body = _status(client, messages=messages)
    assert status == 500 and body["type"] == "server_error" and "secret" not in body["message"]
    assert server[1].in_flight == 0  # every failed request gave its queue slot back


def test_missing_or_wrong_key_is_401_and_the_page_is_public(server, root):
    base, _ = server
    for key in ("wrong", ""):
        bad = openai.OpenAI(base_url=f"{base}/v1", api_key=key or "x", max_retries=0,
                            default_headers={} if key else {"Authorization": ""})
        with pytest.raises(openai.AuthenticationError) as err:
            bad.models.list()
        assert err.value.status_code == 401 and err.value.body["type"] == "authentication_error"
    assert httpx.get(f"{base}/health").status_code == 401
    assert httpx.post(f"{base}/v1/chat/completions", json={}).status_code == 401  # before the body is looked at
    page = httpx.get(f"{base}/")
    assert page.status_code == 200 and "/web/app.js" in page.text
    assert httpx.get(f"{base}/web/app.js").status_code == 200


def test_path_traversal_and_symlink_escape_are_403(client, root, tmp_path):
    outside = tmp_path / "secret.mp4"
    video, _ = _clip(root)
    outside.write_bytes(video.read_bytes())
    link = root / "escape.mp4"
    link.symlink_to(outside)
    inside_link = root / "inside.mp4"
    inside_link.symlink_to(video)
    try:
        for url in (f"file://{root}/../{outside.parent.name}/secret.mp4", outside.as_uri(), link.as_uri(),
                    "file:///etc/passwd", f"file://{root}/video/%2e%2e/%2e%2e/{outside.name}"):
            status, body = _status(client, messages=[{"role": "user", "content": [_video_part(url)]}])
            assert status == 403 and body["type"] == "permission_error", url
        ok = client.chat.completions.create(model="tiny-emo", max_tokens=2, messages=[
            {"role": "user", "content": [_video_part(inside_link.as_uri())]}])  # a link that stays inside is fine
        assert ok.choices[0].finish_reason in ("stop", "length")
    finally:
        link.unlink()
        inside_link.unlink()


def _raw_post(base: str, head: str, body_parts: list[bytes]) -> bytes:
    """Send the request line and headers, then body parts one by one; return what the server answered as soon as
    it answers (the rest of the body is never sent)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head.encode())
        for part in body_parts:
            sock.sendall(part)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < _length(answer):
            more = sock.recv(65536)
            if not more:
                break
            answer += more
        return answer


def _length(answer: bytes) -> int:
    for line in answer.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def test_an_oversize_upload_is_refused_while_it_is_read(server, client, root):
    base, _ = server
    auth = f"Authorization: Bearer {KEY}\r\n"
    # declared too large: answered before one byte of the body is sent
    answer = _raw_post(base, f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: "
                       f"application/json\r\nContent-Length: {50 << 20}\r\n\r\n", [])
    assert answer.startswith(b"HTTP/1.1 413") and b"request_too_large" in answer
    # chunked, no length: refused once 2 MB have been read, with the end of the body never sent
    chunk = b"x" * (256 << 10)
    parts = [f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"] * 9
    answer = _raw_post(base, f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: "
                       "application/json\r\nTransfer-Encoding: chunked\r\n\r\n", parts)
    assert answer.startswith(b"HTTP/1.1 413")
    big = "data:video/mp4;base64," + "A" * (3 << 20)
    status, body = _status(client, messages=[{"role": "user", "content": [_video_part(big)]}])
    assert status == 413 and body["code"] == "request_too_large"


def test_requests_arriving_together_share_a_batch_and_a_full_queue_is_429(engine, root):
    video, _ = _clip(root)
    messages = [{"role": "user", "content": [_video_part(video.as_uri())]}]
    gate, entered = threading.Event(), threading.Event()
    with running(engine, media_root=str(root), max_queue=4, max_wait_ms=50) as (base, state), \
            scripted(engine, gate=gate, entered=entered):
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0, timeout=120)
        results: list = []
        ask = lambda: results.append(client.chat.completions.create(model="tiny-emo", messages=messages))  # noqa: E731
        first = threading.Thread(target=ask)
        first.start()
        assert entered.wait(60)  # the first request is generating (held at the gate)
        others = [threading.Thread(target=ask) for _ in range(3)]
        for t in others:
            t.start()
        deadline = time.monotonic() + 60
        while state.batcher.pending() < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert state.batcher.pending() == 3
        with pytest.raises(openai.RateLimitError) as err:  # 4 requests in progress = --max-queue
            client.chat.completions.create(model="tiny-emo", messages=messages)
        assert err.value.status_code == 429 and int(err.value.response.headers["Retry-After"]) >= 1
        gate.set()
        for t in (first, *others):
            t.join(60)
        assert state.batcher.batch_sizes == [1, 3]  # the three queued together went in one generate call
        assert [r.choices[0].message.content for r in results] == [ANSWER] * 4


def test_batched_rows_match_the_same_requests_one_at_a_time(engine, root):
    video, _ = _clip(root)
    questions = ["How does this person feel?", "Which emotion?", "Describe the face."]
    with running(engine, media_root=str(root), max_wait_ms=300) as (base, state):
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0, timeout=120)

        def ask(q):
            content = [_video_part(video.as_uri()), {"type": "text", "text": q}]
            return client.chat.completions.create(model="tiny-emo", max_tokens=6,
                                                  messages=[{"role": "user", "content": content}])

        alone = [ask(q).choices[0].message.content for q in questions]
        together: dict = {}
        threads = [threading.Thread(target=lambda q=q: together.__setitem__(q, ask(q))) for q in questions]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert max(state.batcher.batch_sizes) > 1
    assert [together[q].choices[0].message.content for q in questions] == alone


def test_remote_media_when_allowed_has_a_size_limit(engine, root, tmp_path):
    import http.server

    video, _ = _clip(root)
    (tmp_path / "clip.mp4").write_bytes(video.read_bytes())
    (tmp_path / "big.mp4").write_bytes(b"0" * (3 << 20))
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path))  # noqa: E731
    files = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{files.server_address[1]}"
    try:
        with running(engine, allow_remote_media=True, max_upload_mb=2) as (base, _):
            client = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0, timeout=120)
            ok = client.chat.completions.create(model="tiny-emo", max_tokens=2, messages=[
                {"role": "user", "content": [_video_part(f"{url}/clip.mp4")]}])
            assert "video" in ok.model_extra["affect"]["modalities"]
            assert _status(client, messages=[{"role": "user", "content": [_video_part(f"{url}/big.mp4")]}])[0] == 413
    finally:
        files.shutdown()


def _stub_batcher(max_wait_s):
    """A Batcher whose ``run`` records each batch instead of generating."""
    import asyncio

    from affectllm.serve.batching import Batcher, Choice, Job

    batches, ran = [], threading.Event()

    def run(jobs):
        batches.append([j.clip.id for j in jobs])
        ran.set()
        return [0] * len(jobs), [[Choice("", "stop", 0)] for _ in jobs]

    batcher = Batcher(engine=None, max_batch_size=8, max_wait_s=max_wait_s)
    batcher.run = run
    loop = asyncio.new_event_loop()
    job = lambda i: Job(clip=Clip(id=str(i)), decoded=None, question="q", gen=GenerationOptions(),  # noqa: E731
                        loop=loop)
    return batcher, job, batches, ran


def test_a_request_alone_is_not_held_back_and_announced_ones_are_waited_for():
    batcher, job, batches, ran = _stub_batcher(max_wait_s=600)
    try:
        batcher.expect()
        batcher.submit(job(0))  # nothing else announced: generated at once, not after the 600 s wait
        assert ran.wait(30) and batches == [["0"]]
        ran.clear()
        batcher.expect(2)  # two requests admitted and decoding
        batcher.submit(job(1))
        assert not ran.wait(0.5)  # the batch waits for the announced one ...
        batcher.submit(job(2))
        assert ran.wait(30) and batches[-1] == ["1", "2"]  # ... and both go in one generate call
        ran.clear()
        batcher.expect(2)
        batcher.submit(job(3))
        batcher.expect(-1)  # the other one failed to decode: stop waiting
        assert ran.wait(30) and batches[-1] == ["3"]
    finally:
        batcher.close()


def test_decode_workers_survive_hangs_memory_and_crashes():
    pool = WorkerPool(1, timeout_s=30, memory_mb=1024)
    try:
        with pytest.raises(WorkerError) as err:
            pool.call(time.sleep, 30, timeout_s=0.5)
        assert err.value.kind == "timeout"
        with pytest.raises(WorkerError) as err:
            pool.call(bytearray, 4 << 30)  # over the 1 GiB address-space cap
        assert err.value.kind == "memory"
        with pytest.raises(WorkerError) as err:
            pool.call(os._exit, 3)
        assert err.value.kind == "died" and "exit code 3" in str(err.value)
        assert pool.call(len, "abc") == 3  # a fresh worker took the dead one's place
    finally:
        pool.close()


def test_the_serve_command_serves_with_the_key_from_the_environment(model_dir, tmp_path):
    import subprocess
    import sys

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # the command binds it again at once; nothing else on this machine picks ports in this range
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AFFECTLLM_API_KEY": KEY}  # the key out of the process list
    proc = subprocess.Popen([sys.executable, "-m", "affectllm.cli", "serve", "--model", str(model_dir), "--port",
                             str(port), "--device", "cpu", "--decode-workers", "1"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline, status = time.monotonic() + READY_S, None
        while time.monotonic() < deadline and proc.poll() is None and status != 200:
            with contextlib.suppress(httpx.HTTPError):
                status = httpx.get(f"http://127.0.0.1:{port}/health/ready", headers={"Authorization":
                                                                                    f"Bearer {KEY}"}).status_code
            time.sleep(0.3)
        assert status == 200, proc.stderr.read() if proc.poll() is not None else "not ready in time"
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 401
    finally:
        proc.terminate()
        proc.wait(30)
