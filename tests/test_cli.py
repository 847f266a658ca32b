import json
import subprocess
import sys
from pathlib import Path

import pytest

from omnidrive_r1.cli import build_parser, main

HELP_MUST_MENTION = {
    (): ["data", "models", "rollout"],
    ("data",): ["toydrive", "check"],
    ("data", "toydrive"): ["--out", "--frames", "--seed", "--camera-size", "--test-fraction"],
    ("data", "check"): ["--drivelmm", "--deepeyes", "--images-root", "--skip-bad", "--sources"],
    ("models", "tiny"): ["--out", "--seed"],
    ("models", "toy-base"): ["--out", "--seed"],
    ("models", "vllm-dir"): ["recipe", "--out", "trl vllm-serve"],
    ("rollout",): ["--model", "--data", "--n", "--engine", "--max-completion-length"],
    ("eval",): ["--model", "--results", "--official-script", "--no-tools", "--overwrite", "--judge-url"],
    ("train",): ["recipe", "key=value", "resume_from_checkpoint=true", "--plan"],
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


@pytest.mark.parametrize("argv, message", [
    (["eval", "--model", "m", "--limit", "-3"], "--limit: must be at least 1, got -3"),
    (["eval", "--model", "m", "--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
    (["data", "toydrive", "--out", "x", "--frames", "0"], "--frames: must be at least 1"),
    (["data", "toydrive", "--out", "x", "--test-fraction", "2"], "must be a fraction"),
])
def test_bad_numbers_are_refused_by_the_parser(argv, message, capsys):
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2 and message in capsys.readouterr().err


def test_our_own_errors_print_one_line_and_exit_2_without_a_traceback(tmp_path, capsys, tiny_policy_dir,
                                                                     toydrive_dir):
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: [1, 2\n")
    # no toy base needed, and data that exists (a fresh clone has no outputs/toydrive)
    toy = ["recipes/toy/stage1.yaml", "lab={}", f"model_name_or_path={tiny_policy_dir}",
           f"data.path={toydrive_dir / 'deepeyes' / 'train.parquet'}"]
    for argv, message in [
        (["train", str(bad)], "not valid YAML"),
        (["train", "recipes/toy/stage1.yaml", "lab={}", f"model_name_or_path={tmp_path / 'no' / 'model'}"],
         "is neither a model directory nor a hub id"),
        (["train", "recipes/toy/stage1.yaml", "lab={}", "model_name_or_path=no/such-model-here",
          f"output_dir={tmp_path / 'run'}"], "no/such-model-here: cannot read its config.json"),
        (["train", *toy, "rewards=[{name: nope}]", f"output_dir={tmp_path / 'run'}"], "unknown reward 'nope'"),
        (["train", *toy, "rewards=[{path: nowhere.py:fn}]", f"output_dir={tmp_path / 'run'}"], "reward file not found"),
        (["train", *toy, "tools=[{name: zoom_in, max_tool_call: 2}]", f"output_dir={tmp_path / 'run'}"],
         "takes no option"),
        (["train", *toy, "vision_attention=fused", f"output_dir={tmp_path / 'run'}"],
         "vision_attention: 'fused'; it is 'per_window'"),
        (["eval", "--results", str(tmp_path / "r.json")], "--results needs --data"),
    ]:
        assert main(argv) == 2, argv  # an exception escaping main would fail the test with its traceback
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, (argv, err)


def test_models_vllm_dir_writes_the_recipes_image_resolution(tiny_policy_dir, tmp_path, capsys):
    from transformers import AutoProcessor

    out = tmp_path / "served"
    assert main(["models", "vllm-dir", "recipes/toy/stage1.yaml", f"model_name_or_path={tiny_policy_dir}",
                 "image_min_pixels=3136", "image_max_pixels=50176", "--out", str(out)]) == 0
    assert "trl vllm-serve --model" in capsys.readouterr().out
    size = AutoProcessor.from_pretrained(out).image_processor.size
    assert (size["shortest_edge"], size["longest_edge"]) == (3136, 50176)  # the recipe's, not the checkpoint's
    assert (out / "model.safetensors").is_symlink() and (out / "config.json").exists()


@pytest.mark.parametrize("benchmark, extra", [("drivelmm", ["--no-tools", "--mcq-only"]), ("vstar", []),
                                              ("hrbench", ["--no-tools"])])
def test_eval_from_the_command_line_on_its_default_data(benchmark, extra, tiny_policy_dir, tmp_path, monkeypatch):
    """`omnidrive-r1 eval` without --data: the lab's toydrive set in the benchmark's format, generated on first use
    (under outputs/ of the working folder, here a temporary one)."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "e"
    assert main(["eval", "--model", str(tiny_policy_dir), "--benchmark", benchmark, "--limit", "2", "--max-turns",
                 "1", "--max-completion-length", "8", "--out", str(out), *extra]) == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    # the first 2 items (V*: each in every rotation of its options; --mcq-only: those of them with options)
    assert 0 < summary["rows_evaluated"] == len(rows) <= (8 if benchmark == "vstar" else 2)
    data = Path(summary["data"])  # the default set, written under outputs/ where the user stands
    assert data.parts[0] == "outputs" and (tmp_path / data).exists()
    assert summary["tools"] is ("--no-tools" not in extra)
