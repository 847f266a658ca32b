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
    target = out / ("tools" if tools else "no_tools")
    if not (target / "summary.json").exists():
        _run(["eval", "--model", str(model), "--data", str(ensure_heldout()), "--out", str(target), "--overwrite",
              *([] if tools else ["--no-tools"])], out / f"eval-{target.name}.log")
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


def _row(name: str, with_tool: dict, without: dict | None) -> str:
    def cell(summary, key, fmt):
        value = summary.get(key) if summary else None
        return format(value, fmt) if isinstance(value, (int, float)) else "-"

    return (f"| {name} | {cell(with_tool, 'mcq_accuracy', '.1f')} | {cell(without, 'mcq_accuracy', '.1f')} | "
            f"{cell(with_tool, 'tool_calls_per_question', '.2f')} | {cell(with_tool, 'zoom_iou', '.3f')} |")


def _call_rates(run: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["tools/call_rate"]) for r in rows if "tools/call_rate" in r]


def report(seeds: list[int], out: Path, doc: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    base = Path("outputs/toy/base/policy")
    ensure_heldout()
    _run(["models", "toy-base", "--out", "outputs/toy/base"], out / "toy-base.log")
    lines = ["| model | MCQ accuracy, tool (%) | MCQ accuracy, no tool (%) | tool calls / question | zoom IoU |",
             "|---|---|---|---|---|",
             _row("toy base", _eval(base, out / "base", True), _eval(base, out / "base", False))]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5), sharey=True)
    for variant in VARIANTS:
        for seed in seeds:
            runs = out / f"{variant}-s{seed}"
            print(f"{variant}, seed {seed}:", flush=True)
            final1 = _train(1, seed, variant, runs / "stage1", None)
            final2 = _train(2, seed, variant, runs / "stage2", final1)
            for stage, final in ((1, final1), (2, final2)):
                lines.append(_row(f"stage {stage}, {variant.replace('_', ' ')}, seed {seed}",
                                  _eval(final, runs / f"eval{stage}", True),
                                  _eval(final, runs / f"eval{stage}", False) if stage == 2 else None))
                steps = _call_rates(runs / f"stage{stage}")
                axes[stage - 1].plot([s for s, _ in steps], [r for _, r in steps],
                                     label=f"{variant} s{seed}", ls="-" if variant == "full" else "--")
    for stage, ax in enumerate(axes, 1):
        ax.set(title=f"stage {stage}: tool-call rate", xlabel="step", ylim=(-0.02, 1.02))
        ax.legend(fontsize=7)
    fig.tight_layout()
    png = doc.with_suffix(".png")
    fig.savefig(png, dpi=110)
    doc.write_text(
        "# Toy results\n\n"
        f"Written by `make toy-report` (`omnidrive_r1/toy/report.py`), seeds {seeds}, on toydrive's held-out test "
        "set (`outputs/toydrive-heldout`, 60 frames generated from a seed no training run uses). MCQ accuracy over the "
        "multiple-choice rows; chance is 33.3% (three of the four options can be right). `no clip` trains with "
        "the `clip_grounding` weight set to 0. How the toy world and the base are built: `docs/toy.md`.\n\n"
        + "\n".join(lines) + f"\n\n![tool-call rate over training steps]({png.name})\n")
    print(f"wrote {doc} and {png}")


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
