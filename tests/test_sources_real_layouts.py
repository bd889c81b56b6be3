"""Importers on fixtures laid out as the real releases are, as ../shared/reviews/datasets.md quotes them.

Each test names the public file or script the layout comes from; media files are empty placeholders.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from affectllm.cli import main as cli_main
from affectllm.data.manifest import read_manifest
from affectllm.data.sources import LayoutError, load_dataset, parse_options


def _touch(root: Path, *rels: str) -> None:
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"\0")


def _text(root: Path, rel: str, text: str) -> Path:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(text, encoding="utf-8")
    return root / rel


def _jsonl(root: Path, rel: str, rows: list[dict]) -> None:
    _text(root, rel, "".join(json.dumps(r) + "\n" for r in rows))


def _by_id(result) -> dict:
    return {c.id: c for c in result.clips}


def test_ovmerd_plus_as_affectgpt_distributes_it(tmp_path: Path) -> None:
    # AffectGPT config.py: ovmerdplus-process/ovlabel.csv (name, openset) and subtitle_eng.csv (name, sentence)
    root = tmp_path / "ovmerdplus-process"
    _touch(root, "video/samplenew3_00000019.mp4")
    _text(root, "ovlabel.csv", "name,openset\nsamplenew3_00000019,\"['anxious', 'Worried']\"\n")
    _text(root, "subtitle_eng.csv", "name,sentence\nsamplenew3_00000019,Where did you put it?\n")
    (clip,) = load_dataset("ovmerd_plus", root).clips
    assert clip.id == "ovmerd_plus/samplenew3_00000019" and clip.labels == ["anxious", "worried"]
    assert clip.transcript == "Where did you put it?" and clip.video.endswith(".mp4")


def test_mer2023_english_never_returns_the_chinese_asr_column(tmp_path: Path) -> None:
    # MER2023 transcription.csv: name, sentence, where sentence is the Chinese ASR (MERTools main-baseline.py)
    _touch(tmp_path, "train/a.mp4")
    _text(tmp_path, "train-label.csv", "name,discrete,valence\na,happy,1\n")
    _text(tmp_path, "transcription.csv", "name,sentence\na,你好\n")
    res = load_dataset("mer2023", tmp_path)
    assert res.clips[0].transcript is None
    assert [p.field for p in res.problems] == ["english"] and "language=chinese" in res.problems[0].hint
    assert load_dataset("mer2023", tmp_path, language="chinese").clips[0].transcript == "你好"


def test_fea20k_pairs_each_jsonl_with_its_image_folder(tmp_path: Path) -> None:
    # Facial-R1 grpo_emotion.sh: DISFA-Train-3.jsonl <-> DISFA-Train/, RAF-DB-Train.jsonl <-> RAF-DB-Train/
    _jsonl(tmp_path, "DISFA-Train-3.jsonl", [{"id": "d1", "image": "SN001/0001.jpg", "AUs": ["AU12"], "labels": []}])
    _jsonl(tmp_path, "RAF-DB-Train.jsonl", [{"id": "r1", "image": "train_0001.jpg", "labels": ["happiness"]}])
    (tmp_path / "DISFA-Train").mkdir()
    (tmp_path / "RAF-DB-Train").mkdir()
    got = _by_id(load_dataset("fea20k", tmp_path))
    assert got["fea20k/d1"].video == str(tmp_path / "DISFA-Train" / "SN001/0001.jpg")
    assert got["fea20k/r1"].video == str(tmp_path / "RAF-DB-Train" / "train_0001.jpg")
    explicit = _by_id(
        load_dataset("fea20k", tmp_path, images=tmp_path / "imgs", image_folders="DISFA-Train-3.jsonl:D")
    )
    assert explicit["fea20k/d1"].video == str(tmp_path / "imgs" / "D" / "SN001/0001.jpg")
    with pytest.raises(ValueError, match="JSONL:FOLDER"):
        load_dataset("fea20k", tmp_path, image_folders="DISFA-Train-3.jsonl")


def test_fea20k_reads_stage1_train_and_tests_once_each(tmp_path: Path) -> None:
    # the README: stage1/2/3 files; FEA-20K = stage 1 train + the test files
    _jsonl(tmp_path, "stage1/FABA-Train.jsonl", [{"id": "a", "image": "a.jpg", "labels": ["anger"]}])
    _jsonl(tmp_path, "stage2/FABA-Train.jsonl", [{"id": "a2", "image": "a.jpg", "labels": ["anger"]}])
    _jsonl(tmp_path, "stage1/FABA-Test.jsonl", [{"id": "t", "image": ["t1.jpg", "t2.jpg"], "labels": ["fear"]}])
    res = load_dataset("fea20k", tmp_path)
    ids = [c.id for c in res.clips]
    assert sorted(ids) == ["fea20k/a", "fea20k/t"], "a JSONL in a sub-folder is read once, stage 2 left out"
    test = _by_id(res)["fea20k/t"]
    assert test.split == "test" and test.video.endswith("t1.jpg") and len(test.extra["images"]) == 2
    assert [p.field for p in res.problems] == ["file"] and "stage 2" in res.problems[0].message
    assert len(load_dataset("fea20k", tmp_path, stages=(1, 2)).clips) == 3


def test_sims_original_release_layout(tmp_path: Path) -> None:
    # MERTools MERBench/toolkit/preprocess/sims.py: metadata/sentiment/label_M.csv, *_index.csv, Translation.csv
    _text(tmp_path, "metadata/sentiment/label_M.csv", "video_id,clip_id,label\nvideo_0001,1,-0.8\nvideo_0001,2,0.4\n")
    _text(tmp_path, "metadata/sentiment/label_A.csv", "video_id,clip_id,label\nvideo_0001,1,-0.6\n")
    _text(tmp_path, "metadata/train_index.csv", "video_id,clip_id\nvideo_0001,1\n")
    _text(tmp_path, "metadata/test_index.csv", "video_id,clip_id\nvideo_0001,2\n")
    _text(tmp_path, "metadata/Translation.csv", "video_id,clip_id,Chinese,English\nvideo_0001,1,不好,Not good\n")
    _touch(tmp_path, "Raw/video_0001/0001.mp4")
    got = _by_id(load_dataset("sims", tmp_path))
    one = got["sims/video_0001/0001"]
    assert one.valence == -0.8 and one.split == "train" and one.transcript == "不好" and one.labels == ["negative"]
    assert one.video.endswith("Raw/video_0001/0001.mp4") and one.extra["label_a"] == -0.6
    assert got["sims/video_0001/0002"].split == "test"
    assert load_dataset("sims", tmp_path, language="english").clips[0].transcript == "Not good"
    with pytest.raises(LayoutError, match="label_M.csv"):
        load_dataset("sims", tmp_path / "Raw")


def test_mmsa_validation_alias(tmp_path: Path) -> None:
    _text(tmp_path, "label.csv", "video_id,clip_id,text,label,annotation,mode\nv,1,ok,0.5,Positive,validation\n")
    assert load_dataset("simsv2", tmp_path).clips[0].split == "val"


def test_meld_final_videos_test_files(tmp_path: Path) -> None:
    header = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\n"
    for name in ("train", "dev"):
        _text(tmp_path, f"{name}_sent_emo.csv", header)
    _text(
        tmp_path,
        "test_sent_emo.csv",
        header + "1,Hi,Joey,Joy,positive,93,6,1,1,a,b\n2,Yo,Ross,Joy,positive,93,7,1,1,a,b\n",
    )
    folder = "output_repeated_splits_test"
    _touch(tmp_path, f"{folder}/final_videos_testdia93_utt6.mp4", f"{folder}/dia93_utt7.mp4")
    _touch(tmp_path, f"{folder}/final_videos_testdia93_utt7.mp4")
    got = _by_id(load_dataset("meld", tmp_path))
    assert got["meld/test/dia93_utt6"].video.endswith("final_videos_testdia93_utt6.mp4"), "the only file there is"
    both = got["meld/test/dia93_utt7"]
    assert both.video.endswith("/dia93_utt7.mp4") and both.extra["alt_video"].endswith(
        "final_videos_testdia93_utt7.mp4"
    )


def test_iemocap_4class_protocol(tmp_path: Path) -> None:
    lines = "".join(
        f"[{i}.0 - {i}.5]\tSes01F_impro01_F00{i}\t{code}\t[2.5000, 2.5000, 2.5000]\n"
        for i, code in enumerate(["exc", "hap", "fru", "xxx", "neu"])
    )
    _text(tmp_path, "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt", "% header\n" + lines)
    res = load_dataset("iemocap", tmp_path, protocol="4class", test_session=1)
    assert [c.emotion for c in res.clips] == ["happy", "happy", "neutral"]
    assert res.clips[0].extra["original_label"] == "excited" and "original_label" not in res.clips[1].extra
    assert [p.field for p in res.problems] == ["emotion"] and res.problems[0].message.startswith("2 utterances")
    assert [c.emotion for c in load_dataset("iemocap", tmp_path).clips][:2] == ["excited", "happy"]


def test_layout_errors_name_what_was_looked_for_and_found(tmp_path: Path) -> None:
    _touch(tmp_path, "videos/1.mp4", "README.txt")
    for name, looked_for in [("dfew", "Clip/original"), ("ovmerd_plus", "ovlabel.csv"), ("fea20k", r"\*.jsonl")]:
        with pytest.raises(LayoutError, match=f"looked for .*{looked_for}.*found: README.txt, videos/, videos/1.mp4"):
            load_dataset(name, tmp_path)


def test_options_use_the_dotlist_grammar_and_the_loader_signature() -> None:
    assert parse_options("ravdess", ["test_actors=21,22"]) == {"test_actors": (21, 22)}
    assert parse_options("ravdess", ["test_actors=[21,22]"]) == {"test_actors": (21, 22)}
    assert parse_options("iemocap", ["keep_unlabelled=true", "test_session=2"]) == {
        "keep_unlabelled": True,
        "test_session": 2,
    }
    assert parse_options("disfa", ["camera=Right", "window=1.5"]) == {"camera": "Right", "window": 1.5}
    with pytest.raises(ValueError, match="no option 'folds' .*options: fold"):
        parse_options("dfew", ["folds=2"])
    with pytest.raises(ValueError, match="not key=value"):
        parse_options("dfew", ["fold"])


@pytest.mark.parametrize("order", ["readme", "out_first", "out_between"])
def test_cli_import_accepts_options_in_either_order(tmp_path: Path, order: str) -> None:
    root, out = tmp_path / "rav", tmp_path / "m.jsonl"
    _touch(root, "Actor_01/03-01-05-01-02-01-01.wav", "Actor_02/03-01-05-01-02-01-02.wav")
    argv = {
        "readme": ["data", "import", "ravdess", str(root), "--out", str(out), "test_actors=2"],
        "out_first": ["data", "import", "--out", str(out), "ravdess", str(root), "test_actors=2"],
        "out_between": ["data", "import", "ravdess", "--out", str(out), str(root), "test_actors=2"],
    }[order]
    assert cli_main(argv) == 0
    clips, problems = read_manifest(out)
    assert problems == [] and [c.split for c in clips] == ["train", "test"]
