"""The console script: every command has --help, errors are one clear line, commands reach their main()."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from affectllm.cli import build_parser, main


def _commands(parser, prefix=()):
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, sub in action.choices.items():
                yield (*prefix, name)
                yield from _commands(sub, (*prefix, name))


COMMANDS = sorted(set(_commands(build_parser())))


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_that_says_what_it_does(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert f"affectllm {' '.join(command)}" in text and len(text.splitlines()) >= 3


def test_console_script_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "affectllm.cli", "--help"], capture_output=True, text=True, check=True)
    for command in ("demo", "data", "model"):
        assert command in out.stdout


def test_data_check_through_the_cli(tmp_path, capsys):
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    good.write_text(json.dumps({"id": "a", "transcript": "I am so happy", "labels": ["happy"]}) + "\n")
    bad.write_text(json.dumps({"id": "a", "transcript": "hi"}) + "\n" + json.dumps({"id": "b", "valence": 3}) + "\n")
    assert main(["data", "check", str(good), "--no-probe"]) == 0
    assert main(["data", "check", str(bad), "--no-probe"]) == 1
    assert "bad.jsonl:2" in capsys.readouterr().out.replace("\n", "")


def test_metric_ew_through_the_cli(tmp_path, capsys):
    gold, pred = tmp_path / "gold.jsonl", tmp_path / "pred.jsonl"
    gold.write_text(json.dumps({"id": "a", "transcript": "x", "labels": ["happy"]}) + "\n"
                    + json.dumps({"id": "b", "transcript": "y", "labels": ["sad"]}) + "\n")
    pred.write_text(json.dumps({"id": "a", "labels": ["joyful"]}) + "\n"
                    + json.dumps({"id": "b", "labels": "[angry]"}))
    assert main(["metric", "ew", "--pred", str(pred), "--gold", str(gold)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["f"] == pytest.approx(0.5) and out["n"] == 2
