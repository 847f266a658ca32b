import json
import subprocess
import sys

import pytest

from omnidrive_r1.cli import build_parser, main

HELP_MUST_MENTION = {
    (): ["data", "models", "rollout"],
    ("data",): ["toydrive", "check"],
    ("data", "toydrive"): ["--out", "--frames", "--seed", "--camera-size", "--test-fraction"],
    ("data", "check"): ["--drivelmm", "--deepeyes", "--images-root", "--skip-bad", "--sources"],
    ("models", "tiny"): ["--out", "--seed"],
    ("rollout",): ["--model", "--data", "--n", "--max-new-tokens"],
}


@pytest.mark.parametrize("words", list(HELP_MUST_MENTION))
def test_every_command_has_help_with_its_options(words, capsys):
    with pytest.raises(SystemExit) as done:
        main([*words, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for option in HELP_MUST_MENTION[words]:
        assert option in out


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "omnidrive_r1.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "zoom-in tool" in out.stdout


def test_data_toydrive_then_check(tmp_path, capsys):
    assert main(["data", "toydrive", "--out", str(tmp_path), "--frames", "2", "--camera-size", "320x180"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["train"] == 8 and info["test"] == 8
    assert (tmp_path / "drivelmm" / "train.json").exists()
    assert main(["data", "check", "--drivelmm", str(tmp_path / "drivelmm" / "train.json")]) == 0
    assert "kept 8 of 8 rows" in capsys.readouterr().out


def test_bad_arguments_and_bad_data_give_clear_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["data", "toydrive", "--out", "x", "--camera-size", "big"])
    assert "WIDTHxHEIGHT" in capsys.readouterr().err
    assert main(["data", "check", "--drivelmm", str(tmp_path / "missing.json")]) == 2
    assert "not found" in capsys.readouterr().err
