"""`make ablate`: when does the grounding reward pay? The grid of `docs/ablation.md`, on the toy preset.

Cells: base (the toy base as shipped, or a reluctant one that calls the tool in about a quarter of its rollouts)
x reward (answer + format, + `tool_bonus`, + `clip_grounding`) x questions (every stage-2 row, or the open rows
only, for the reluctant base), each cell stage 1 then stage 2 as the toy preset runs them, for every RL seed,
evaluated on the held-out toydrive set. The grid was fixed in `docs/ablation.md` before it was run; this module
runs it and writes the figures into that file, below the plan (between the markers), with a PNG of the call rate
and the answer reward over steps per cell.

Every run is the product's command line in its own process (`omnidrive-r1 train`, `omnidrive-r1 eval`), like
`make toy-report`; runs already finished in `--out` are reused, so an interrupted grid resumes where it stopped.
`--jobs 2` (the default) runs two chains at once, one thread each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from omnidrive_r1.config import load_recipe_dict
from omnidrive_r1.toy.report import _curve, _end_call_rate, toy_base_command
from omnidrive_r1.toy.report import _run as _run_once
from omnidrive_r1.toy.toydrive import ensure_heldout

# the toy recipes' rewards (answer_accuracy 1.0, format 0.2, clip_grounding 0.5), by name; the bonus at the CLIP
# term's weight (0.5), its threshold the CLIP gate's (0.5); {clip}: the grid's copy of the base's toy CLIP
REWARDS = {
    "plain": ["rewards.clip_grounding=null"],
    "bonus": ["rewards.clip_grounding=null", "rewards.tool_bonus={weight: 0.5, threshold: 0.5}"],
    "clip": ["rewards.clip_grounding.model_name=local-dir:{clip}"],
}
REWARD_TITLES = {"plain": "answer + format", "bonus": "+ tool_bonus", "clip": "+ clip_grounding"}
BASES = {"shipped": None, "reluctant": 0.25}  # zoom_share of the base build (None: the shipped mix)
# (base, questions): the grid's settings; each runs every reward for every seed
SETTINGS = [("shipped", "all"), ("reluctant", "all"), ("reluctant", "open")]
BASE_SEED = 0


# the wall seconds of every command this invocation ran (runs found finished are not run again, so not counted)
RAN: list[float] = []


def _run(args: list[str], log: Path, env: dict | None = None) -> float:
    seconds = _run_once(args, log, env)
    RAN.append(seconds)
    return seconds


def base_dir(out: Path, base: str) -> Path:
    return out / f"{base}-base"


def toy_overrides(out: Path, base: str) -> list[str]:
    """The toy section pointing at this grid's copy of the base (the reluctant one built with its share)."""
    folder = base_dir(out, base)
    share = BASES[base]
    return [f"lab.toy_base.out={folder}", f"lab.toy_base.seed={BASE_SEED}",
            *([f"lab.toy_base.zoom_share={share}"] if share else []),
            f"model_name_or_path={folder / 'policy'}"]


def reward_overrides(out: Path, base: str, reward: str) -> list[str]:
    return [o.replace("{clip}", str(base_dir(out, base) / "clip")) for o in REWARDS[reward]]


def _train(args: list[str], run: Path, env: dict) -> Path:
    final = run / "final"
    if not (final / "config.json").exists():
        seconds = _run(["train", *args, f"output_dir={run}", "overwrite_output_dir=true", "report_to=[]"],
                       run / "train.log", env)
        (run / "wall_seconds").write_text(f"{seconds:.0f}\n")
    return final


def _eval(model: Path, out: Path, rows: str, env: dict, sample: bool = False, limit: int | None = None) -> dict:
    """`omnidrive-r1 eval` on the held-out set's multiple-choice (`mcq`) or open (`open`) rows, greedy unless
    `sample`; `limit`: the first rows only (a check of the machinery)."""
    if not (out / "summary.json").exists():
        _run(["eval", "--model", str(model), "--data", str(ensure_heldout()), "--out", str(out), "--overwrite",
              f"--{rows}-only", *(["--sample"] if sample else []), *(["--limit", str(limit)] if limit else [])],
             out.with_suffix(".log"), env)
    return json.loads((out / "summary.json").read_text())


def chain(out: Path, base: str, reward: str, seed: int, env: dict, sets: list[str] = (),
          limit: int | None = None) -> dict:
    """One base, reward and seed: stage 1, then stage 2 on every row (the shipped base) or on every row and on the
    open rows (the reluctant base, from the same stage 1), each evaluated. `sets` and `limit`: see `main`."""
    runs = out / base / reward / f"s{seed}"
    toy = [*toy_overrides(out, base), *sets]
    rewards = reward_overrides(out, base, reward)
    final1 = _train(["recipes/toy/stage1.yaml", f"seed={seed}", *toy, *rewards], runs / "stage1", env)
    result = {}
    for questions in [q for b, q in SETTINGS if b == base]:
        run = runs / f"stage2-{questions}"
        final2 = _train(["recipes/toy/stage2.yaml", f"seed={seed}", *toy, *rewards, f"init_from={final1}",
                         f"model_name_or_path={final1}", *([f"data.questions={questions}"] if questions != "all" else [])],
                        run, env)
        result[questions] = {"run1": runs / "stage1", "run2": run,
                             "mcq": _eval(final2, run / "eval-mcq", "mcq", env, limit=limit)}
        if questions == "open":
            result[questions]["open"] = _eval(final2, run / "eval-open", "open", env, limit=limit)
    return result


def _stats(values: list[float]) -> tuple[float, float, float]:
    return sum(values) / len(values), min(values), max(values)


def _fmt(values: list[float | None], fmt: str) -> str:
    """Mean (smallest to largest); seeds without the figure (no greedy tool call: no box to score) are named."""
    present = [v for v in values if v is not None]
    if not present:
        return "-"
    mean, lo, hi = _stats(present)
    text = f"{mean:{fmt}} ({lo:{fmt}} to {hi:{fmt}})" if len(present) > 1 else format(mean, fmt)
    return text if len(present) == len(values) else f"{text}, {len(present)} of {len(values)} seeds"


def compare(a: list[float], b: list[float]) -> str:
    """The reading rule: A beats B only when the difference of the means exceeds the larger spread (max - min over
    seeds) of the two cells; else no difference."""
    (ma, la, ha), (mb, lb, hb) = _stats(a), _stats(b)
    spread = max(ha - la, hb - lb)
    if abs(ma - mb) <= spread:
        return f"no difference ({ma:.2f} vs {mb:.2f}, difference {ma - mb:+.2f} within the spread {spread:.2f})"
    return (f"{'higher' if ma > mb else 'lower'} ({ma:.2f} vs {mb:.2f}, difference {ma - mb:+.2f} beyond the spread "
            f"{spread:.2f})")


def plot(cells: dict, png: Path) -> None:
    """Call rate and answer reward over steps (stage 1, then stage 2), per setting; one line per reward (the mean
    over seeds) with the seeds' range shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(SETTINGS), figsize=(5 * len(SETTINGS), 7), sharex=True, sharey="row")
    colours = {"plain": "tab:grey", "bonus": "tab:orange", "clip": "tab:blue"}
    for col, (base, questions) in enumerate(SETTINGS):
        for row, (key, title) in enumerate((("tools/call_rate", "tool-call rate"),
                                            ("rewards/answer_accuracy/mean", "answer reward"))):
            ax = axes[row][col]
            boundary = None
            for reward in REWARDS:
                runs = cells.get((base, questions, reward)) or []
                if not runs:
                    continue
                series = []
                for run1, run2 in runs:
                    one = _curve(run1, key)
                    last = max((s for s, _ in one), default=0)
                    boundary = last + 0.5
                    series.append(dict(one + [(last + s, v) for s, v in _curve(run2, key)]))
                steps = sorted(set.intersection(*(set(s) for s in series)))
                mean = [sum(s[t] for s in series) / len(series) for t in steps]
                # a rolling mean over 5 steps: one step's 16 completions are too few to read a trend from
                smooth = [sum(mean[max(0, i - 4):i + 1]) / len(mean[max(0, i - 4):i + 1]) for i in range(len(mean))]
                lo = [min(s[t] for s in series) for t in steps]
                hi = [max(s[t] for s in series) for t in steps]
                ax.fill_between(steps, lo, hi, color=colours[reward], alpha=0.12, lw=0)
                ax.plot(steps, smooth, color=colours[reward], lw=1.6, label=REWARD_TITLES[reward])
            if boundary is not None:
                ax.axvline(boundary, color="k", lw=0.6, ls=":")
            ax.set(title=f"{base} base, {questions} rows: {title}", ylim=(-0.02, 1.02))
            ax.grid(alpha=0.3)
            if row == 1:
                ax.set_xlabel("step (stage 1, then stage 2 after the dotted line)")
    axes[0][0].legend(fontsize=8, title="seed mean, 5-step rolling; band: seed range", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


START, END = "<!-- results: written by make ablate -->", "<!-- end of results -->"


def write_results(doc: Path, text: str) -> None:
    """Put `text` between the results markers of `doc`, leaving the plan above them as it was committed."""
    plan = doc.read_text()
    if START not in plan:
        raise SystemExit(f"ablate: {doc} has no results marker ({START}); the plan must be written first")
    head = plan.split(START, 1)[0]
    tail = plan.split(END, 1)[1] if END in plan else "\n"
    doc.write_text(f"{head}{START}\n{text}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m omnidrive_r1.toy.ablate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="RL seeds (default 0 1 2)")
    parser.add_argument("--jobs", type=int, default=2, help="chains run at once, each on cores/jobs threads (default 2)")
    parser.add_argument("--out", default="outputs/ablate", help="runs and evaluations (default outputs/ablate)")
    parser.add_argument("--doc", default="docs/ablation.md", help="the plan to write the results into")
    small = parser.add_argument_group("a smaller run", "only to check the machinery quickly (the verdicts need the whole "
                                                       "grid at full size)")
    small.add_argument("--bases", nargs="+", choices=list(BASES), default=list(BASES), help="only these bases")
    small.add_argument("--rewards", nargs="+", choices=list(REWARDS), default=list(REWARDS),
                       help="only these rewards")
    small.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="sets",
                       help="recipe overrides for every training run, lab.toy_base.* included (e.g. max_steps=1)")
    small.add_argument("--limit", type=int, help="evaluate the first N held-out rows only")
    args = parser.parse_args(argv)
    out, doc = Path(args.out), Path(args.doc)
    if START not in doc.read_text():
        raise SystemExit(f"ablate: {doc} has no results marker ({START}); the plan must be written first")
    threads = max(1, (os.cpu_count() or 1) // max(1, args.jobs))
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    started = time.time()
    ensure_heldout()
    RAN.clear()
    for base in args.bases:  # the bases first (cached: a copy when built before)
        toy = load_recipe_dict("recipes/toy/stage1.yaml", [*toy_overrides(out, base), *args.sets])["lab"]["toy_base"]
        _run(toy_base_command(toy), out / f"{base}-base.log")
    bases_minutes = sum(RAN) / 60
    RAN.clear()
    bases = {}
    for base in args.bases:
        policy, evals = base_dir(out, base) / "policy", out / f"{base}-base-eval"
        bases[base] = {"mcq": _eval(policy, evals / "mcq", "mcq", env, limit=args.limit),
                       "sampled": _eval(policy, evals / "mcq-sampled", "mcq", env, sample=True, limit=args.limit)}
        if base == "reluctant":
            bases[base]["open"] = _eval(policy, evals / "open", "open", env, limit=args.limit)
    # the reluctant chains are longer (two stage-2 runs): started first, they keep both jobs busy to the end
    jobs = [(base, reward, seed) for base in sorted(args.bases, key=lambda b: b != "reluctant")
            for reward in args.rewards for seed in args.seeds]
    lock, done = threading.Lock(), []

    def run(job):
        result = chain(out, *job, env, args.sets, args.limit)
        with lock:
            done.append(job)
            print(f"[{len(done)}/{len(jobs)}] {job[0]} base, {job[1]}, seed {job[2]}: done "
                  f"({(time.time() - started) / 60:.0f} min)", flush=True)
        return job, result

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = dict(pool.map(run, jobs))
    timing = wall_time(out / "wall.json", (time.time() - started) / 60, bases_minutes, len(RAN))
    text = results_text(results, bases, args.seeds, out, doc.with_suffix(".png"), timing, args.jobs)
    write_results(doc, text)
    print(f"wrote the results into {doc} ({timing['minutes']:.0f} minutes)")
    return 0


def wall_time(record: Path, minutes: float, bases_minutes: float, runs: int) -> dict:
    """The wall time of the invocation that ran the grid's runs, kept in `record`: an invocation that found every
    run finished (it only writes the page again) reports the recorded time, not its own minute."""
    if runs or not record.exists():
        timing = {"minutes": round(minutes, 1), "bases_minutes": round(bases_minutes, 1), "runs": runs}
        record.write_text(json.dumps(timing) + "\n")
        return timing
    return json.loads(record.read_text())


def results_text(results: dict, bases: dict, seeds: list[int], out: Path, png: Path, timing: dict,
                 jobs: int) -> str:
    cells = {}
    for (base, reward, _seed), per_q in sorted(results.items()):
        for questions, r in per_q.items():
            cells.setdefault((base, questions, reward), []).append(r)
    plot({k: [(r["run1"], r["run2"]) for r in v] for k, v in cells.items()}, png)

    def figures(rs, key, source="mcq"):
        return [r[source].get(key) for r in rs]

    lines = [f"Run by `make ablate` on {platform.platform()} with {os.cpu_count()} CPU cores, {jobs} chains at once: "
             f"**{timing['minutes']:.0f} minutes** in all, of which {timing['bases_minutes']:.0f} building or copying "
             f"the bases, then {timing['runs']} training and evaluation runs (runs found finished in `{out}` are "
             f"reused, not timed). Mean over RL seeds {', '.join(map(str, seeds))}, "
             "smallest to largest in brackets.", "",
             "### The bases", "",
             "| base | MCQ (%), greedy | calls / question, greedy | calls / question, sampled at temperature 1 | "
             "MCQ (%), sampled | zoom IoU, greedy | open-row F1 (%), greedy |", "|---" * 7 + "|"]
    for base, b in bases.items():
        lines.append(f"| {base} | {b['mcq']['mcq_accuracy']:.1f} | {b['mcq']['tool_calls_per_question']:.2f} | "
                     f"{b['sampled']['tool_calls_per_question']:.2f} | {b['sampled']['mcq_accuracy']:.1f} | "
                     f"{_fmt([b['mcq']['zoom_iou']], '.3f')} | "
                     f"{_fmt([b['open']['open_answer_f1']], '.1f') if 'open' in b else '-'} |")
    lines += ["", "### After stage 1 and stage 2", "",
              "| base | stage-2 rows | reward | MCQ (%) | open-row F1 (%) | calls / question | zoom IoU | "
              "call rate, end of stage 1 | call rate, end of stage 2 |", "|---" * 9 + "|"]
    for (base, questions), reward in [(s, r) for s in SETTINGS for r in REWARDS]:
        rs = cells.get((base, questions, reward))
        if not rs:
            continue
        lines.append(
            f"| {base} | {questions} | {REWARD_TITLES[reward]} | {_fmt(figures(rs, 'mcq_accuracy'), '.1f')} | "
            f"{_fmt(figures(rs, 'open_answer_f1', 'open'), '.1f') if questions == 'open' else '-'} | "
            f"{_fmt(figures(rs, 'tool_calls_per_question'), '.2f')} | {_fmt(figures(rs, 'zoom_iou'), '.3f')} | "
            f"{_fmt([_end_call_rate(r['run1']) for r in rs], '.2f')} | "
            f"{_fmt([_end_call_rate(r['run2']) for r in rs], '.2f')} |")
    lines += ["", f"![call rate and answer reward over steps, per cell]({png.name})", "",
              "### The questions, read by the rule", ""]

    def cell(base, questions, reward):
        return cells.get((base, questions, reward)) or []

    def verdict(question, pairs):
        lines.append(f"**{question}**")
        lines.append("")
        for what, a, b, key, source in pairs:
            if not a or not b:
                lines.append(f"- {what}: not run")
                continue
            va, vb = figures(a, key, source), figures(b, key, source)
            if any(v is None for v in va + vb):
                counts = " and ".join(f"{sum(v is not None for v in vs)} of {len(vs)} seeds" for vs in (va, vb))
                lines.append(f"- {what}: not comparable by the rule (the figure exists for {counts}: a seed that "
                             "never calls the tool greedily has no zoom box to score)")
                continue
            lines.append(f"- {what}: {compare(va, vb)}")
        lines.append("")

    r_all = lambda reward: cell("reluctant", "all", reward)  # noqa: E731
    verdict("1. Does the CLIP term lift tool use from a reluctant base?", [
        ("calls per question, clip vs plain (reluctant base, all rows)", r_all("clip"), r_all("plain"),
         "tool_calls_per_question", "mcq"),
        ("MCQ accuracy, clip vs plain (reluctant base, all rows)", r_all("clip"), r_all("plain"), "mcq_accuracy", "mcq"),
        ("zoom IoU, clip vs plain (reluctant base, all rows)", r_all("clip"), r_all("plain"), "zoom_iou", "mcq")])
    verdict("2. Does it beat the tool bonus?", [
        ("MCQ accuracy, clip vs bonus (reluctant base, all rows)", r_all("clip"), r_all("bonus"), "mcq_accuracy", "mcq"),
        ("calls per question, clip vs bonus (reluctant base, all rows)", r_all("clip"), r_all("bonus"),
         "tool_calls_per_question", "mcq"),
        ("zoom IoU, clip vs bonus (reluctant base, all rows)", r_all("clip"), r_all("bonus"), "zoom_iou", "mcq"),
        ("MCQ accuracy, clip vs bonus (shipped base)", cell("shipped", "all", "clip"), cell("shipped", "all", "bonus"),
         "mcq_accuracy", "mcq"),
        ("zoom IoU, clip vs bonus (shipped base)", cell("shipped", "all", "clip"), cell("shipped", "all", "bonus"),
         "zoom_iou", "mcq")])
    r_open = lambda reward: cell("reluctant", "open", reward)  # noqa: E731
    verdict("3. Does it help where the answer reward is weak (open rows only)?", [
        ("open-row F1, clip vs plain", r_open("clip"), r_open("plain"), "open_answer_f1", "open"),
        ("open-row F1, clip vs bonus", r_open("clip"), r_open("bonus"), "open_answer_f1", "open"),
        ("MCQ accuracy (never trained on in stage 2), clip vs plain", r_open("clip"), r_open("plain"), "mcq_accuracy",
         "mcq"),
        ("calls per question, clip vs plain", r_open("clip"), r_open("plain"), "tool_calls_per_question", "mcq"),
        ("zoom IoU, clip vs plain", r_open("clip"), r_open("plain"), "zoom_iou", "mcq")])
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
