"""`make toy-report`: does the framework teach the toy base to zoom, for every seed and on another machine?
Base, stage 1 and stage 2 on toydrive's held-out test split, with the tool and without it, for several RL seeds
(default five), optionally with `clip_grounding` switched off (weight 0, `--no-clip`); then the whole cold path
(base build, stage 1, stage 2) again under an imitated second instruction set (`OTHER_ISA`: torch, MKL and
oneDNN limited to AVX2), with a cache of its own so that nothing built here is reused. Writes a Markdown table,
the learning criteria with each one's verdict, and a PNG of the tool-call rate and reward over steps.

Every run is the product's own command line (`omnidrive-r1 train`, `omnidrive-r1 eval`) in a subprocess, so
the report measures exactly what a user gets.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from omnidrive_r1.config import load_recipe_dict
from omnidrive_r1.toy.toydrive import ensure_heldout

VARIANTS = {"full": [], "no_clip": ["rewards.clip_grounding.weight=0"]}
# The imitated second machine: the instruction set torch, MKL and oneDNN dispatch to, limited to AVX2. On an
# AVX-512 machine this changes matmul, linear and attention results bit for bit, as another CPU does.
OTHER_ISA = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
# What the default path must show (the learning claim the README makes), checked on every report
MIN_GAIN, MIN_MEAN_GAIN, MIN_CALL_RATE = 12.0, 20.0, 0.5


def _run(args: list[str], log: Path, env: dict | None = None) -> float:
    """One `omnidrive-r1` command in its own process, its output in `log`; returns its wall time in seconds."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with log.open("w") as f:
        proc = subprocess.run([sys.executable, "-m", "omnidrive_r1.cli", *args], stdout=f, stderr=subprocess.STDOUT,
                              env={**os.environ, **(env or {})})
    if proc.returncode:
        raise SystemExit(f"toy-report: `omnidrive-r1 {' '.join(args)}` failed (exit {proc.returncode}); see {log}")
    seconds = time.time() - start
    print(f"  {seconds:6.0f} s  omnidrive-r1 {' '.join(args[:3])} ...", flush=True)
    return seconds


def _eval(model: Path, out: Path, tools: bool, env: dict | None = None, limit: int | None = None) -> dict:
    """The model on the held-out set's multiple-choice rows (the table's figures are all MCQ figures); `limit`: the
    first rows only (a check of the machinery)."""
    target = out / ("tools" if tools else "no_tools")
    if not (target / "summary.json").exists():
        _run(["eval", "--model", str(model), "--data", str(ensure_heldout()), "--out", str(target), "--overwrite",
              "--mcq-only", *([] if tools else ["--no-tools"]), *(["--limit", str(limit)] if limit else [])],
             out / f"eval-{target.name}.log", env)
    return json.loads((target / "summary.json").read_text())


def _train(stage: int, seed: int, variant: str, out: Path, init: Path | None, extra: list[str] = (),
           env: dict | None = None, preset: str = "toy") -> Path:
    final = out / "final"
    if not (final / "config.json").exists():
        args = ["train", f"recipes/{preset}/stage{stage}.yaml", f"seed={seed}", f"output_dir={out}",
                "overwrite_output_dir=true", "report_to=[]", *VARIANTS[variant], *extra]
        if init is not None:
            args += [f"init_from={init}", f"model_name_or_path={init}"]
        seconds = _run(args, out / "train.log", env)
        (out / "wall_seconds").write_text(f"{seconds:.0f}\n")
    return final


def _end_call_rate(run: Path) -> float:
    """Tool-call rate at the end of a stage: the mean of its last 5 logged steps."""
    rates = _curve(run, "tools/call_rate")[-5:]
    return sum(r for _, r in rates) / max(1, len(rates))


def other_machine(out: Path, seed: int = 0) -> dict:
    """The cold default path under `OTHER_ISA`, as a user with another CPU meets it: the toy base built from
    nothing (a cache of its own), stage 1, stage 2 (RL seed `seed`), each timed; the base and stage 2 evaluated
    under the same limit."""
    env = {**OTHER_ISA, "OMNIDRIVE_CACHE": str((out / "cache").resolve())}
    base = out / "base"
    toy = [f"lab.toy_base.out={base}", f"rewards.clip_grounding.model_name=local-dir:{base / 'clip'}"]
    if not (out / "stage1" / "final" / "config.json").exists():
        seconds = _run(["train", "recipes/toy/stage1.yaml", f"seed={seed}", f"output_dir={out / 'stage1'}",
                        "overwrite_output_dir=true", "report_to=[]", *toy, f"model_name_or_path={base / 'policy'}"],
                       out / "stage1" / "train.log", env)
        (out / "stage1" / "wall_seconds").write_text(f"{seconds:.0f}\n")
    final2 = _train(2, seed, "full", out / "stage2", out / "stage1" / "final", toy, env)
    times = {stage: float((out / stage / "wall_seconds").read_text()) for stage in ("stage1", "stage2")}
    return {"env": OTHER_ISA, "seconds": times, "stage1": out / "stage1", "stage2": out / "stage2",
            "base": _eval(base / "policy", out / "eval-base", True, env),
            "stage 2": _eval(final2, out / "eval2", True, env),
            "build": json.loads((base / "build.json").read_text()) if (base / "build.json").exists() else {}}


def criteria(base: dict, stage2: list[dict], end_rates: list[float], other: dict | None) -> list[tuple[str, bool]]:
    """The learning claim, each part with its verdict: every RL seed at least `MIN_GAIN` points over the base,
    their mean at least `MIN_MEAN_GAIN`, every seed's end-of-stage call rate at least `MIN_CALL_RATE` and its
    zoom IoU above the base's; on the other machine, at least `MIN_GAIN` over the base built there."""
    gains = [s["mcq_accuracy"] - base["mcq_accuracy"] for s in stage2]
    checks = [(f"every seed at least +{MIN_GAIN:.0f} points (smallest gain {min(gains):+.1f})",
               min(gains) >= MIN_GAIN),
              (f"mean gain at least +{MIN_MEAN_GAIN:.0f} points ({sum(gains) / len(gains):+.1f})",
               sum(gains) / len(gains) >= MIN_MEAN_GAIN),
              (f"end-of-stage-2 call rate at least {MIN_CALL_RATE} in every seed (lowest {min(end_rates):.2f})",
               min(end_rates) >= MIN_CALL_RATE),
              _iou_check(base, stage2)]
    if other is not None:
        gain = other["stage 2"]["mcq_accuracy"] - other["base"]["mcq_accuracy"]
        checks.append((f"other instruction set: at least +{MIN_GAIN:.0f} points over its own base ({gain:+.1f})",
                       gain >= MIN_GAIN))
    return checks


def _num(value, fmt: str) -> str:
    """A figure, or "-" where the run has none (no greedy tool call: no zoom box to score)."""
    return "-" if value is None else format(value, fmt)


def _iou_check(base: dict, stage2: list[dict]) -> tuple[str, bool]:
    """Zoom IoU above the base's in every seed; a seed (or base) that never calls greedily has no IoU: not met."""
    ious = [s["zoom_iou"] for s in stage2]
    scored = [v for v in ious if v is not None]
    lowest = f"lowest {min(scored):.3f}" if scored else "no seed calls the tool greedily"
    if len(scored) < len(ious):
        lowest += f"; {len(ious) - len(scored)} of {len(ious)} seeds without a call"
    ok = base["zoom_iou"] is not None and len(scored) == len(ious) and all(v > base["zoom_iou"] for v in scored)
    return f"zoom IoU above the base's ({_num(base['zoom_iou'], '.3f')}) in every seed ({lowest})", ok


# (column title, summary key, evaluation with or without the tool, format)
COLUMNS = [("MCQ, official (%)", "mcq_accuracy", True, ".1f"), ("MCQ, strict (%)", "mcq_accuracy_strict", True, ".1f"),
           ("MCQ, no tool (%)", "mcq_accuracy", False, ".1f"),
           ("tool calls / question", "tool_calls_per_question", True, ".2f"),
           ("tool failure rate", "tool_failure_rate", True, ".3f"), ("zoom IoU", "zoom_iou", True, ".3f")]


def _cell(summaries: list[tuple[dict, dict | None]], key: str, tools: bool, fmt: str) -> str:
    """Mean over seeds, and the spread (smallest to largest) when there are several."""
    values = [(with_tool if tools else without or {}).get(key) for with_tool, without in summaries]
    values = [v for v in values if isinstance(v, (int, float))]
    if not values:
        return "-"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return format(mean, fmt)
    return f"{mean:{fmt}} ({min(values):{fmt}} to {max(values):{fmt}})"


def _row(name: str, summaries: list[tuple[dict, dict | None]]) -> str:
    return f"| {name} | " + " | ".join(_cell(summaries, key, tools, fmt) for _, key, tools, fmt in COLUMNS) + " |"


def _curve(run: Path, key: str) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r[key]) for r in rows if key in r]


def _plot(curves: dict, png: Path) -> None:
    """Tool-call rate and mean reward over steps, one panel per stage and quantity, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 6.5), sharex="col")
    for (variant, seed, stage), run in curves.items():
        for row, (key, title) in enumerate((("tools/call_rate", "tool-call rate"), ("reward", "mean reward"))):
            points = _curve(run, key)
            axes[row][stage - 1].plot([s for s, _ in points], [v for _, v in points], lw=1.2,
                                      label=f"{variant.replace('_', ' ')}, seed {seed}",
                                      ls="-" if variant == "full" else "--")
            axes[row][stage - 1].set(title=f"stage {stage}: {title}")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    axes[0][0].set_ylim(-0.02, 1.02)
    axes[0][1].set_ylim(-0.02, 1.02)
    for ax in axes[1]:
        ax.set_xlabel("step")
    axes[0][1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def toy_base_command(toy: dict) -> list[str]:
    """`omnidrive-r1 models toy-base` building what a recipe's `lab.toy_base` section names."""
    steps = toy.get("steps") or {}
    return ["models", "toy-base", "--out", str(toy["out"]), "--seed", str(toy.get("seed", 0)),
            *(["--family", toy["family"]] if toy.get("family") else []),
            *(["--zoom-share", str(toy["zoom_share"])] if toy.get("zoom_share") else []),
            *(["--phase-steps", ",".join(f"{k}={v}" for k, v in steps.items())] if steps else []),
            *(["--clip-steps", str(toy["clip_steps"])] if toy.get("clip_steps") else []),
            *(["--attempts", str(toy["attempts"])] if toy.get("attempts") else [])]


def report(seeds: list[int], out: Path, doc: Path, variants: tuple[str, ...] = ("full",),
           other_isa: bool = True, preset: str = "toy", sets: list[str] = (), limit: int | None = None) -> None:
    """`sets`: recipe overrides for every training run (`lab.toy_base.*` reaches the base build too); `limit`: the
    held-out rows evaluated. Both only to check the machinery at a small size: the claim needs neither."""
    started = time.time()
    sets = list(sets)
    toy = load_recipe_dict(f"recipes/{preset}/stage1.yaml", sets)["lab"]["toy_base"]
    base = Path(toy["out"]) / "policy"
    ensure_heldout()
    _run(toy_base_command(toy), out / "toy-base.log")
    results = {"base": [(_eval(base, out / "base", True, limit=limit), _eval(base, out / "base", False, limit=limit))]}
    curves, end_rates = {}, {}
    for variant in variants:
        for seed in seeds:
            runs = out / f"{variant}-s{seed}"
            print(f"{variant}, seed {seed}:", flush=True)
            final1 = _train(1, seed, variant, runs / "stage1", None, sets, preset=preset)
            final2 = _train(2, seed, variant, runs / "stage2", final1, sets, preset=preset)
            results.setdefault(f"stage 1, {variant}", []).append((_eval(final1, runs / "eval1", True, limit=limit),
                                                                   None))
            results.setdefault(f"stage 2, {variant}", []).append((_eval(final2, runs / "eval2", True, limit=limit),
                                                                   _eval(final2, runs / "eval2", False, limit=limit)))
            for stage in (1, 2):
                curves[(variant, seed, stage)] = runs / f"stage{stage}"
                end_rates[(stage, variant, seed)] = _end_call_rate(runs / f"stage{stage}")
    other = None
    if other_isa:
        print("the cold path under the imitated second instruction set:", flush=True)
        other = other_machine(out / "other-isa", seed=seeds[0])
        curves[("other ISA", seeds[0], 1)], curves[("other ISA", seeds[0], 2)] = other["stage1"], other["stage2"]
    png = doc.with_suffix(".png")
    _plot(curves, png)
    names = {"base": "toy base"}
    for variant in variants:
        title = "full reward" if variant == "full" else "no clip_grounding"
        names.update({f"stage 1, {variant}": f"stage 1, {title}", f"stage 2, {variant}": f"stage 2, {title}"})
    table = ["| model | " + " | ".join(title for title, *_ in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|",
             *(_row(names[k], results[k]) for k in names)]
    per_seed = ["| RL seed | stage 1 MCQ (%) | stage 2 MCQ (%) | gain over the base | stage 2 zoom IoU | "
                "call rate, end of stage 2 | stage 1 + stage 2 wall time (s) |", "|---" * 7 + "|"]
    base_mcq = results["base"][0][0]["mcq_accuracy"]
    for seed, (s1, _), (s2, _) in zip(seeds, results["stage 1, full"], results["stage 2, full"]):
        runs = out / f"full-s{seed}"
        wall = sum(float((runs / st / "wall_seconds").read_text()) for st in ("stage1", "stage2")
                   if (runs / st / "wall_seconds").exists())
        per_seed.append(f"| {seed} | {s1['mcq_accuracy']:.1f} | {s2['mcq_accuracy']:.1f} | "
                        f"{s2['mcq_accuracy'] - base_mcq:+.1f} | {_num(s2['zoom_iou'], '.3f')} | "
                        f"{end_rates[(2, 'full', seed)]:.2f} | {wall:.0f} |")
    checks = criteria(results["base"][0][0], [w for w, _ in results["stage 2, full"]],
                      [end_rates[(2, "full", seed)] for seed in seeds], other)
    text = ["# Toy results" + ("" if preset == "toy" else f": the `{preset}` preset") + "\n",
            f"Written by `make toy-report SEEDS='{' '.join(map(str, seeds))}'"
            + ("" if preset == "toy" else f" ARGS='--preset {preset}'") + "` (`omnidrive_r1/toy/report.py`) on "
            f"{platform.platform()} ({platform.processor() or platform.machine()}) with {os.cpu_count()} CPU cores, "
            f"in {(time.time() - started) / 60:.0f} minutes (runs already in `{out}` are reused, not timed). How "
            "the toy world and the base are built: `docs/toy.md`.\n",
            "Every model is evaluated with `omnidrive-r1 eval --mcq-only` (greedy decoding) on the 300 "
            "multiple-choice rows of the held-out toydrive set (`outputs/toydrive-heldout`, 60 frames from a seed "
            "no training run uses); `--no-tools` for the no-tool column. Chance is 33.3% (three of the four "
            "options can be right). Stage rows: mean over the RL seeds, smallest to largest in brackets"
            + (". `no clip_grounding` trains with the CLIP term's weight set to 0 (`rewards.clip_grounding.weight=0`)."
               if "no_clip" in variants else ".") + "\n",
            "\n".join(table) + "\n", "Each RL seed of the default path (`make stage1 && make stage2`, "
            "`seed=S`), from the same base:\n", "\n".join(per_seed) + "\n"]
    if other is not None:
        t1, t2 = other["seconds"]["stage1"], other["seconds"]["stage2"]
        gain = other["stage 2"]["mcq_accuracy"] - other["base"]["mcq_accuracy"]
        attempts = other["build"].get("policy", {}).get("protocol", {}).get("attempts")
        text.append(
            "## Another machine: the cold path under an imitated second instruction set\n\n"
            f"`{' '.join(f'{k}={v}' for k, v in OTHER_ISA.items())}`, a cache of its own, RL seed {seeds[0]}: "
            f"the toy base built from nothing, then both stages (`{out / 'other-isa'}`). Cold `stage 1` "
            f"(base build included) {t1:.0f} s, `stage 2` {t2:.0f} s: **{(t1 + t2) / 60:.1f} minutes**"
            + (f"; the base's protocol phase took {attempts} attempt(s) to pass its reading check" if attempts else "")
            + ".\n\n| model | MCQ (%) | tool calls / question | zoom IoU |\n|---|---|---|---|\n"
            + "".join(f"| {name} | {m['mcq_accuracy']:.1f} | {m['tool_calls_per_question']:.2f} | "
                      f"{_num(m['zoom_iou'], '.3f')} |\n" for name, m in (("toy base, built there", other["base"]),
                                                                 ("stage 2", other["stage 2"])))
            + f"\nGain over the base built there: **{gain:+.1f} points** (here: "
            f"{sum(w['mcq_accuracy'] for w, _ in results['stage 2, full']) / len(seeds) - base_mcq:+.1f} on "
            "average).\n")
    text.append("## The learning claim, checked\n\n" + "\n".join(f"- {'met' if ok else '**not met**'}: {what}"
                                                                  for what, ok in checks) + "\n")
    if "no_clip" in variants:
        full, no_clip = (sum(w["mcq_accuracy"] for w, _ in results[f"stage 2, {v}"]) / len(seeds)
                         for v in ("full", "no_clip"))
        text.append(
            f"**Does the CLIP term help here?** Stage 2 MCQ accuracy {full:.1f}% with it and {no_clip:.1f}% without, "
            f"over {len(seeds)} seeds (spreads in the table): "
            + ("the difference is inside the spread over seeds, so this toy does not show that it helps."
               if abs(full - no_clip) <= max(_spread(results['stage 2, full']), _spread(results['stage 2, no_clip']))
               else f"it {'helps' if full > no_clip else 'hurts'} by more than the spread over seeds.") + "\n")
    text.append("Tool-call rate at the end of each stage (mean of its last 5 logged steps):\n\n"
                + "\n".join(f"- stage {stage}, {variant.replace('_', ' ')}, seed {seed}: {rate:.2f}"
                             for (stage, variant, seed), rate in end_rates.items()) + "\n")
    text.append(f"![tool-call rate and reward over training steps]({png.name})\n")
    text.append("Commands, each run in its own process exactly as a user types it (logs under "
                f"`{out}/*/*.log`):\n\n```\nomnidrive-r1 models toy-base --out {toy['out']}"
                + (f" --family {toy['family']}" if toy.get("family") else "") + "\n"
                f"omnidrive-r1 train recipes/{preset}/stage1.yaml seed=S output_dir=... report_to=[] "
                "[rewards.clip_grounding.weight=0]\n"
                f"omnidrive-r1 train recipes/{preset}/stage2.yaml seed=S init_from=STAGE1/final "
                "model_name_or_path=STAGE1/final ...\nomnidrive-r1 eval --model MODEL --mcq-only [--no-tools]\n"
                + (f"{' '.join(f'{k}={v}' for k, v in OTHER_ISA.items())} OMNIDRIVE_CACHE=... omnidrive-r1 train "
                   "recipes/toy/stage1.yaml lab.toy_base.out=... (then stage 2 and eval under the same variables)\n"
                   if other is not None else "") + "```\n")
    doc.write_text("\n".join(text))
    print(f"wrote {doc} and {png}")
    for what, ok in checks:
        print(f"{'met' if ok else 'NOT MET'}: {what}")


def _spread(summaries: list[tuple[dict, dict | None]]) -> float:
    values = [w["mcq_accuracy"] for w, _ in summaries]
    return max(values) - min(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m omnidrive_r1.toy.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="RL seeds (default 0 to 4)")
    parser.add_argument("--no-clip", action="store_true",
                        help="also train every seed with the clip_grounding term's weight set to 0")
    parser.add_argument("--no-other-isa", action="store_true",
                        help="skip the cold path under the imitated second instruction set (AVX2)")
    parser.add_argument("--out", default="outputs/toy-report", help="runs and evaluations (default outputs/toy-report)")
    parser.add_argument("--doc", help="the report (default docs/toy_results.md, docs/toy_results_<preset>.md for "
                                      "another preset)")
    parser.add_argument("--preset", default="toy", help="the toy preset (recipes/PRESET/): toy (default) or "
                                                        "toy_qwen3_vl; another preset skips the other-ISA path")
    small = parser.add_argument_group("a smaller run", "only to check the machinery quickly (the learning claim needs "
                                                       "the full size)")
    small.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="sets",
                       help="recipe overrides for every training run, lab.toy_base.* included (e.g. max_steps=1)")
    small.add_argument("--limit", type=int, help="evaluate the first N held-out rows only")
    args = parser.parse_args(argv)
    other = args.preset == "toy"
    out = Path(args.out if other else f"{args.out}-{args.preset}")
    doc = Path(args.doc or ("docs/toy_results.md" if other else f"docs/toy_results_{args.preset}.md"))
    report(args.seeds, out, doc, ("full", "no_clip") if args.no_clip else ("full",),
           other_isa=other and not args.no_other_isa, preset=args.preset, sets=args.sets, limit=args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
