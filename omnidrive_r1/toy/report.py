"""`make toy-report`: does the framework teach the toy base to zoom? Base, stage 1 and stage 2 on toydrive's
held-out test split, with the tool and without it, for several RL seeds, with the full reward and with
`clip_grounding` switched off (weight 0). Writes a Markdown table and a PNG of the tool-call rate over steps.

Every run is the product's own command line (`omnidrive-r1 train`, `omnidrive-r1 eval`) in a subprocess, so
the report measures exactly what a user gets.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from omnidrive_r1.toy.toydrive import ensure_heldout

VARIANTS = {"full": [], "no_clip": ["rewards.2.weight=0"]}


def _run(args: list[str], log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with log.open("w") as f:
        proc = subprocess.run([sys.executable, "-m", "omnidrive_r1.cli", *args], stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise SystemExit(f"toy-report: `omnidrive-r1 {' '.join(args)}` failed (exit {proc.returncode}); see {log}")
    print(f"  {time.time() - start:6.0f} s  omnidrive-r1 {' '.join(args[:3])} ...", flush=True)


def _eval(model: Path, out: Path, tools: bool) -> dict:
    """The model on the held-out set's multiple-choice rows (the table's figures are all MCQ figures)."""
    target = out / ("tools" if tools else "no_tools")
    if not (target / "summary.json").exists():
        _run(["eval", "--model", str(model), "--data", str(ensure_heldout()), "--out", str(target), "--overwrite",
              "--mcq-only", *([] if tools else ["--no-tools"])], out / f"eval-{target.name}.log")
    return json.loads((target / "summary.json").read_text())


def _train(stage: int, seed: int, variant: str, out: Path, init: Path | None) -> Path:
    final = out / "final"
    if not (final / "config.json").exists():
        args = ["train", f"recipes/toy/stage{stage}.yaml", f"seed={seed}", f"output_dir={out}",
                "overwrite_output_dir=true", "report_to=[]", *VARIANTS[variant]]
        if init is not None:
            args += [f"init_from={init}", f"model_name_or_path={init}"]
        _run(args, out / "train.log")
    return final


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


def report(seeds: list[int], out: Path, doc: Path) -> None:
    import os
    import platform

    started = time.time()
    base = Path("outputs/toy/base/policy")
    ensure_heldout()
    _run(["models", "toy-base", "--out", "outputs/toy/base"], out / "toy-base.log")
    results = {"base": [(_eval(base, out / "base", True), _eval(base, out / "base", False))]}
    curves, end_rates = {}, []
    for variant in VARIANTS:
        for seed in seeds:
            runs = out / f"{variant}-s{seed}"
            print(f"{variant}, seed {seed}:", flush=True)
            final1 = _train(1, seed, variant, runs / "stage1", None)
            final2 = _train(2, seed, variant, runs / "stage2", final1)
            results.setdefault(f"stage 1, {variant}", []).append((_eval(final1, runs / "eval1", True), None))
            results.setdefault(f"stage 2, {variant}", []).append((_eval(final2, runs / "eval2", True),
                                                                   _eval(final2, runs / "eval2", False)))
            for stage in (1, 2):
                curves[(variant, seed, stage)] = runs / f"stage{stage}"
                rates = _curve(runs / f"stage{stage}", "tools/call_rate")
                end_rates.append((f"stage {stage}, {variant.replace('_', ' ')}, seed {seed}",
                                  sum(r for _, r in rates[-5:]) / max(1, len(rates[-5:]))))
    png = doc.with_suffix(".png")
    _plot(curves, png)
    names = {"base": "toy base", "stage 1, full": "stage 1, full reward", "stage 2, full": "stage 2, full reward",
             "stage 1, no_clip": "stage 1, no clip_grounding", "stage 2, no_clip": "stage 2, no clip_grounding"}
    table = ["| model | " + " | ".join(title for title, *_ in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|",
             *(_row(names[k], results[k]) for k in names)]
    full, no_clip = (sum(w["mcq_accuracy"] for w, _ in results[f"stage 2, {v}"]) / len(seeds)
                     for v in ("full", "no_clip"))
    minutes = (time.time() - started) / 60
    doc.write_text(
        "# Toy results\n\n"
        f"Written by `make toy-report SEEDS='{' '.join(map(str, seeds))}'` (`omnidrive_r1/toy/report.py`) on "
        f"{platform.platform()} with {os.cpu_count()} CPU cores, in {minutes:.0f} minutes (the runs already in "
        f"`{out}` are reused, not timed). How the toy world and the base are built: `docs/toy.md`.\n\n"
        "Every model is evaluated with `omnidrive-r1 eval --mcq-only` (greedy decoding) on the 300 multiple-choice "
        "rows of the held-out toydrive set (`outputs/toydrive-heldout`, 60 frames from a seed no training run "
        "uses); `--no-tools` for the no-tool column. Chance is 33.3% (three of the four options can be right). "
        "Stage rows: mean over the RL seeds, smallest to largest in brackets. `no clip_grounding` trains with "
        "the CLIP term's weight set to 0 (`rewards.2.weight=0`).\n\n"
        + "\n".join(table) + "\n\n"
        f"**Does the CLIP term help here?** Stage 2 MCQ accuracy {full:.1f}% with it and {no_clip:.1f}% without, "
        f"over {len(seeds)} seeds (spreads in the table): "
        + ("the difference is inside the spread over seeds, so this toy does not show that it helps."
           if abs(full - no_clip) <= max(_spread(results['stage 2, full']), _spread(results['stage 2, no_clip']))
           else f"it {'helps' if full > no_clip else 'hurts'} by more than the spread over seeds.") + "\n\n"
        "Tool-call rate at the end of each stage (mean of its last 5 logged steps):\n\n"
        + "\n".join(f"- {name}: {rate:.2f}" for name, rate in end_rates) + "\n\n"
        f"![tool-call rate and reward over training steps]({png.name})\n\n"
        "Commands, each run in its own process exactly as a user types it (logs under "
        f"`{out}/*/*.log`):\n\n```\nomnidrive-r1 models toy-base --out outputs/toy/base\n"
        "omnidrive-r1 train recipes/toy/stage1.yaml seed=S output_dir=... report_to=[] [rewards.2.weight=0]\n"
        "omnidrive-r1 train recipes/toy/stage2.yaml seed=S init_from=STAGE1/final model_name_or_path=STAGE1/final ...\n"
        "omnidrive-r1 eval --model MODEL --mcq-only [--no-tools]\n```\n")
    print(f"wrote {doc} and {png}")


def _spread(summaries: list[tuple[dict, dict | None]]) -> float:
    values = [w["mcq_accuracy"] for w, _ in summaries]
    return max(values) - min(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m omnidrive_r1.toy.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="RL seeds (default 0 1 2)")
    parser.add_argument("--out", default="outputs/toy-report", help="runs and evaluations (default outputs/toy-report)")
    parser.add_argument("--doc", default="docs/toy_results.md", help="the report (default docs/toy_results.md)")
    args = parser.parse_args(argv)
    report(args.seeds, Path(args.out), Path(args.doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
