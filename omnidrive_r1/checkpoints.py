"""Checkpoints that are complete or invisible, resume that restores what was trained, and run directories
that never mix two runs.

- Saving: the trainer writes each checkpoint under `<output_dir>/.partial/checkpoint-N` and moves it to
  `<output_dir>/checkpoint-N` only once every rank has finished writing, so a save cut short by a kill is
  never taken for a checkpoint (`docs/reliability.md`).
- Resuming: `last_complete_checkpoint` picks the newest checkpoint that holds everything a resume needs and
  names every directory it passed over; `load_model_weights` restores the weights whatever key layout the
  file was written in (transformers saves Qwen2.5-VL as `model.layers.*`, the live model names them
  `model.language_model.*`).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import safetensors.torch
from transformers.conversion_mapping import get_model_conversion_mapping
from transformers.core_model_loading import WeightConverter, rename_source_key

from omnidrive_r1.errors import UserError

log = logging.getLogger(__name__)

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
STAGING = ".partial"  # where a checkpoint is written before it becomes visible


class CheckpointError(UserError):
    """A checkpoint that cannot be resumed from; the message names the directory and what is wrong."""


def checkpoint_problems(path: str | Path, needs_optimizer: bool = True) -> list[str]:
    """What a checkpoint directory lacks for a resume ([] for a complete one)."""
    path = Path(path)
    problems = []
    state = path / "trainer_state.json"
    if not state.is_file() or state.stat().st_size == 0:
        problems.append("no trainer_state.json")
    else:
        try:
            json.loads(state.read_text())
        except json.JSONDecodeError:
            problems.append("trainer_state.json is cut short")
    deepspeed = any(p.is_dir() and p.name.startswith("global_step") for p in path.iterdir()) if path.is_dir() else False
    weights = [*path.glob("*.safetensors"), *path.glob("pytorch_model*.bin"), *path.glob("adapter_model.*")]
    if not deepspeed and not any(w.stat().st_size > 0 for w in weights):
        problems.append("no model weights")
    if needs_optimizer and not deepspeed:
        optimizer = path / "optimizer.pt"
        if not optimizer.is_file() or optimizer.stat().st_size == 0:
            problems.append("no optimizer state")
    return problems


def last_complete_checkpoint(output_dir: str | Path, needs_optimizer: bool = True) -> tuple[Path | None, list[str]]:
    """(newest complete `checkpoint-N`, notes on every directory passed over) in `output_dir`."""
    output_dir = Path(output_dir)
    notes = []
    staging = output_dir / STAGING
    if staging.is_dir():
        for leftover in sorted(staging.iterdir()):
            notes.append(f"ignored {leftover}: a save that was interrupted before it completed")
    found = sorted(((int(m.group(1)), p) for p in output_dir.iterdir() if p.is_dir()
                    for m in [CHECKPOINT_RE.match(p.name)] if m), reverse=True) if output_dir.is_dir() else []
    for _, path in found:
        problems = checkpoint_problems(path, needs_optimizer)
        if not problems:
            return path, notes
        notes.append(f"ignored {path}: incomplete ({', '.join(problems)})")
    return None, notes


def discard_staging(output_dir: str | Path) -> None:
    """Remove what an interrupted save left in `<output_dir>/.partial` (written by us, never by the user)."""
    staging = Path(output_dir) / STAGING
    if staging.is_dir():
        shutil.rmtree(staging)


def publish(staged: Path, final: Path) -> None:
    """Move a fully written checkpoint into place (an earlier checkpoint of the same step is replaced)."""
    if final.exists():
        shutil.rmtree(final)
    staged.rename(final)


def _load_file(path: Path) -> dict:
    try:
        return safetensors.torch.load_file(str(path), device="cpu")
    except Exception as e:  # safetensors raises its own error types for truncated or empty files
        raise CheckpointError(f"{path}: unreadable weights ({e})") from None


def _read_state_dict(checkpoint: Path) -> dict:
    single = checkpoint / "model.safetensors"
    if single.is_file():
        return _load_file(single)
    index = checkpoint / "model.safetensors.index.json"
    if index.is_file():
        state = {}
        for name in sorted(set(json.loads(index.read_text())["weight_map"].values())):
            state.update(_load_file(checkpoint / name))
        return state
    raise CheckpointError(f"{checkpoint}: no model.safetensors (or index) to restore the weights from")


def to_model_keys(model, state: dict) -> dict:
    """Rename a saved state dict into the live model's key layout, with transformers' own conversion mapping
    (the one `from_pretrained` applies)."""
    own = model.state_dict()
    if set(state) == set(own):
        return state
    transforms = get_model_conversion_mapping(model)
    if any(isinstance(t, WeightConverter) for t in transforms):
        raise CheckpointError(f"{type(model).__name__} converts tensors on load (not only renames them); "
                              "resume it through DeepSpeed checkpoints or from_pretrained")
    renamings = [t for t in transforms if not isinstance(t, WeightConverter)]
    prefix = getattr(model, "base_model_prefix", None)
    return {rename_source_key(k, renamings, [], prefix, own)[0]: v for k, v in state.items()}


def load_model_weights(model, checkpoint: str | Path) -> None:
    """Restore `model`'s weights from a checkpoint directory, every tensor or an error naming the keys."""
    checkpoint = Path(checkpoint)
    state = to_model_keys(model, _read_state_dict(checkpoint))
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    # tied weights are saved once: a missing key that shares storage with a loaded one is not missing
    tied = {k for k in missing if any(own[k].data_ptr() == own[j].data_ptr() for j in state if j in own)}
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise CheckpointError(f"{checkpoint}: the saved weights do not match the model "
                              f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                              f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''})")
    shapes = [k for k, v in state.items() if tuple(v.shape) != tuple(own[k].shape)]
    if shapes:
        raise CheckpointError(f"{checkpoint}: saved tensors have other shapes than the model's: {shapes[:5]}")
    model.load_state_dict(state, strict=False)
    log.info("restored %d tensors from %s", len(state), checkpoint)


def resolve_resume(grpo) -> str | None:
    """The checkpoint to resume from: a directory the user named, or (for `true`) the newest complete one in
    output_dir. Directories passed over (an interrupted save, a checkpoint missing files) are named."""
    resume = grpo.resume_from_checkpoint
    if not resume:
        return None
    needs_optimizer = not grpo.save_only_model
    if str(resume).lower() in ("true", "1", "yes"):
        last, notes = last_complete_checkpoint(grpo.output_dir, needs_optimizer)
        for note in notes:
            log.info(f"resume_from_checkpoint: {note}")
        if last is None:
            log.info(f"resume_from_checkpoint: no complete checkpoint in {grpo.output_dir} yet, starting fresh")
            return None
        log.info(f"resume_from_checkpoint: resuming from {last}")
        return str(last)
    problems = checkpoint_problems(resume, needs_optimizer)
    if problems:
        raise CheckpointError(f"resume_from_checkpoint: {resume} is incomplete ({', '.join(problems)}); "
                          "use resume_from_checkpoint=true to take the newest complete one")
    return resume


# what a training run writes into its output_dir (and all that `overwrite_output_dir` removes)
RUN_ARTIFACTS = ("final", "metrics.jsonl", "curves.png", "rollouts", "vllm_model", ".partial", "wandb")


def existing_run(output_dir: str | Path) -> list[str]:
    """What an earlier run left in `output_dir`."""
    out = Path(output_dir)
    if not out.is_dir():
        return []
    found = [name for name in ("final", "metrics.jsonl") if (out / name).exists()]
    checkpoints = sorted(p.name for p in out.glob("checkpoint-*") if p.is_dir())
    return found + checkpoints


def prepare_output_dir(grpo, overwrite: bool) -> None:
    """Refuse to mix two runs in one output_dir: continue the old one (resume) or replace it (overwrite)."""
    found = existing_run(grpo.output_dir)
    if not found or grpo.resume_from_checkpoint:
        return
    if not overwrite:
        raise CheckpointError(f"output_dir: {grpo.output_dir} already holds a run ({', '.join(found[:4])}). "
                          "Continue it with resume_from_checkpoint=true, replace it with overwrite_output_dir=true, "
                          "or choose another output_dir")
    out = Path(grpo.output_dir)
    log.info(f"overwrite_output_dir: removing the earlier run's outputs from {out}")
    for path in [*(out / name for name in RUN_ARTIFACTS), *out.glob("checkpoint-*")]:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
