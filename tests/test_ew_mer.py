"""The MER-UniBench EW metric on hand-computed cases, both table versions, and the `affectllm metric ew` entry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from affectllm import metrics as m
from affectllm.evaluation.label_file import ew_main
from affectllm.taxonomy import get_taxonomy

WHEEL_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "emotion_wheel"
needs_mer = pytest.mark.skipif(not WHEEL_DIR.is_dir(), reason=f"MER emotion-wheel tables not found at {WHEEL_DIR}")

# A: joyful vs happy -> same cluster on all 5 wheels: (1, 1).  B: {sad} vs {sad, mad}: (1, 0.5).
# C: neutral -> dropped on every wheel: skipped.  D: empty prediction vs fear: (0, 0).
# E: happy vs fear: (0, 0) with the 2026 forms; with the legacy forms `fear` is a form of `fearless`, which lands on
#    happy (wheel 2) and joyful (wheel 3), so E is (1, 1) there.
PREDS = [["joyful"], ["sad"], ["happy"], [], ["happy"]]
GOLDS = [["happy"], ["sad", "angry"], ["neutral"], ["fear"], ["fear"]]


@needs_mer
def test_mer2026_level1_hand_computed() -> None:
    out = m.ew_scores(PREDS, GOLDS, get_taxonomy(WHEEL_DIR, "mer2026"))
    # every wheel: n=4, P=(1+1+0+0)/4, R=(1+.5+0+0)/4, F=2PR/(P+R)=3/7
    assert out["precision"] == pytest.approx(0.5) and out["recall"] == pytest.approx(0.375)
    assert out["f"] == pytest.approx(3 / 7)
    assert [w["n"] for w in out["per_wheel"].values()] == [4] * 5


@needs_mer
def test_mer2025_legacy_forms_hand_computed() -> None:
    out = m.ew_scores(PREDS, GOLDS, get_taxonomy(WHEEL_DIR, "mer2025"))
    f_hit = 2 * 0.75 * 0.625 / (0.75 + 0.625)  # wheels 2, 3: P=(1+1+0+1)/4, R=(1+.5+0+1)/4
    assert out["per_wheel"]["wheel2"]["f"] == pytest.approx(f_hit) == out["per_wheel"]["wheel3"]["f"]
    assert out["per_wheel"]["wheel4"]["f"] == pytest.approx(3 / 7)
    assert out["f"] == pytest.approx((3 * 3 / 7 + 2 * f_hit) / 5)
    assert out["precision"] == pytest.approx((3 * 0.5 + 2 * 0.75) / 5)


@needs_mer
def test_level2_and_hit_and_reward() -> None:
    tax = get_taxonomy(WHEEL_DIR, "mer2026")
    # level 2: happy -> (joyful, content, cheerful, acceptance, proud); joyful -> (accepted, accepted, ...): the
    # alphabetical candidate order sends `joyful` to `accepted` on wheels 1-2, so 3 wheels of 5 agree.
    assert m.ew_sample_f(["joyful"], ["happy"], tax, "level2") == pytest.approx(3 / 5)
    assert m.hit_rate([["joyful"], ["happy"], ["sad"]], ["happy", "neutral", "fear"], tax) == pytest.approx(0.5)
    assert m.ew_sample_f(["happy"], ["neutral"], tax) is None


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@needs_mer
def test_cli_joins_on_id_and_reads_mer_strings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gold = _write(tmp_path / "gold.jsonl", [{"id": f"c{i}", "labels": g} for i, g in enumerate(GOLDS)])
    pred_rows = [{"id": f"c{i}", "labels": ", ".join(p)} for i, p in enumerate(PREDS) if i != 3]
    pred_rows[0]["labels"] = "[joyful]"
    pred = _write(tmp_path / "pred.jsonl", [*reversed(pred_rows), {"id": "extra", "labels": ["sad"]}])
    assert ew_main(pred, gold, str(WHEEL_DIR), "mer2026", "level1") == 0
    out = json.loads(capsys.readouterr().out)
    assert (
        out["f"] == pytest.approx(3 / 7)
        and out["table"] == "mer2026"
        and set(out["per_wheel"]) == {f"wheel{k}" for k in range(1, 6)}
    )
    assert out["missing_ids"] == {"count": 1, "examples": ["c3"]} and out["extra_ids"]["examples"] == ["extra"]
    assert ew_main(pred, gold, str(WHEEL_DIR), "mer2025", "level1") == 0
    assert json.loads(capsys.readouterr().out)["f"] > out["f"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"id": "a"}\nnot json\n', "gold.jsonl:2: invalid JSON"),
        ('{"labels": []}\n', "needs an 'id'"),
        ('{"id": 1}\n{"id": "1"}\n', "repeated"),
        ("", "no rows"),
    ],
)
def test_cli_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str) -> None:
    (tmp_path / "gold.jsonl").write_text(content)
    pred = _write(tmp_path / "pred.jsonl", [{"id": "a", "labels": []}])
    assert ew_main(pred, str(tmp_path / "gold.jsonl"), None, "mer2026", "level1") == 2
    assert message in capsys.readouterr().err


def test_cli_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gold = _write(tmp_path / "gold.jsonl", [{"id": "a", "labels": ["happy"]}])
    assert ew_main(gold, gold, str(tmp_path), "mer2026", "level1") == 2  # tables missing
    assert ew_main(gold, gold, str(tmp_path), "mer2030", "level1") == 2
    assert ew_main(gold, gold, None, "mer2026", "level3") == 2
    assert ew_main(str(tmp_path / "nope.jsonl"), gold, None, "mer2026", "level1") == 2
    assert "error" in capsys.readouterr().err


def test_cli_builtin_taxonomy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gold = _write(tmp_path / "gold.jsonl", [{"id": "a", "labels": ["happy"]}, {"id": "b", "emotion": "sad"}])
    pred = _write(tmp_path / "pred.jsonl", [{"id": "a", "labels": "[joyful]"}, {"id": "b", "labels": "angry, sad"}])
    assert ew_main(pred, gold, None, "mer2026", "level1") == 0
    out = json.loads(capsys.readouterr().out)
    # a: (1, 1); b: {anger, sadness} vs {sadness}: (0.5, 1) -> P=.75, R=1 on each of the 3 wheels
    assert out["taxonomy"] == "affectllm" and out["table"] is None and out["f"] == pytest.approx(2 * 0.75 / 1.75)
