"""The evaluation summary: `summary.json`, `summary.md` and `summary.png` (next to the published results).

`mcq_accuracy` and `reasoning_score` are the official-equivalent figures (what the official script would
print from the same judge answers); our stricter figures carry their own keys (`docs/evaluation.md`).
"""

from __future__ import annotations

import textwrap
from collections import Counter
from pathlib import Path

from omnidrive_r1.eval.drivelmm_scoring import (
    METRICS,
    PUBLISHED,
    aggregate_judgments,
    official_reasoning_score,
)


def _percent(rows: list[dict], key: str) -> float | None:
    return 100 * sum(bool(r[key]) for r in rows) / len(rows) if rows else None


def _mean_percent(values: list[float]) -> float | None:
    return 100 * sum(values) / len(values) if values else None


def summarise(records: list[dict], judge_config, accounting: dict) -> dict:
    judge_on = judge_config is not None
    mcq = [r for r in records if r["is_mcq"]]
    # the official script drops a row whose judge call (or reply parse) failed, from both figures
    kept = [r for r in records if r.get("official_scores") is not None] if judge_on else records
    kept_mcq = [r for r in kept if r["is_mcq"]]
    ours = [r["judge"]["scores"] for r in records if (r.get("judge") or {}).get("scores")]
    failed = [r for r in records if not (r.get("judge") or {}).get("scores")] if judge_on else []
    agg = aggregate_judgments(ours)
    return {
        "rows_in_test_set": accounting["rows_in_test_set"],
        "rows_evaluated": len(records),
        "rows_skipped": accounting.get("skipped", {}),
        "mcq_rows": len(mcq),
        # official-equivalent: the official extraction and comparison, over the rows the official script keeps
        "mcq_accuracy": _percent(kept_mcq, "mcq_correct"),
        "reasoning_score": official_reasoning_score([r["official_scores"] for r in kept]) if judge_on else None,
        "official_rows_kept": len(kept),
        # ours: every MCQ row, a missing letter on either side is wrong
        "mcq_accuracy_ours": _percent(mcq, "mcq_correct_ours"),
        "mcq_accuracy_strict": _percent(mcq, "mcq_correct_strict"),  # our <answer> parser instead of markers
        # open rows without a judge: the token F1 of the <answer> (the training reward of open rows), in %
        "open_rows": len(records) - len(mcq),
        "open_answer_f1": _mean_percent([r["answer_f1"] for r in records if "answer_f1" in r]),
        "reasoning_score_ours": agg["reasoning_score"],
        "sub_metrics": {m: agg[m] for m in METRICS},
        "judge": judge_config.prompt_source if judge_on else "off (pass --judge-url and --judge-model)",
        "judge_model": judge_config.model if judge_on else None,
        "judged": len(ours),
        "judge_failures": len(failed),
        "judge_failure_reasons": dict(Counter((r.get("judge") or {}).get("error") or "not judged" for r in failed)),
        **tool_figures(records),
        **{k: v for k, v in accounting.items() if k not in ("rows_in_test_set", "skipped")},
    }


TOOL_KEYS = ("tool_calls_per_question", "tool_failure_rate", "malformed_tool_calls", "zoom_iou", "zoom_iou_rows",
             "truncated")


def tool_figures(records: list[dict]) -> dict:
    """How the policy used its tool, for every benchmark: calls per question, the share of calls that failed,
    calls the parser could not read (left as raw `<tool_call>` text; not in the other two), zoom IoU against the ground-truth boxes (rows that have them and made a good call), rows cut off."""
    calls = [c for r in records for c in r.get("tool_calls") or []]
    ious = [r["zoom_iou"] for r in records if r.get("zoom_iou") is not None]
    return {
        "tool_calls_per_question": len(calls) / len(records) if records else 0.0,
        "tool_failure_rate": sum(not c["ok"] for c in calls) / len(calls) if calls else 0.0,
        "malformed_tool_calls": sum(r.get("malformed_tool_calls") or 0 for r in records),
        "zoom_iou": sum(ious) / len(ious) if ious else None,
        "zoom_iou_rows": len(ious),
        "truncated": sum(bool(r.get("truncated")) for r in records),
    }


def tool_lines(summary: dict) -> list[str]:
    return ["| tool use | value |", "|---|---|", *[f"| {k} | {fmt(summary[k])} |" for k in TOOL_KEYS]]


def fmt(v):
    return "n/a" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))


def write_summary(summary: dict, out: Path, title: str) -> None:
    s = summary
    lines = [f"# DriveLMM-o1 evaluation: {title}", "",
             f"Rows: {s['rows_evaluated']} evaluated of {s['rows_in_test_set']} in the test set.", ""]
    if s["rows_skipped"]:
        lines += ["Rows not evaluated:", *[f"- {n} {why}" for why, n in s["rows_skipped"].items()], ""]
    lines += [f"Judge: {s['judge']}" + (f" ({s['judge_model']})" if s["judge_model"] else "") + ".", ""]
    if s["judge_failures"]:
        n = s["judge_failures"]
        lines += [f"Judge failures: {n} {'row' if n == 1 else 'rows'} (the official script would drop them from both "
                  "of its figures; ours count them here):", *[f"- {n}: {why}" for why, n in s["judge_failure_reasons"].items()], ""]
    lines += ["| figure | official-equivalent | ours |", "|---|---|---|",
              f"| MCQ accuracy (%) | {fmt(s['mcq_accuracy'])} | {fmt(s['mcq_accuracy_ours'])} |",
              f"| reasoning score (%) | {fmt(s['reasoning_score'])} | {fmt(s['reasoning_score_ours'])} |",
              f"| rows counted | {s['official_rows_kept']} | {s['rows_evaluated']} |", "",
              f"MCQ accuracy with our strict `<answer>` parser: {fmt(s['mcq_accuracy_strict'])} % of {s['mcq_rows']} "
              "MCQ rows.", "", *([f"Open questions, token F1 of the answer (the training reward, no judge): "
                                   f"{fmt(s['open_answer_f1'])} % over {s['open_rows']} rows.", ""]
                                  if s.get("open_answer_f1") is not None else []), *tool_lines(s)]
    lines += ["", "| sub-metric (x10) | value |", "|---|---|"]
    lines += [f"| {m} | {fmt(v)} |" for m, v in s["sub_metrics"].items()]
    lines += ["", "Published (reasoning % / MCQ %): " + ", ".join(f"{k} {a}/{b}" for k, (a, b) in PUBLISHED.items())]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    plot_summary(summary, out / "summary.png", title)


def plot_summary(summary: dict, path: Path, title: str) -> None:
    import matplotlib  # only plots need it, and the backend is chosen before pyplot loads

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [*PUBLISHED, f"this run: {title}"]
    reasoning = [v[0] for v in PUBLISHED.values()] + [summary["reasoning_score"] or 0.0]
    mcq = [v[1] for v in PUBLISHED.values()] + [summary["mcq_accuracy"] or 0.0]
    fig, ax = plt.subplots(figsize=(11, 4.5))
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], reasoning, width=0.4, label="reasoning score %", color="#4c72b0")
    ax.bar([i + 0.2 for i in x], mcq, width=0.4, label="MCQ accuracy %", color="#dd8452")
    for i, (r, m) in enumerate(zip(reasoning, mcq)):
        ax.text(i - 0.2, r + 1, f"{r:.1f}", ha="center", fontsize=7)
        ax.text(i + 0.2, m + 1, f"{m:.1f}", ha="center", fontsize=7)
    if summary["reasoning_score"] is None:
        ax.text(len(names) - 1.2, 5, "no judge", fontsize=7, color="grey")
    ax.set_xticks(list(x), names, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_title("DriveLMM-o1 (official-equivalent figures): published results and this run")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def protocol_line(name: str, p: dict) -> str:
    """One sentence on how a published protocol's figure came about (`benchmarks.protocol_status`)."""
    line = (f"{name}: {p['decided_by_rule']} rows decided by its rules, {p['asked_judge']} asked of the judge"
            + (f" ({p['judge_model']})" if p.get("judge_model") else ""))
    if p["judge_failures"]:
        line += f", {p['judge_failures']} without a verdict (counted wrong)"
    if p["rule_only"]:
        line += (f". **Rule-only figure, not the published protocol**: {p['undecided_without_judge']} rows its rules "
                 "leave to a judge are counted wrong; pass --judge-url and --judge-model for the protocol's figure")
    return line + "."


def plot_published(published: dict, this_run: dict, path: Path, title: str, ylabel: str, *,
                   rule_only: set = frozenset()) -> None:
    """Bars: each published result, then this run's figures (`this_run`: label -> percent or None; None is drawn
    as "n/a"). A label in `rule_only` is hatched and marked: a rule-only stand-in, not the published protocol."""
    import matplotlib  # only plots need it, and the backend is chosen before pyplot loads

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [*published, *(f"this run: {k}" + (" (rule-only, not the published protocol)" if k in rule_only else "")
                           for k in this_run)]
    names = [textwrap.fill(n, 18) for n in names]
    values = [*published.values(), *((v or 0.0) for v in this_run.values())]
    missing = [False] * len(published) + [v is None for v in this_run.values()]
    colours = ["#999999"] * len(published) + ["#4c72b0", "#dd8452", "#55a868", "#c44e52"][:len(this_run)]
    hatches = [""] * len(published) + ["//" if k in rule_only else "" for k in this_run]
    fig, ax = plt.subplots(figsize=(max(5, 1.5 * len(names)), 4.8))
    bars = ax.bar(range(len(names)), values, color=colours)
    for bar, hatch in zip(bars, hatches):
        bar.set_hatch(hatch)
        if hatch:
            bar.set_alpha(0.55)
    for i, v in enumerate(values):
        ax.text(i, v + 1, "n/a" if missing[i] else f"{v:.1f}", ha="center", fontsize=8)
    ax.set_xticks(range(len(names)), names, fontsize=7)
    ax.set_ylim(0, 100)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{ylabel}: {title}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
