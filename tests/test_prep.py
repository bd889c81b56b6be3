"""``affectllm data prep`` (affectllm.inputs.prep): rows, arrays, per-item errors, resume, retry, feature hook."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from skimage import data

from affectllm.inputs.prep import PREP_FILE, PrepConfig, load_done, prep_main
from affectllm.media.aus import AU_CODES, FEATURE_DIM
from affectllm.types import DecodedClip
from tests.media_fixtures import write_corrupt, write_video

ROOT = Path(__file__).resolve().parents[1]
QUIET = PrepConfig(progress=False)
NO_FACES = PrepConfig(progress=False, faces=False)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("media")
    write_video(d / "face.mp4", seconds=1.0, fps=10, size=(320, 320), audio=True, image=data.astronaut())
    write_video(d / "plain.mp4", seconds=1.0, fps=10, size=(64, 96))
    write_corrupt(d / "bad.mp4")
    return d


def _manifest(path: Path, rows: list[dict], extra: str = "") -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + extra)
    return path


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / PREP_FILE).read_text().splitlines()]


def _media_rows(media: Path, n_face: int = 1) -> list[dict]:
    rows = [{"id": f"face{i}", "video": str(media / "face.mp4")} for i in range(n_face)]
    return rows + [
        {"id": "plain", "video": str(media / "plain.mp4")},
        {"id": "bad", "video": str(media / "bad.mp4")},
        {"id": "gone", "video": "missing.mp4"},
    ]


def test_prep_writes_rows_and_arrays_and_records_bad_items(media: Path, tmp_path: Path, capsys) -> None:
    manifest = _manifest(tmp_path / "m.jsonl", _media_rows(media), extra="{not json\n")
    rc = prep_main(str(manifest), str(tmp_path / "out"), QUIET)
    assert rc == 1, "bad items make the exit status non-zero; the batch still finished"
    assert "m.jsonl:5: error: json: invalid JSON" in capsys.readouterr().err
    rows = {r["id"]: r for r in _rows(tmp_path / "out")}
    assert sorted(rows) == ["bad", "face0", "gone", "plain"]
    face = rows["face0"]
    assert face["error"] is None and face["frames"] == 8 and face["faces_found"] == 8 and face["audio"]
    assert set(face["aus_estimated"]) == set(AU_CODES)
    assert all(0.0 <= v <= 1.0 for v in face["aus_estimated"].values())
    assert face["aus_estimated"]["AU12"] > 0.3
    with np.load(tmp_path / "out" / face["arrays"]) as z:
        assert z["frames"].shape == (8, 320, 320, 3) and z["faces"].shape == (8, 112, 112, 3)
        assert z["au_features"].shape == (8, FEATURE_DIM) and z["face_found"].all()
        assert z["audio"].dtype == np.float32 and int(z["sample_rate"]) == 16000
    plain = rows["plain"]
    assert plain["error"] is None and plain["faces_found"] == 0 and plain["aus_estimated"] == {}
    assert not plain["audio"]
    assert "bad.mp4" in rows["bad"]["error"] and "re-encode" in rows["bad"]["error"]
    assert "missing.mp4" in rows["gone"]["error"] and rows["gone"]["arrays"] is None
    assert not list((tmp_path / "out" / "arrays").glob(".*tmp*")), "no temporary files left behind"


def test_resume_skips_done_ids_and_repairs_a_torn_line(media: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    done = {"id": "face0", "frames": 8, "faces_found": 8, "aus_estimated": {}, "error": None, "marker": 1}
    (out / PREP_FILE).write_text(json.dumps(done) + "\n" + '{"id": "plain", "fra')
    manifest = _manifest(tmp_path / "m.jsonl", _media_rows(media))
    prep_main(str(manifest), str(out), QUIET)
    rows = _rows(out)
    assert [r["id"] for r in rows].count("face0") == 1 and rows[0]["marker"] == 1, "a done id is not redone"
    assert sorted(r["id"] for r in rows) == ["bad", "face0", "gone", "plain"]
    before = (out / PREP_FILE).read_text()
    assert prep_main(str(manifest), str(out), QUIET) == 1
    assert (out / PREP_FILE).read_text() == before, "a finished folder is left as it is"


def test_retry_errors_redoes_failed_items(media: Path, tmp_path: Path) -> None:
    rows = [{"id": "late", "video": "late.mp4"}]
    manifest = _manifest(tmp_path / "m.jsonl", rows)
    assert prep_main(str(manifest), str(tmp_path / "out"), NO_FACES) == 1
    (tmp_path / "late.mp4").write_bytes((media / "plain.mp4").read_bytes())
    assert prep_main(str(manifest), str(tmp_path / "out"), NO_FACES) == 1, "errors kept"
    retry = PrepConfig(progress=False, faces=False, retry_errors=True)
    assert prep_main(str(manifest), str(tmp_path / "out"), retry) == 0
    rows = _rows(tmp_path / "out")
    assert len(rows) == 1 and rows[0]["error"] is None and rows[0]["frames"] == 8


def mean_frame(clip: DecodedClip) -> dict[str, np.ndarray]:
    """A stand-in encoder for the feature-cache hook."""
    return {"mean_frame": clip.frames.mean(0).astype(np.float32)}


def test_feature_hook_caches_per_clip(media: Path, tmp_path: Path) -> None:
    manifest = _manifest(tmp_path / "m.jsonl", [{"id": "p", "video": str(media / "plain.mp4")}])
    assert prep_main(str(manifest), str(tmp_path / "out"), NO_FACES, feature_fn=mean_frame) == 0
    row = _rows(tmp_path / "out")[0]
    with np.load(tmp_path / "out" / row["features"]) as z:
        assert z["mean_frame"].shape == (64, 96, 3)
    config = PrepConfig(progress=False, faces=False, cache_features=True, model="tiny")
    assert prep_main(str(manifest), str(tmp_path / "out2"), config) == 2


def test_arrays_from_reuses_an_earlier_prep_without_decoding(media: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """--arrays-from: the clips an earlier folder prepared are linked and featurized, never decoded again; the rest
    (a clip it failed, a clip it lacks) go through the decoder as usual."""
    import affectllm.media.pipeline as pipeline

    rows = [{"id": "p", "video": str(media / "plain.mp4")}, {"id": "bad", "video": str(media / "bad.mp4")}]
    manifest = _manifest(tmp_path / "m.jsonl", rows)
    assert prep_main(str(manifest), str(tmp_path / "prep"), NO_FACES) == 1  # "bad" fails
    direct = tmp_path / "direct"
    assert prep_main(str(manifest), str(direct), NO_FACES, feature_fn=mean_frame) == 1
    decoded: list[str] = []
    real = pipeline.analyze_clip
    monkeypatch.setattr(pipeline, "analyze_clip", lambda clip, *a, **k: decoded.append(clip.id) or real(clip, *a, **k))
    more = _manifest(tmp_path / "m2.jsonl", [*rows, {"id": "q", "video": str(media / "plain.mp4")}])
    config = PrepConfig(progress=False, faces=False, arrays_from=str(tmp_path / "prep"))
    assert prep_main(str(more), str(tmp_path / "feat"), config, feature_fn=mean_frame) == 1
    assert sorted(decoded) == ["bad", "q"], "only clips the earlier folder lacks (or failed) are decoded"
    got, want = ({r["id"]: r for r in _rows(d)} for d in (tmp_path / "feat", direct))
    for key in ("frames", "audio", "backend", "arrays", "features", "error"):
        assert got["p"][key] == want["p"][key], key
    assert os.path.samefile(tmp_path / "feat" / got["p"]["arrays"], tmp_path / "prep" / got["p"]["arrays"])
    with np.load(tmp_path / "feat" / got["p"]["features"]) as a, np.load(direct / want["p"]["features"]) as b:
        np.testing.assert_array_equal(a["mean_frame"], b["mean_frame"])
    assert got["q"]["features"] and got["bad"]["error"]
    capsys.readouterr()
    assert prep_main(str(more), str(tmp_path / "x"), PrepConfig(progress=False, arrays_from=str(tmp_path))) == 2
    assert "no prep.jsonl there" in capsys.readouterr().err
    same = PrepConfig(progress=False, faces=False, arrays_from=str(tmp_path / "feat"))
    assert prep_main(str(more), str(tmp_path / "feat"), same) == 2
    assert "is the output folder" in capsys.readouterr().err


def test_missing_manifest_and_busy_folder(tmp_path: Path) -> None:
    assert prep_main(str(tmp_path / "none.jsonl"), str(tmp_path / "out"), QUIET) == 2
    manifest = _manifest(tmp_path / "m.jsonl", [])
    (tmp_path / "out").mkdir()
    with open(tmp_path / "out" / ".prep.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert prep_main(str(manifest), str(tmp_path / "out"), NO_FACES) == 2


def test_load_done_drops_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / PREP_FILE
    path.write_text('{"id": "a", "error": null}\n{"id": "b", "error": "x"}\n{"id": "c"')
    assert sorted(load_done(path)) == ["a", "b"]
    assert path.read_text().endswith('"x"}\n')
    assert sorted(load_done(path, drop_errors=True)) == ["a"]
    assert path.read_text() == '{"id": "a", "error": null}\n'


@pytest.mark.slow
def test_killed_parallel_run_resumes(media: Path, tmp_path: Path) -> None:
    manifest = _manifest(tmp_path / "m.jsonl", _media_rows(media, n_face=8))
    out = tmp_path / "out"
    code = ("from affectllm.inputs.prep import PrepConfig, prep_main; "
            f"prep_main({str(manifest)!r}, {str(out)!r}, PrepConfig(workers=2))")
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    journal, deadline = out / PREP_FILE, time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.exists() and journal.read_text().count("\n") >= 1:
            break
        time.sleep(0.02)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    first = journal.read_text()
    assert first.count("\n") >= 1
    assert prep_main(str(manifest), str(out), PrepConfig(workers=2, progress=False)) == 1
    final = journal.read_text()
    assert final.startswith(first[: first.rfind("\n") + 1]), "rows written before the kill are kept as they were"
    ids = [r["id"] for r in _rows(out)]
    assert sorted(ids) == sorted(r["id"] for r in _media_rows(media, n_face=8)), "every id exactly once"
    assert {r["id"] for r in _rows(out) if r["error"]} == {"bad", "gone"}


def test_cli_arguments_reach_prep(media: Path, tmp_path: Path) -> None:
    from affectllm.cli import main

    manifest = _manifest(tmp_path / "m.jsonl", [{"id": "p", "video": str(media / "plain.mp4")}])
    argv = ["data", "prep", str(manifest), "--out", str(tmp_path / "o"), "--no-faces", "--no-progress",
            "--num-frames", "4", "--backend", "pyav", "--max-side", "48", "--allow-root", str(media)]
    assert main(argv) == 0
    row = _rows(tmp_path / "o")[0]
    assert row["frames"] == 4 and row["backend"] == "pyav"
    with np.load(tmp_path / "o" / row["arrays"]) as z:
        assert z["frames"].shape == (4, 32, 48, 3)
    again = ["data", "prep", str(manifest), "--out", str(tmp_path / "o2"), "--no-faces", "--no-progress",
             "--arrays-from", str(tmp_path / "o"), "--allow-root", str(media)]
    assert main(again) == 0  # the earlier folder's 4 frames at 48 px stand (its options, not the defaults)
    assert _rows(tmp_path / "o2")[0]["frames"] == 4


def test_cli_defaults_are_the_prep_config_defaults() -> None:
    """The CLI writes no default of its own: parsing nothing but the manifest and --out gives PrepConfig()."""
    import dataclasses

    from affectllm.cli import build_parser

    args = build_parser().parse_args(["data", "prep", "m.jsonl", "--out", "o"])
    assert PrepConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(PrepConfig)}) == PrepConfig()


def test_face_analyzer_is_keyed_by_its_config(monkeypatch) -> None:
    """A second prep in one process with another face size gets its own analyzer, not the first one."""
    from affectllm.inputs import prep
    from affectllm.media import faces

    monkeypatch.setattr(faces, "FaceAnalyzer", lambda config: ("analyzer", config.crop_size))
    monkeypatch.setattr(prep, "_ANALYZERS", {})
    settings = [prep.PrepSettings(out="o", decode=PrepConfig().decode_config(), face_size=s) for s in (112, 64, 112)]
    assert [prep._analyzer(s) for s in settings] == [("analyzer", 112), ("analyzer", 64), ("analyzer", 112)]
    assert len(prep._ANALYZERS) == 2


def test_dead_worker_row_has_every_key_of_a_normal_row(media: Path) -> None:
    from affectllm.inputs.prep import PrepSettings, _row, process_clip
    from affectllm.types import Clip

    settings = PrepSettings(out="unused", decode=PrepConfig().decode_config(), faces=False)
    normal = process_clip(Clip(id="gone", video="missing.mp4"), settings)
    assert set(_row("x", error="worker failed")) == set(normal)


def test_load_done_reports_a_bad_middle_line_and_keeps_the_rows_after_it(tmp_path: Path, caplog) -> None:
    path = tmp_path / PREP_FILE
    path.write_text('{"id": "a"}\n{broken\n{"id": "b"}\n{"id": "c"}')  # c: parses, but its newline never came
    assert sorted(load_done(path)) == ["a", "b"]
    assert f"{path}:2: invalid JSON" in caplog.text
    assert path.read_text() == '{"id": "a"}\n{broken\n{"id": "b"}\n', "only the torn last line is cut"


def test_clip_store_reports_unreadable_prep_lines(tmp_path: Path, caplog) -> None:
    from affectllm.inputs.store import ClipStore

    (tmp_path / PREP_FILE).write_text('{"id": "a", "arrays": "arrays/a.npz", "error": null}\n{"id": "b", "arr')
    store = ClipStore(str(tmp_path))
    assert list(store._prep) == ["a"]
    assert f"{tmp_path / PREP_FILE}:2: torn last line" in caplog.text


def test_prep_keeps_a_rows_time_window(media: Path, tmp_path: Path) -> None:
    """Prep reads manifests with the shared reader, so a row's start/end window reaches the decoder."""
    row = {"id": "win", "video": str(media / "plain.mp4"), "start": 0.5, "end": 0.9}
    manifest = _manifest(tmp_path / "m.jsonl", [row])
    assert prep_main(str(manifest), str(tmp_path / "out"), NO_FACES) == 0
    (out,) = _rows(tmp_path / "out")
    with np.load(tmp_path / "out" / out["arrays"]) as z:
        times = z["frame_times"]
    assert len(times) > 0 and times.min() >= 0.5 - 1e-6 and times.max() < 0.9
