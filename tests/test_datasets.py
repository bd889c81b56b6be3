"""Every source-dataset loader on a tiny fixture written in the official release layout (empty media files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from affectllm.data.manifest import read_manifest
from affectllm.data.sources import LayoutError, load_dataset, prep_dataset_main
from affectllm.registry import DATASETS

EXPECTED = {
    "mer2023",
    "mer2024",
    "mer2025",
    "mer_caption_plus",
    "ovmerd_plus",
    "emer",
    "mafw",
    "dfew",
    "ferv39k",
    "fea20k",
    "ravdess",
    "cremad",
    "iemocap",
    "meld",
    "mosi",
    "mosei",
    "sims",
    "simsv2",
    "disfa",
    "bp4d",
}
CARDS = Path(__file__).resolve().parents[1] / "data_cards"


def _touch(root: Path, *rels: str) -> None:
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"\0")


def _text(root: Path, rel: str, text: str, encoding: str = "utf-8") -> Path:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(text, encoding=encoding)
    return root / rel


def _by_id(result) -> dict:
    return {c.id: c for c in result.clips}


def test_every_dataset_is_registered_with_a_card() -> None:
    assert EXPECTED <= set(DATASETS.names())
    for name in EXPECTED:
        assert (CARDS / f"{DATASETS.get(name).card}.md").exists(), name


def test_cards_name_every_loader_option_and_say_what_is_verified() -> None:
    import inspect

    for name in EXPECTED:
        loader = DATASETS.get(name)
        card = (CARDS / f"{loader.card}.md").read_text()
        assert "Verified against public files" in card and "Still a guess" in card, name
        for option in list(inspect.signature(loader).parameters)[1:]:
            assert f"{option}=" in card or f"`{option}`" in card, f"{name}: option {option} not on its card"


def test_mer2025_track1_and_captions(tmp_path: Path) -> None:
    _touch(tmp_path, "video/s1.mp4", "audio/s1.wav", "video/s2.mp4")
    _text(tmp_path, "subtitle_chieng.csv", "name,chinese,english\ns1,你好,Hello there\ns2,,\n")
    _text(tmp_path, "track1_train_disdim.csv", "name,discrete,valence\ns1,happy,2.5\ns2,Worried,-5\nghost,sad,0\n")
    res = _by_id(load_dataset("mer2025", tmp_path))
    s1, s2 = res["mer2025/s1"], res["mer2025/s2"]
    assert s1.labels == ["happy"] and s1.valence == 0.5 and s1.transcript == "Hello there"
    assert s1.video.endswith("s1.mp4") and s1.audio.endswith("s1.wav") and s1.split == "train"
    assert s2.emotion == "worried" and s2.valence == -1.0 and s2.transcript is None and s2.audio is None
    problems = load_dataset("mer2025", tmp_path).problems
    assert [(p.line, p.field) for p in problems] == [(4, "name")] and "ghost" in problems[0].message
    assert load_dataset("mer2025", tmp_path, language="chinese").clips[0].transcript == "你好"

    _text(tmp_path, "track2_train_mercaptionplus.csv", "name,openset\ns1,\"['Happy', 'relieved']\"\n")
    _text(tmp_path, "track3_train_mercaptionplus.csv", 'name,reason\ns1,"She smiles (AU12), so happy."\n')
    cap = load_dataset("mer_caption_plus", tmp_path).clips[0]
    assert cap.labels == ["happy", "relieved"] and cap.caption.startswith("She smiles")
    _text(tmp_path, "track2_train_ovmerd.csv", 'name,openset\ns2,"worried, anxious"\n')
    assert load_dataset("ovmerd_plus", tmp_path).clips[0].labels == ["worried", "anxious"]


def test_mer2023_npz_and_csv(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    _touch(tmp_path, "video/a.avi", "audio/a.wav", "video/t1.mp4")
    # as MERBench's label-6way.npz: string labels; test3 has no valence (MERTools' -10 sentinel)
    np.savez(
        tmp_path / "label-6way.npz",
        train_corpus={"a": {"emo": "happy", "val": -2.5}},
        test3_corpus={"t1": {"emo": "sad", "val": -10}},
    )
    got = _by_id(load_dataset("mer2023", tmp_path))
    clip = got["mer2023/a"]
    assert clip.labels == ["happy"] and clip.valence == -0.5 and clip.split == "train" and clip.video.endswith(".avi")
    assert got["mer2023/t1"].labels == ["sad"] and got["mer2023/t1"].valence is None, "-10 is no valence, not -1"
    _text(tmp_path, "test2-label.csv", "name,discrete,valence\na,sad,1\n")
    assert load_dataset("mer2023", tmp_path).clips[0].split == "test2"
    _text(tmp_path, "label-disdim.csv", "name,discrete,valence\na,angry,0\n")
    assert load_dataset("mer2024", tmp_path).clips[0].emotion == "angry"


def test_mer_npz_placeholder_test_labels_are_not_labels(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    _touch(tmp_path, "video/a.mp4", "video/b.mp4", "video/c.mp4")
    # as MERTools' preprocess/mer2024.py and MER2025's track1_label_6way.npz: every test label set to neutral
    np.savez(
        tmp_path / "track1_label_6way.npz",
        train_corpus={"a": {"emo": "neutral", "val": 0.0}},
        test1_corpus={"b": {"emo": "neutral", "val": -10}, "c": {"emo": "neutral", "val": -10}},
    )
    res = load_dataset("mer2025", tmp_path)
    got = _by_id(res)
    assert got["mer2025/a"].labels == ["neutral"], "a neutral train label is a label"
    assert got["mer2025/b"].labels is None and got["mer2025/b"].emotion is None and got["mer2025/b"].split == "test1"
    assert [p.field for p in res.problems] == ["emo"] and "placeholder" in res.problems[0].message


def test_emer_v1_and_v2_as_affectgpt_ships_them(tmp_path: Path) -> None:
    _touch(tmp_path, "video/e1.mp4", "video/e2.mp4")
    # AffectGPT EMER/dataset-v1/gt-eng.csv: plural column names
    _text(
        tmp_path,
        "dataset-v1/gt-eng.csv",
        'names,emotions,subtitles,reasons\ne1,"worried, sad",I lost it.,The brows are lowered.\n',
    )
    _text(tmp_path, "dataset-v1/gt-chi.csv", "names,emotions,subtitles,reasons\ne1,担心,我丢了,眉头紧锁\n")
    _text(tmp_path, "dataset-v2/final-EMER-reason.csv", "name,chinese,english\ne2,她笑了,She smiles.\n")
    (v1,) = load_dataset("emer", tmp_path).clips
    assert v1.id == "emer/e1" and v1.caption == "The brows are lowered." and v1.labels == ["worried", "sad"]
    assert v1.transcript == "I lost it." and v1.video.endswith("e1.mp4")
    assert load_dataset("emer", tmp_path, language="chinese").clips[0].caption == "眉头紧锁"
    (v2,) = load_dataset("emer", tmp_path, version="v2").clips
    assert v2.id == "emer/e2" and v2.caption == "She smiles." and v2.labels is None
    with pytest.raises(LayoutError, match="gt-eng.csv.*found: e1.mp4"):
        load_dataset("emer", tmp_path / "video")


def test_mafw_single_and_compound(tmp_path: Path) -> None:
    _touch(tmp_path, "data/clips/00001.mp4", "data/clips/00002.mp4")
    _text(tmp_path, "Train & Test Set/single/no_caption/set_1/train.txt", "00001.mp4 anger\n")
    _text(tmp_path, "Train & Test Set/single/no_caption/set_1/test.txt", "00002.mp4 helplessness\n\n")
    res = _by_id(load_dataset("mafw", tmp_path))
    assert res["mafw/00001"].labels == ["anger"] and res["mafw/00002"].split == "test"
    _text(tmp_path, "Train & Test Set/compound/no_caption/set_2/train.txt", "00001.mp4 anger_disgust\n")
    _text(tmp_path, "Train & Test Set/compound/no_caption/set_2/test.txt", "00002.mp4 fear\n")
    comp = _by_id(load_dataset("mafw", tmp_path, fold=2, subset="compound"))
    assert comp["mafw/00001"].labels == ["anger", "disgust"] and comp["mafw/00001"].emotion is None
    with pytest.raises(LayoutError, match="set_5"):
        load_dataset("mafw", tmp_path, fold=5)


def test_dfew_reads_the_unpadded_original_clip_not_the_face_crops(tmp_path: Path) -> None:
    # the release: Clip/original/7.mp4 (unpadded) next to Clip/clip_224x224_avi/00007.avi (224x224 face crops)
    _touch(
        tmp_path, "Clip/original/7.mp4", "Clip/clip_224x224_avi/00007.avi", "Clip/clip_224x224/00007/00007_00001.jpg"
    )
    _text(tmp_path, "EmoLabel_DataSplit/train(single-labeled)/set_1.csv", "video_name,label\n7,5\n9,0\n")
    _text(tmp_path, "EmoLabel_DataSplit/test(single-labeled)/set_1.csv", "video_name,label\n12,7\n")
    res = load_dataset("dfew", tmp_path)
    got = _by_id(res)
    assert got["dfew/00007"].labels == ["surprise"] and got["dfew/00007"].video == str(
        tmp_path / "Clip/original/7.mp4"
    )
    assert got["dfew/00012"].emotion == "fear" and got["dfew/00012"].video.endswith("Clip/original/12.mp4")
    assert [(p.line, p.field) for p in res.problems] == [(3, "label")]


def test_ferv39k_frame_folders(tmp_path: Path) -> None:
    # lines as in MAE-DFER's lists: Scene/Label/NNNN Label
    _touch(tmp_path, "2_ClipsforFaceCrop/Crime/Angry/0063/00001.jpg", "2_ClipsforFaceCrop/Action/Happy/0267.mp4")
    _text(tmp_path, "4_setups/All_scenes/train_All.csv", "Crime/Angry/0063 Angry\n")
    _text(tmp_path, "4_setups/All_scenes/test_All.csv", "Action/Happy/0267 Happy\nAction/Bored/0003 Bored\n")
    res = load_dataset("ferv39k", tmp_path)
    got = _by_id(res)
    crime = got["ferv39k/Crime/Angry/0063"]
    assert crime.video.endswith("Crime/Angry/0063") and crime.labels == ["angry"] and crime.extra["scene"] == "Crime"
    assert got["ferv39k/Action/Happy/0267"].video.endswith("0267.mp4")
    assert [(p.line, p.field) for p in res.problems] == [(2, "label")]


def test_fea20k_jsonl(tmp_path: Path) -> None:
    rows = [
        {
            "id": "x1",
            "dataset": "RAF-AU",
            "image": "raf/1.jpg",
            "AUs": ["AU04", "AU9"],
            "labels": ["Disgust"],
            "description": "Nose wrinkled.",
        }
    ]
    _text(tmp_path, "fea20k_test.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n{bad\n")
    res = load_dataset("fea20k", tmp_path, images=tmp_path / "imgs")
    clip = res.clips[0]
    assert clip.aus == ["AU4", "AU9"] and clip.emotion == "disgust" and clip.split == "test"
    assert clip.video == str(tmp_path / "imgs" / "raf" / "1.jpg") and clip.caption == "Nose wrinkled."
    assert [p.line for p in res.problems] == [2]


def test_ravdess_filename_codes(tmp_path: Path) -> None:
    _touch(
        tmp_path,
        "Actor_12/01-01-06-02-02-01-12.mp4",
        "Actor_12/02-01-06-02-02-01-12.mp4",
        "Audio_Speech_Actors_01-24/Actor_12/03-01-06-02-02-01-12.wav",
        "Actor_21/03-02-03-01-01-02-21.wav",
        "Actor_21/readme.txt",
    )
    res = _by_id(load_dataset("ravdess", tmp_path, test_actors=(21,)))
    av = res["ravdess/01-06-02-02-01-12"]
    assert av.labels == ["fearful"] and av.video.endswith("01-01-06-02-02-01-12.mp4") and av.audio.endswith(".wav")
    assert av.transcript == "Dogs are sitting by the door." and av.extra["gender"] == "female" and av.split == "train"
    song = res["ravdess/02-03-01-01-02-21"]
    assert song.emotion == "happy" and song.video is None and song.split == "test"
    assert song.extra["vocal_channel"] == "song"


def test_cremad_intended_and_votes(tmp_path: Path) -> None:
    _touch(tmp_path, "AudioWAV/1001_DFA_ANG_XX.wav", "VideoFlash/1001_DFA_ANG_XX.flv", "AudioWAV/1002_IEO_HAP_HI.wav")
    res = _by_id(load_dataset("cremad", tmp_path))
    assert res["cremad/1001_DFA_ANG_XX"].labels == ["angry"] and res["cremad/1001_DFA_ANG_XX"].video.endswith(".flv")
    assert res["cremad/1002_IEO_HAP_HI"].transcript == "It's eleven o'clock."
    _text(
        tmp_path,
        "processedResults/summaryTable.csv",
        ",FileName,VoiceVote,VoiceLevel,FaceVote,FaceLevel,MultiModalVote,MultiModalLevel\n"
        "1,1001_DFA_ANG_XX,A:N,50,A,80,A,90\n2,1002_IEO_HAP_HI,H,60,H,70,H,80\n",
    )
    voted = _by_id(load_dataset("cremad", tmp_path, labels="voice"))
    assert voted["cremad/1001_DFA_ANG_XX"].labels == ["angry", "neutral"]
    assert voted["cremad/1001_DFA_ANG_XX"].emotion is None


def test_iemocap_sessions(tmp_path: Path) -> None:
    base = "IEMOCAP_full_release/Session1"
    _text(
        tmp_path,
        f"{base}/dialog/EmoEvaluation/Ses01F_impro01.txt",
        "% header\n\n[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]\n"
        "C-E2:\tNeutral;\t()\n\n[10.0 - 11.5]\tSes01F_impro01_M001\txxx\t[1.0000, 5.0000, 3.0000]\n",
    )
    _text(
        tmp_path,
        f"{base}/dialog/transcriptions/Ses01F_impro01.txt",
        "Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.\n",
    )
    _touch(tmp_path, f"{base}/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav")
    res = load_dataset("iemocap", tmp_path / "IEMOCAP_full_release", test_session=1)
    (clip,) = res.clips
    assert clip.labels == ["neutral"] and clip.transcript == "Excuse me." and clip.valence == -0.25
    assert clip.split == "test" and clip.extra["dialog_start"] == 6.2901 and clip.extra["speaker"] == "F"
    assert "start" not in clip.extra  # the wav is already cut: no decoding window
    assert clip.audio.endswith("Ses01F_impro01_F000.wav") and clip.video is None
    assert [(p.line, p.field) for p in res.problems] == [(6, "emotion")]
    assert len(load_dataset("iemocap", tmp_path, keep_unlabelled=True).clips) == 2


def test_meld_splits_and_encoding(tmp_path: Path) -> None:
    header = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\n"
    _text(
        tmp_path,
        "MELD.Raw/train_sent_emo.csv",
        header + "1,Oh my God heâ€™s lost it,Joey,Surprise,negative,0,0,3,19,00:14:38,00:14:40\n",
    )
    _text(tmp_path, "MELD.Raw/dev_sent_emo.csv", header + "1,Caf\xe9 time,Ross,Joy,positive,1,2,1,1,a,b\n", "cp1252")
    _text(tmp_path, "MELD.Raw/test_sent_emo.csv", header)
    _touch(tmp_path, "MELD.Raw/train/train_splits/dia0_utt0.mp4")
    res = _by_id(load_dataset("meld", tmp_path))
    train = res["meld/train/dia0_utt0"]
    assert train.labels == ["surprise"] and train.transcript == "Oh my God he’s lost it" and train.split == "train"
    assert train.video.endswith("train_splits/dia0_utt0.mp4") and train.extra["sentiment"] == "negative"
    dev = res["meld/val/dia1_utt2"]
    assert dev.transcript == "Café time" and dev.video.endswith("dia1_utt2.mp4")


@pytest.mark.parametrize(("name", "label", "valence"), [("mosi", "-1.5", -0.5), ("sims", "-0.6", -0.6)])
def test_mmsa_layout(tmp_path: Path, name: str, label: str, valence: float) -> None:
    _text(
        tmp_path,
        "label.csv",
        "video_id,clip_id,text,label,label_T,label_A,label_V,annotation,mode\n"
        f"vidA,3,so bad,{label},-1,-0.8,0,Negative,valid\nvidB,1,ok,x,0,0,0,Neutral,train\n",
    )
    _touch(tmp_path, "Raw/vidA/3.mp4")
    res = load_dataset(name, tmp_path)
    (clip,) = res.clips
    assert clip.valence == valence and clip.labels == ["negative"] and clip.split == "val"
    assert clip.video.endswith("Raw/vidA/3.mp4") and clip.transcript == "so bad" and clip.extra["label_a"] == -0.8
    assert [(p.line, p.field) for p in res.problems] == [(3, "label")]
    assert load_dataset("mosei" if name == "mosi" else "simsv2", tmp_path).clips[0].split == "val"


def test_disfa_windows(tmp_path: Path) -> None:
    lines = "\n".join(f"{i},{3 if i <= 40 else 0}" for i in range(1, 81))
    _text(tmp_path, "ActionUnit_Labels/SN001/SN001_au12.txt", lines)
    _text(tmp_path, "ActionUnit_Labels/SN001/SN001_au4.txt", "\n".join(f"{i},1" for i in range(1, 81)))
    _touch(tmp_path, "Videos_LeftCamera/LeftVideoSN001_comp.avi")
    clips = load_dataset("disfa", tmp_path, test_subjects=("SN001",)).clips
    assert [c.aus for c in clips] == [["AU12"], []]
    assert clips[0].extra["start"] == 0.0 and clips[0].extra["end"] == 2.0 and clips[1].extra["end"] == 4.0
    assert clips[0].extra["au_intensity"] == {"AU4": 0.2, "AU12": 0.6} and clips[0].split == "test"
    assert clips[0].video.endswith("LeftVideoSN001_comp.avi")
    # the release's right-camera folder has no "s": Video_RightCamera/
    _touch(tmp_path, "Video_RightCamera/RightVideoSN001_comp.avi")
    right = load_dataset("disfa", tmp_path, camera="Right").clips[0]
    assert right.video == str(tmp_path / "Video_RightCamera/RightVideoSN001_comp.avi")


def test_bp4d_occurrence(tmp_path: Path) -> None:
    rows = ["0,1,2,6,12"] + [f"{i},0,9,1,{1 if i % 2 else 0}" for i in range(1, 61)]
    _text(tmp_path, "AUCoding/AU_OCC/F001_T1.csv", "\n".join(rows) + "\n")
    (tmp_path / "Sequences/F001/T1").mkdir(parents=True)
    clips = load_dataset("bp4d", tmp_path).clips
    assert [c.aus for c in clips] == [["AU6", "AU12"], ["AU6", "AU12"]]
    assert clips[0].extra["task_emotion"] == "happiness" and clips[0].video.endswith("Sequences/F001/T1")
    assert "AU2" not in clips[0].extra["au_share"]


def test_layout_error_names_expected_file(tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match="train_sent_emo.csv"):
        load_dataset("meld", tmp_path)
    with pytest.raises(LayoutError, match="data_cards/dfew.md"):
        load_dataset("dfew", tmp_path)


def test_prep_dataset_main_writes_a_checkable_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "rav"
    _touch(root, "Actor_01/03-01-05-01-02-01-01.wav", "Actor_02/03-01-05-01-02-01-02.wav")
    out = tmp_path / "out" / "ravdess.jsonl"
    assert prep_dataset_main("ravdess", str(root), str(out), options=["test_actors=2"]) == 0
    clips, problems = read_manifest(out)
    assert problems == [] and [c.split for c in clips] == ["train", "test"]
    assert Path(clips[0].audio).exists() and not json.loads(out.read_text().splitlines()[0])["audio"].startswith("/")
    assert "wrote 2 rows" in capsys.readouterr().out
    capsys.readouterr()
    assert prep_dataset_main("nope", str(root), str(out)) == 2
    assert capsys.readouterr().out.startswith("datasets registry: unknown name 'nope'"), "no KeyError quotes"
    assert prep_dataset_main("dfew", str(root), str(out)) == 1
    assert prep_dataset_main("ravdess", str(root), str(out), options=["bad"]) == 2
