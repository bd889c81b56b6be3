"""``affectllm label``: rows per clip, bad clips, resume after SIGKILL, fingerprint refusal, OpenAI Batch shape,
torchrun ranks and Ray Data giving the rows of a single-process run."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from affectllm.data.manifest import read_manifest
from affectllm.serve.engine import GenerationOptions
from affectllm.serve.label import LabelJob, label_main
from affectllm.serve.shards import LABELS_FILE, shard_paths

# Sampling (seeded per generate call) at a high temperature makes every clip's row different, so a row generated
# in another batch composition or twice would show.
GEN = GenerationOptions(max_new_tokens=10, do_sample=True, temperature=3.0, seed=0)
CLI_GEN = ["--max-new-tokens", "10", "--sample", "--temperature", "3.0", "--seed", "0"]
BATCH = 3
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def job(manifest, model_dir, out, **kw) -> LabelJob:
    options = {"batch_size": BATCH, "num_workers": 0, "gen": GEN, "progress": False, **kw}
    return LabelJob(manifest=str(manifest), model=str(model_dir), out=str(out), **options)


@pytest.fixture(scope="module")
def straight(emoworld, model_dir, tmp_path_factory):
    """labels.jsonl bytes of one uninterrupted single-process run over the 12 EmoWorld clips."""
    out = tmp_path_factory.mktemp("straight")
    assert label_main(job(emoworld, model_dir, out, num_workers=1)) == 0
    return (out / LABELS_FILE).read_bytes()


def ids_of(data: bytes) -> list[str]:
    return [json.loads(line)["id"] for line in data.splitlines()]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "affectllm.cli", "label", *args]


def test_every_clip_gets_one_row_in_manifest_order(straight, emoworld):
    clips = read_manifest(emoworld)[0]
    rows = [json.loads(line) for line in straight.splitlines()]
    assert [r["id"] for r in rows] == [c.id for c in clips]
    assert all(r["error"] is None for r in rows)
    assert len({r["raw"] for r in rows}) > 1  # sampled: rows differ, so the equality tests below can fail


def test_decoding_in_the_main_process_gives_the_same_rows(straight, emoworld, model_dir, tmp_path):
    assert label_main(job(emoworld, model_dir, tmp_path, num_workers=0)) == 0
    assert (tmp_path / LABELS_FILE).read_bytes() == straight


def test_sigkill_at_seeded_points_and_resume_gives_the_straight_rows(straight, emoworld, model_dir, tmp_path):
    out = tmp_path / "job"
    args = cli(str(emoworld), "--model", str(model_dir), "--out", str(out), "--batch-size", str(BATCH),
               "--num-workers", "1", "--no-progress", *CLI_GEN)
    shard = out / "shards" / "shard-00000.jsonl"
    for kill_after in sorted(random.Random(0).sample(range(1, 10), 2)):
        proc = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None and (not shard.exists() or shard.read_bytes().count(b"\n") < kill_after):
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # What a kill inside the shard's write() leaves: the start of a row without its end.
        with open(shard, "ab") as fh:
            fh.write(straight.splitlines(keepends=True)[-1][:40])
    assert subprocess.run(args, env=ENV, capture_output=True).returncode == 0
    assert (out / LABELS_FILE).read_bytes() == straight
    written = [line for p in shard_paths(out) for line in p.read_bytes().splitlines()]
    assert sorted(ids_of(b"\n".join(written))) == sorted(ids_of(straight))  # no duplicate, no missing id


def test_bad_clips_get_error_rows_and_retry_errors_redoes_only_them(emoworld, model_dir, tmp_path):
    clips = read_manifest(emoworld)[0][:4]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x01 not a video")
    rows = [{"id": c.id, "video": c.video, "transcript": c.transcript} for c in clips]
    rows[1:1] = [{"id": "missing", "video": str(tmp_path / "nope.mp4")}, {"id": "broken", "video": str(broken)}]
    manifest = tmp_path / "mixed.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    roots = [str(emoworld.parent)]  # the clips' media stay in the EmoWorld folder
    assert label_main(job(manifest, model_dir, out, allow_roots=roots)) == 1
    first = {r["id"]: r for r in map(json.loads, (out / LABELS_FILE).read_text().splitlines())}
    assert list(first) == [r["id"] for r in rows]
    assert [i for i, r in first.items() if r["error"]] == ["missing", "broken"]
    assert "nope.mp4" in first["missing"]["error"] and "broken.mp4" in first["broken"]["error"]
    shutil.copy(clips[0].video, broken)  # the user fixes one file
    # without --retry-errors nothing is redone
    assert label_main(job(manifest, model_dir, out, allow_roots=roots)) == 1
    assert json.loads((out / LABELS_FILE).read_text().splitlines()[2])["error"]
    assert label_main(job(manifest, model_dir, out, retry_errors=True, allow_roots=roots)) == 1
    again = {r["id"]: r for r in map(json.loads, (out / LABELS_FILE).read_text().splitlines())}
    assert again["broken"]["error"] is None and again["missing"]["error"]
    assert all(again[i] == first[i] for i in first if i not in ("missing", "broken"))


def test_another_fingerprint_is_refused_unless_fresh(straight, emoworld, model_dir, tmp_path, capsys):
    assert label_main(job(emoworld, model_dir, tmp_path)) == 0
    assert label_main(job(emoworld, model_dir, tmp_path, question="Is the person happy?")) == 2
    err = capsys.readouterr().err
    assert "fingerprint" in err and "--fresh" in err
    assert (tmp_path / LABELS_FILE).read_bytes() == straight  # nothing mixed in
    assert label_main(job(emoworld, model_dir, tmp_path, question="Is the person happy?", fresh=True)) == 0
    assert (tmp_path / LABELS_FILE).read_bytes() != straight


def test_openai_batch_requests_in_and_responses_out(straight, emoworld, model_dir, tmp_path):
    from affectllm.data.prompts import QUESTIONS
    from affectllm.serve.openai_batch import write_requests

    clips = read_manifest(emoworld)[0]
    requests = tmp_path / "requests.jsonl"
    write_requests(clips, QUESTIONS["describe"], "tiny", requests)
    out = tmp_path / "out"
    assert label_main(job(requests, model_dir, out, input_format="openai-batch", output_format="openai-batch")) == 0
    assert (out / LABELS_FILE).read_bytes() == straight  # same clips, transcripts and question: the same rows
    responses = [json.loads(line) for line in (out / "batch_output.jsonl").read_text().splitlines()]
    rows = [json.loads(line) for line in straight.splitlines()]
    assert [r["custom_id"] for r in responses] == [c.id for c in clips]
    assert [r["response"]["body"]["choices"][0]["message"]["content"] for r in responses] == [r["raw"] for r in rows]


def test_openai_batch_request_problems_name_their_line(tmp_path):
    from affectllm.serve.openai_batch import read_requests

    path = tmp_path / "req.jsonl"
    good = {"custom_id": "a", "body": {"messages": [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": "clips/a.mp4"}}, {"type": "text", "text": "How?"}]}]}}
    bad = {"custom_id": "b", "body": {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "x.png"}}]}]}}
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n{not json\n")
    clips, questions, problems = read_requests(path)
    assert [c.id for c in clips] == ["a"] and clips[0].video == str(tmp_path / "clips" / "a.mp4")
    assert questions == {"a": "How?"}
    assert problems[0].startswith(f"{path}:2:") and "image_url" in problems[0]
    assert problems[1].startswith(f"{path}:3:")


@pytest.mark.slow
def test_two_torchrun_processes_give_the_single_process_rows(straight, emoworld, model_dir, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "affectllm.cli", "label",
                           str(emoworld), "--model", str(model_dir), "--out", str(tmp_path), "--batch-size",
                           str(BATCH), "--num-workers", "1", "--no-progress", *CLI_GEN],
                          env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.name for p in shard_paths(tmp_path)] == ["shard-00000.jsonl", "shard-00001.jsonl"]
    assert all(p.stat().st_size > 0 for p in shard_paths(tmp_path))  # both ranks labeled their share
    assert (tmp_path / LABELS_FILE).read_bytes() == straight


@pytest.mark.slow
def test_ray_data_on_a_local_two_cpu_instance_gives_the_single_process_rows(straight, emoworld, model_dir,
                                                                            tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is the optional `ray` extra: pip install -e '.[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert label_main(job(emoworld, model_dir, tmp_path, engine="ray", ray_workers=2)) == 0
    finally:
        ray.shutdown()
    assert [p.name for p in shard_paths(tmp_path)] == ["shard-ray.jsonl"]
    assert (tmp_path / LABELS_FILE).read_bytes() == straight


def test_batch_responses_read_back_as_label_rows(tmp_path):
    from affectllm.evaluation.posthoc import ConfidenceMap
    from affectllm.serve.openai_batch import read_responses, row_to_response, write_responses

    ours = {"id": "a", "labels": ["sad"], "confidence": 0.5, "confidence_raw": 0.6, "explanation": "AU15.",
            "aus": ["AU15"], "raw": "<think>AU15.</think><answer>sad</answer><confidence>0.60</confidence>",
            "error": None, "model": "cal", "fingerprint": "f"}
    vllm = row_to_response(ours)
    del vllm["response"]["body"]["affectllm"]  # what vLLM writes: the text only
    vllm["custom_id"] = "b"
    failed = {"id": "batch_req_x", "custom_id": "c", "response": None, "error": {"message": "timeout"}}
    path = tmp_path / "out.jsonl"
    write_responses([ours], path)
    with open(path, "a") as fh:
        fh.write(json.dumps(vllm) + "\n" + json.dumps(failed) + "\n" + '{"custom_id": "d"}\n')
    rows, problems = read_responses(path, ConfidenceMap("platt", a=0.0, b=0.0))
    assert rows[0] == ours  # our own line: the row it carries
    assert rows[1]["id"] == "b" and rows[1]["labels"] == ["sad"] and rows[1]["aus"] == ["AU15"]
    assert rows[1]["confidence_raw"] == pytest.approx(0.6) and rows[1]["confidence"] == pytest.approx(0.5)
    assert rows[2]["error"] == "timeout"
    assert rows[3]["error"] == "no completion in the response" and problems == []


def test_engine_ray_without_ray_says_what_to_install(emoworld, model_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(RuntimeError, match=r"pip install -e '\.\[ray\]'"):
        label_main(job(emoworld, model_dir, tmp_path, engine="ray"))


def test_a_shard_ending_in_a_deeply_nested_line_is_repaired_not_a_crash(tmp_path):
    from affectllm.serve.shards import repair_shard

    good = json.dumps({"id": "a", "labels": []}) + "\n"
    shard = tmp_path / "00000.jsonl"
    shard.write_text(good + "[" * 100_000 + "]" * 100_000 + "\n")  # RecursionError in json.loads
    assert repair_shard(shard) > 0
    assert shard.read_text() == good
