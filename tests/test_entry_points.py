"""Every command the README and docs/ name, run once from the command line on tiny inputs: the console script's
subcommands, each `python -m` entry point, and the lab's make targets at their smallest (`make bench --smoke`,
`make toy-report` and `make ablate` on one cell). A command a doc names that no test runs fails the first test.

Each run is a process of its own, as a user starts it; the lab's runs start the product's commands in turn
(`train`, `eval`, `models toy-base`), so they are exercised from the command line too. The lab's runs take
minutes each (marked `lab_run`, as is the rehearsal in tests/test_rehearse.py): `make test-lab` runs them,
`make test` (CI) leaves them out; a broken import in the lab still fails `make test` (tests/test_structure.py
imports every module and keeps imports at the top)."""

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
HAS_VLLM = importlib.util.find_spec("vllm") is not None
# a toy base built in seconds (it learns nothing: these runs check the machinery, not the claim) and one step
SMALL_BASE = ["lab.toy_base.steps={reading: 1, context: 1, pointing: 1, protocol: 1}", "lab.toy_base.clip_steps=1",
              "lab.toy_base.attempts=1"]
ONE_STEP = ["max_steps=1", "save_steps=1", "lab.toydrive.frames=4", "rollouts_every=1", *SMALL_BASE]

# each command the docs may name -> the test that runs it from the command line (this file unless named)
RUN_BY = {
    "omnidrive-r1 train": "test_toy_report_on_one_cell_from_the_command_line",
    "omnidrive-r1 eval": "test_eval_from_the_command_line_without_tools_and_from_a_results_file",
    "omnidrive-r1 view": "test_view_and_rollout_from_the_command_line",
    "omnidrive-r1 rollout": "test_view_and_rollout_from_the_command_line",
    "omnidrive-r1 recipes": "test_recipes_and_data_from_the_command_line",
    "omnidrive-r1 data toydrive": "test_recipes_and_data_from_the_command_line",
    "omnidrive-r1 data check": "test_recipes_and_data_from_the_command_line",
    "omnidrive-r1 models tiny": "test_recipes_and_data_from_the_command_line",
    "omnidrive-r1 models toy-base": "test_toy_report_on_one_cell_from_the_command_line",
    "omnidrive-r1 models vllm-dir": "tests/test_cli.py::test_models_vllm_dir_writes_the_recipes_image_resolution",
    "python -m omnidrive_r1.bench": "test_bench_smoke_runs_every_part_to_the_end",
    "python -m omnidrive_r1.bench.steps": "test_bench_smoke_runs_every_part_to_the_end",
    "python -m omnidrive_r1.bench.paper": "test_the_paper_scale_bench_starts_and_names_its_parts",
    "python -m omnidrive_r1.toy.report": "test_toy_report_on_one_cell_from_the_command_line",
    "python -m omnidrive_r1.toy.ablate": "test_ablate_on_one_cell_from_the_command_line",
    "python -m omnidrive_r1.rehearse": "tests/test_rehearse.py::test_zero3_two_ranks_lora_vllm_colocated_stage1_then_stage2",
}
COMMAND = re.compile(r"(omnidrive-r1 (?:data|models) [a-z][a-z-]+|omnidrive-r1 [a-z][a-z-]+|"
                     r"python -m omnidrive_r1(?:\.[a-z_]+)*)")


def _cli(*args: str, cwd: Path = ROOT, env: dict | None = None, python: Path | None = None, timeout: int = 900):
    """`omnidrive-r1 ARGS` (or `python -m MODULE ARGS` when args[0] is `-m`) in a process of its own."""
    argv = [str(python or sys.executable), *(args if args[0] == "-m" else ("-m", "omnidrive_r1.cli", *args))]
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    assert proc.returncode == 0, f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def lab_folder(tmp_path_factory):
    """A working folder of its own (the lab writes outputs/ where it stands) and a model cache shared by the lab's
    tests: the small base ablate needs is the one toy-report built."""
    folder = tmp_path_factory.mktemp("lab")
    return folder, {"OMNIDRIVE_CACHE": str(folder / "cache"), "WANDB_MODE": "offline"}


def test_the_docs_name_no_command_that_no_test_runs():
    texts = [ROOT / "README.md", ROOT / "Makefile", *sorted((ROOT / "docs").glob("*.md"))]
    named = {m.group(1) for path in texts for m in COMMAND.finditer(path.read_text())}
    named = {n for n in named if n != "omnidrive-r1 models" and n != "omnidrive-r1 data"}
    assert named, "no command found in the docs: the pattern is wrong"
    assert named <= set(RUN_BY), f"commands the docs name that no test runs: {sorted(named - set(RUN_BY))}"
    for command, test in RUN_BY.items():
        path, _, name = test.rpartition("::")
        source = (ROOT / path if path else Path(__file__)).read_text()
        assert f"def {name}(" in source, f"{command}: {test} does not exist"


def test_recipes_and_data_from_the_command_line(tmp_path):
    assert "toy/stage1.yaml" in _cli("recipes")
    _cli("data", "toydrive", "--out", str(tmp_path / "toydrive"), "--frames", "2", "--seed", "5")
    report = _cli("data", "check", "--drivelmm", str(tmp_path / "toydrive" / "drivelmm" / "test.json"))
    assert "rows" in report
    out = _cli("models", "tiny", "--out", str(tmp_path / "tiny"))
    assert (tmp_path / "tiny" / "policy" / "config.json").exists() and "policy" in out


def test_eval_from_the_command_line_without_tools_and_from_a_results_file(tiny_policy_dir, toydrive_dir, tmp_path):
    data = toydrive_dir / "drivelmm" / "test.json"
    _cli("eval", "--model", str(tiny_policy_dir), "--data", str(data), "--no-tools", "--limit", "2",
         "--max-completion-length", "8", "--out", str(tmp_path / "no-tools"))
    summary = json.loads((tmp_path / "no-tools" / "summary.json").read_text())
    assert summary["tools"] is False and summary["rows_evaluated"] == 2
    rows = json.loads(data.read_text())[:3]
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"idx": r["idx"], "question": r["question"],
                                    "llm-response": f"Final Answer: {r['final_answer']}"} for r in rows]))
    _cli("eval", "--results", str(results), "--data", str(data), "--out", str(tmp_path / "scored"))
    scored = json.loads((tmp_path / "scored" / "summary.json").read_text())
    assert scored["rows_evaluated"] == 3


def test_view_and_rollout_from_the_command_line(tiny_policy_dir, toydrive_dir, tmp_path):
    data = toydrive_dir / "drivelmm" / "test.json"
    out = _cli("rollout", "--model", str(tiny_policy_dir), "--data", str(data), "--n", "2", "--max-completion-length",
               "8", "--out", str(tmp_path / "rollout"))
    assert len((tmp_path / "rollout" / "rollouts.jsonl").read_text().splitlines()) == 2 and out
    _cli("eval", "--model", str(tiny_policy_dir), "--data", str(data), "--limit", "2", "--max-completion-length", "8",
         "--out", str(tmp_path / "eval"))
    _cli("view", str(tmp_path / "eval"))
    assert "<html" in (tmp_path / "eval" / "view.html").read_text()[:500].lower()


@pytest.mark.slow
@pytest.mark.skipif(not HAS_VLLM, reason="vLLM's CPU build runs in .venv-vllm (make test's second pass)")
def test_rollout_with_vllm_from_the_command_line(tiny_policy_dir, toydrive_dir, tmp_path):
    data = toydrive_dir / "drivelmm" / "test.json"
    _cli("rollout", "--model", str(tiny_policy_dir), "--data", str(data), "--n", "2", "--max-completion-length", "8",
         "--engine", "vllm", "--out", str(tmp_path / "rollout"), env={"VLLM_CPU_KVCACHE_SPACE": "1"})
    assert len((tmp_path / "rollout" / "rollouts.jsonl").read_text().splitlines()) == 2


def test_the_paper_scale_bench_starts_and_names_its_parts():
    """Its figures need a GPU (the paper's architecture in bf16): here it starts and says what it measures."""
    out = _cli("-m", "omnidrive_r1.bench.paper", "--help")
    assert "policy" in out and "clip" in out and "--lora" in out


@pytest.mark.slow
@pytest.mark.lab_run
def test_bench_smoke_runs_every_part_to_the_end(tmp_path):
    from omnidrive_r1.bench.__main__ import BENCHES

    parts = [n for n in BENCHES if n != "vllm_vs_hf" and (n != "vllm_step" or VLLM_PYTHON.exists())]
    out = _cli("-m", "omnidrive_r1.bench", "--smoke", "--out", str(tmp_path), "--only", *parts,
               env={"WANDB_MODE": "offline"})
    assert f"make bench --smoke (figures mean nothing): {len(parts)} benchmarks" in out
    for name in parts:
        assert json.loads((tmp_path / f"{name}.json").read_text())["name"] == name
    assert (tmp_path / "scaling.png").exists() and (tmp_path / "runs" / "toy-step.log").exists()


@pytest.mark.slow
@pytest.mark.lab_run
@pytest.mark.skipif(not HAS_VLLM, reason="vLLM's CPU build runs in .venv-vllm (make test-lab's second pass)")
def test_bench_smoke_vllm_vs_hf(tmp_path):
    out = _cli("-m", "omnidrive_r1.bench", "--smoke", "--out", str(tmp_path), "--only", "vllm_vs_hf",
               env={"VLLM_CPU_KVCACHE_SPACE": "1"})
    assert "vllm_vs_hf: ratio=" in out and json.loads((tmp_path / "vllm_vs_hf.json").read_text())["batch"] == 2


@pytest.mark.slow
@pytest.mark.lab_run
def test_toy_report_on_one_cell_from_the_command_line(lab_folder):
    folder, env = lab_folder
    _cli("-m", "omnidrive_r1.toy.report", "--seeds", "0", "--no-other-isa", "--out", "report", "--doc", "report.md",
         "--limit", "2", "--set", *ONE_STEP, cwd=folder, env=env)
    doc = (folder / "report.md").read_text()
    assert "| toy base |" in doc and "| stage 2, full reward |" in doc and "## The learning claim, checked" in doc
    assert (folder / "report.png").exists()
    for log in ("toy-base.log", "full-s0/stage1/train.log", "full-s0/stage2/train.log", "full-s0/eval2/eval-tools.log"):
        assert (folder / "report" / log).exists(), log
    build = json.loads((folder / "outputs" / "toy" / "base" / "build.json").read_text())
    assert build["policy"]["reading"]["steps"] == 1  # the small base the overrides asked for


@pytest.mark.slow
@pytest.mark.lab_run
def test_ablate_on_one_cell_from_the_command_line(lab_folder):
    folder, env = lab_folder
    plan = folder / "plan.md"
    shutil.copy(ROOT / "docs" / "ablation.md", plan)
    _cli("-m", "omnidrive_r1.toy.ablate", "--seeds", "0", "--jobs", "1", "--bases", "shipped", "--rewards", "plain",
         "--out", "ablate", "--doc", str(plan), "--limit", "2", "--set", *ONE_STEP, cwd=folder, env=env)
    text = plan.read_text()
    assert "| shipped | all | answer + format |" in text and "not run" in text
    assert (folder / "plan.png").exists()
    assert (folder / "ablate" / "shipped" / "plain" / "s0" / "stage2-all" / "eval-mcq" / "summary.json").exists()
