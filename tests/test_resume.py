"""Resume restores what was trained; checkpoints are complete or invisible; runs never mix (issue: reliability).

One reference run (5 steps, a checkpoint every 2) and one run killed in the middle of writing checkpoint-4.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForImageTextToText

from omnidrive_r1.checkpoints import STAGING, CheckpointError, last_complete_checkpoint, load_model_weights
from omnidrive_r1.train import train

ROOT = Path(__file__).resolve().parents[1]
TOY1 = ROOT / "recipes/toy/stage1.yaml"


@pytest.fixture(scope="module")
def args(toydrive_dir, tiny_models):
    """Recipe overrides of a short run on the tiny models into `out`, plus `extra`."""
    def make(out, *extra):
        return [*tiny_models, f"data.path={toydrive_dir / 'deepeyes/train.parquet'}",
                "per_device_train_batch_size=4", "save_steps=2", "save_total_limit=5", "lr_scheduler_type=linear",
                "warmup_steps=0", "learning_rate=5e-5", "report_to=[]", "max_steps=5", f"output_dir={out}", *extra]
    return make


def _weights(path):
    return AutoModelForImageTextToText.from_pretrained(path).state_dict()


def _steps(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
            if "loss" in json.loads(line)]


# the save of checkpoint-4 dies after the weights are written and while the optimizer state is being written
DIE_IN_SAVE = """
import os, sys
from omnidrive_r1.trainer import ToolGRPOTrainer
real = ToolGRPOTrainer._save_optimizer_and_scheduler
def dying(self, output_dir):
    if self.state.global_step == 4:
        open(os.path.join(output_dir, "optimizer.pt"), "wb").close()
        os._exit(9)
    return real(self, output_dir)
ToolGRPOTrainer._save_optimizer_and_scheduler = dying
from omnidrive_r1.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def reference_run(args, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    train(TOY1, args(out))
    assert all(s["grad_norm"] > 0 for s in _steps(out))  # every step moves the weights: resume has something to lose
    return out


def test_saved_weights_load_back_whatever_their_key_layout(tiny_policy_dir, tmp_path):
    model = AutoModelForImageTextToText.from_pretrained(tiny_policy_dir)
    model.save_pretrained(tmp_path)  # transformers writes the checkpoint layout (model.layers.*)
    fresh = AutoModelForImageTextToText.from_config(model.config)
    load_model_weights(fresh, tmp_path)
    want, got = model.state_dict(), fresh.state_dict()
    assert set(want) == set(got) and all(torch.equal(want[k], got[k]) for k in want)
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="unreadable weights"):
        load_model_weights(fresh, tmp_path)


def test_weights_that_do_not_fit_are_an_error_not_a_warning(tiny_policy_dir, tmp_path):
    import safetensors.torch

    model = AutoModelForImageTextToText.from_pretrained(tiny_policy_dir)
    model.save_pretrained(tmp_path)
    state = safetensors.torch.load_file(tmp_path / "model.safetensors")
    del state["lm_head.weight"]
    safetensors.torch.save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="lm_head"):
        load_model_weights(model, tmp_path)


@pytest.mark.slow
def test_resume_with_no_further_step_leaves_the_checkpoint_weights(reference_run, args, tmp_path):
    out = tmp_path / "zero"
    out.mkdir()
    shutil.copytree(reference_run / "checkpoint-2", out / "checkpoint-2")
    train(TOY1, args(out, "max_steps=2", "resume_from_checkpoint=true"))
    saved, final = _weights(reference_run / "checkpoint-2"), _weights(out / "final")
    assert set(saved) == set(final)
    for key in saved:
        assert torch.equal(saved[key], final[key]), key
    assert not torch.equal(saved["lm_head.weight"], _weights(reference_run / "checkpoint-4")["lm_head.weight"])


@pytest.mark.slow
def test_a_run_killed_while_saving_resumes_from_the_last_complete_checkpoint(reference_run, args, tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "WANDB_MODE": "offline", "TRL_EXPERIMENTAL_SILENCE": "1"}
    proc = subprocess.run([sys.executable, "-c", DIE_IN_SAVE, "train", str(TOY1), *args(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 9, proc.stderr[-2000:]
    assert not (out / "checkpoint-4").exists() and (out / STAGING / "checkpoint-4").is_dir()
    last, notes = last_complete_checkpoint(out)
    assert last == out / "checkpoint-2" and any("checkpoint-4" in n and "interrupted" in n for n in notes)
    # a checkpoint left incomplete by an older version (or a full disk) is passed over too, by name
    legacy = out / "checkpoint-6"
    shutil.copytree(out / "checkpoint-2", legacy)
    (legacy / "trainer_state.json").unlink()
    assert [s["step"] for s in _steps(out)] == [1, 2, 3, 4]

    with pytest.raises(CheckpointError, match="already holds a run"):  # no silent mixing of two runs
        train(TOY1, args(out))
    proc = subprocess.run([sys.executable, "-m", "omnidrive_r1.cli", "train", str(TOY1),
                           *args(out, "resume_from_checkpoint=true")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming from" in proc.stdout and str(out / "checkpoint-2") in proc.stdout
    assert "checkpoint-6: incomplete (no trainer_state.json)" in proc.stdout
    assert f"{STAGING}/checkpoint-4" in proc.stdout and not (out / STAGING).exists()

    steps = _steps(out)
    assert [s["step"] for s in steps] == [1, 2, 3, 4, 5]  # no step logged twice
    reference = {s["step"]: s for s in _steps(reference_run)}
    for key in ("loss", "reward", "grad_norm", "learning_rate"):  # the first resumed step is the same step
        assert steps[2][key] == reference[3][key], key
    # the linear schedule continues from step 2 of 5 (lr at step s is lr0 * (1 - (s-1)/5) when logged)
    assert [s["learning_rate"] for s in steps[2:]] == pytest.approx([5e-5 * (1 - s / 5) for s in (2, 3, 4)])
    # the optimizer state was restored: Adam has counted every step, not only those after the restart
    state = torch.load(out / "checkpoint-4" / "optimizer.pt", weights_only=False)["state"]
    assert {int(s["step"]) for s in state.values()} == {4}
    resumed, uninterrupted = _weights(out / "checkpoint-4"), _weights(reference_run / "checkpoint-4")
    for key in uninterrupted:
        assert torch.equal(resumed[key], uninterrupted[key]), key
