"""Hostile requests against a real server on a free loopback port: each is refused with the right status, OpenAI's
error shape and no stack trace, and the server keeps answering afterwards."""

from __future__ import annotations

import base64
import json
import shutil

import av
import httpx
import numpy as np
import pytest
from bad_inputs import write_corpus
from conftest import save_tiny_model

pytest.importorskip("uvicorn")

from affectllm.serve.engine import Engine  # noqa: E402
from affectllm.serve.server import ServerConfig, serve_in_thread  # noqa: E402

KEY = "hostile-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
TRACE_MARKS = ("Traceback", 'File "', "site-packages", "affectllm-serve-")


def _bomb_mp4(path, size=8000):
    """A 1-frame black h264 mp4 of ``size`` x ``size`` (a few kB on disk, 192 MB as RGB once decoded)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=1)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((size, size, 3), np.uint8), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode()]:
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory, emoworld):
    """The media root: one good EmoWorld clip, the bad-input corpus' media, an 8000x8000 mp4 and a symlink out."""
    root = tmp_path_factory.mktemp("hostile_root")
    shutil.copy(emoworld.parent / "video" / "ew00000.mp4", root / "good.mp4")
    write_corpus(root)
    _bomb_mp4(root / "bomb8000.mp4")
    (root / "escape.mp4").symlink_to(emoworld.parent / "video" / "ew00001.mp4")
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory, root):
    model_dir = save_tiny_model(tmp_path_factory.mktemp("hostile_model") / "tiny-emo")
    config = ServerConfig(model=str(model_dir), device="cpu", decode_workers=1, media_root=str(root), api_key=KEY,
                          max_upload_mb=1, decode_timeout_s=5, max_tokens_limit=64)
    with serve_in_thread(config, Engine.load(model_dir, device="cpu"), ready_s=120) as started:
        yield started[0]


def post(base, body=None, content=None, headers=AUTH, timeout=60):
    return httpx.post(f"{base}/v1/chat/completions", json=body, content=content, headers=headers, timeout=timeout)


def refused(resp, status):
    """``resp`` has ``status`` and an OpenAI error body without a trace; returns the error object."""
    assert resp.status_code == status, resp.text[:500]
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert not any(mark in resp.text for mark in TRACE_MARKS), resp.text[:500]
    return error


def chat(parts, **extra):
    return {"model": "tiny-emo", "max_tokens": 4, "messages": [{"role": "user", "content": parts}], **extra}


def video(url):
    return {"type": "video_url", "video_url": {"url": url}}


def test_every_endpoint_needs_the_key(server):
    gets = ["/health", "/health/ready", "/v1/models", "/v1/models/tiny-emo", "/v1/affect/media", "/v1/nothing"]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"},
                    {"Authorization": "Bearer"}):
        for path in gets:
            refused(httpx.get(f"{server}{path}", headers=headers), 401)
        refused(post(server, chat([{"type": "text", "text": "hi"}]), headers=headers), 401)


def test_media_paths_outside_the_root_are_403(server, root, tmp_path):
    (tmp_path / "out.mp4").write_bytes((root / "good.mp4").read_bytes())
    for url in [(tmp_path / "out.mp4").as_uri(), f"{root.as_uri()}/../{tmp_path.name}/out.mp4",
                "file:///etc/passwd", (root / "escape.mp4").as_uri(), "file:///proc/self/environ"]:
        refused(post(server, chat([video(url)])), 403)
    for url in ["http://127.0.0.1:1/a.mp4", "https://example.com/a.mp4"]:
        assert refused(post(server, chat([video(url)])), 403)["code"] == "remote_media_off"


def test_an_oversize_upload_is_refused_while_streaming(server):
    def body():
        yield b'{"model": "tiny-emo", "messages": [{"role": "user", "content": "'
        for _ in range(64):  # 4 MB against the 1 MB limit, sent chunked (no Content-Length)
            yield b"a" * (1 << 16)
        yield b'"}]}'

    refused(post(server, content=body()), 413)


def test_malformed_json_unknown_parts_and_absurd_values(server, root):
    good = video((root / "good.mp4").as_uri())
    refused(post(server, content=b"{not json"), 400)
    refused(post(server, content=b"[]"), 400)
    refused(post(server, content=b"\xff\xfe\x00"), 400)
    refused(post(server, chat([{"type": "hologram", "hologram": {}}])), 400)
    refused(post(server, chat([{"type": "video_url", "video_url": {"url": 5}}])), 400)
    for field, value in [("max_tokens", 10**12), ("max_tokens", -1), ("n", 10**6), ("n", 0), ("temperature", -1),
                         ("temperature", 1e308), ("top_p", 7), ("top_p", -0.5), ("seed", 2**80), ("seed", "x"),
                         ("max_tokens", "many"), ("stop", ["a"] * 50)]:
        status = post(server, chat([good], **{field: value})).status_code
        assert status in (400, 422), (field, value, post(server, chat([good], **{field: value})).json())
        refused(post(server, chat([good], **{field: value})), status)
    for value in ("NaN", "Infinity"):
        raw = f'{{"model": "tiny-emo", "messages": [{{"role": "user", "content": "hi"}}], "temperature": {value}}}'
        assert post(server, content=raw.encode()).status_code in (400, 422)


def test_huge_text_and_many_media_parts(server, root):
    refused(post(server, chat([{"type": "text", "text": "x" * (10 << 20)}])), 413)  # over the 1 MB body limit
    many = [video((root / "good.mp4").as_uri())] * 200
    refused(post(server, chat(many)), 400)


def test_decompression_bombs_are_refused_before_they_are_decoded(server, root):
    png = (root / "corpus" / "media" / "bomb.png").read_bytes()
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(png).decode()}}
    cases = [(image, "more pixels than"), (video((root / "bomb8000.mp4").as_uri()), "8000x8000, over the limit"),
             (video((root / "corpus" / "media" / "huge_duration.mkv").as_uri()), "s long, over the limit")]
    for part, cause in cases:
        error = refused(post(server, chat([part]), timeout=120), 415)
        assert error["code"] == "decode_error" and cause in error["message"], error
    assert post(server, chat([video((root / "good.mp4").as_uri())]), timeout=120).status_code == 200


def test_a_decode_over_the_time_limit_is_killed_and_refused(tmp_path, root):
    """A decode that spins past ``--decode-timeout-s`` (here any decode: the limit is 10 ms) is a 415, and the
    server (with a fresh worker) keeps answering."""
    model_dir = save_tiny_model(tmp_path / "tiny-emo")
    config = ServerConfig(model=str(model_dir), device="cpu", decode_workers=1, media_root=str(root), api_key=KEY,
                          decode_timeout_s=0.01)
    with serve_in_thread(config, Engine.load(model_dir, device="cpu"), ready_s=120) as (base, _):
        error = refused(post(base, chat([video((root / "good.mp4").as_uri())]), timeout=120), 415)
        assert error["code"] == "decode_timeout" and "0.01" in error["message"], error
        assert httpx.get(f"{base}/health/ready", headers=AUTH).status_code == 200


@pytest.mark.parametrize(("name", "status", "cause"), [
    ("random.mp4", 415, "cannot read the file's headers"), ("zero_byte.mp4", 415, "empty file"),
    ("truncated.mp4", 415, "cannot read the file's headers"), ("audio_only.mp4", 415, "no video stream"),
    ("no_streams.mp4", 415, "no video stream"), ("folder.mp4", 400, "no such file"), ("fifo.mp4", 400, "no such file"),
    ("corrupt_header.wav", 415, "cannot read the file's headers")])
def test_bad_corpus_media_is_a_4xx_naming_the_cause(server, root, name, status, cause):
    """The bad-input corpus' media (tests/bad_inputs.py) sent as file:// parts under the media root."""
    url = (root / "corpus" / "media" / name).as_uri()
    part = {"type": "audio_url", "audio_url": {"url": url}} if name.endswith(".wav") else video(url)
    error = refused(post(server, chat([part]), timeout=120), status)
    assert error["param"] == "messages[0].content[0]" and cause in error["message"] and name in error["message"]


def test_deep_nesting_odd_text_and_odd_fields(server, root):
    good = video((root / "good.mp4").as_uri())
    refused(post(server, content=b"[" * 200_000), 400)
    deep = b'{"model": "tiny-emo", "messages": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_001
    refused(post(server, content=deep), 400)
    surrogate = json.dumps(chat([good, {"type": "text", "text": "\ud800 lone surrogate"}])).encode()  # JSON "\\ud800"
    assert "surrogate" in refused(post(server, content=surrogate), 400)["message"]
    for text in ("\x00" * 1000, "<answer>" * 5000):
        resp = post(server, chat([good, {"type": "text", "text": text}]))
        assert resp.status_code == 200, (text[:20], resp.text[:300])
    assert refused(post(server, chat([good], stop=["x" * 100_000])), 422)["param"] == "stop"
    refused(post(server, {**chat([good]), "model": "m" * 100_000}), 404)
