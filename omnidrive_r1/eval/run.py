"""`omnidrive-r1 eval`: roll the policy out on DriveLMM-o1 rows with the zoom tool, judge, summarise.

OUT/generations.jsonl  one line per generated row (appended as rows finish: a re-run skips them)
OUT/judgments.jsonl    one line per judge attempt outcome (a re-run skips rows already judged)
OUT/rows.jsonl         everything per row: response, tool calls with boxes and crop sizes, answers, scores
OUT/results.json       the official results format [{"idx", "question", "llm-response"}]
OUT/summary.json, OUT/summary.md, OUT/summary.png
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from pathlib import Path

from omnidrive_r1.eval.drivelmm import (
    METRICS,
    PUBLISHED,
    aggregate_judgments,
    box_iou,
    official_export_response,
    official_mcq_letter,
    strict_mcq_letter,
)
from omnidrive_r1.protocol import final_answer, mcq_letter, text_of

log = logging.getLogger(__name__)


def _read_jsonl(path: Path) -> dict[str, dict]:
    rows = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by an interrupted run
            rows[row["idx"]] = row
    return rows


class _Appender:
    """Thread-safe JSONL appender (judge workers finish concurrently)."""

    def __init__(self, path: Path):
        self.path, self.lock = path, threading.Lock()

    def __call__(self, row: dict):
        with self.lock, open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


def response_text(completion: list[dict]) -> str:
    """The whole response as text: each assistant turn, its tool calls, and the tool's text replies."""
    parts = []
    for m in completion:
        if m["role"] == "assistant":
            parts.append(text_of(m.get("content")))
            for call in m.get("tool_calls") or []:
                fn = call.get("function", call)
                parts.append("<tool_call>" + json.dumps({"name": fn.get("name"), "arguments": fn.get("arguments")},
                                                        default=str) + "</tool_call>")
        elif m["role"] == "tool":
            content = m.get("content")
            text = "".join("<image>" if b.get("type") == "image" else b.get("text", "") for b in content) \
                if isinstance(content, list) else str(content)
            parts.append(f"<tool_response>{text}</tool_response>")
    return "\n".join(p for p in parts if p)


def make_record(row: dict, rollout) -> dict:
    response = response_text(rollout.completion)
    answer = final_answer(rollout.completion)
    calls = [{"ok": c.ok, "reason": c.reason, "label": c.label, "bbox_2d": c.arguments.get("bbox_2d"),
              "box": list(c.box) if c.box else None, "crop_size": list(c.crop.size) if c.crop else None}
             for c in rollout.zoom_calls]
    record = {"idx": row["idx"], "question": row["question"], "final_answer": row["answer"], "steps": row["steps"],
              "is_mcq": row["is_mcq"], "response": response, "answer": answer, "tool_calls": calls,
              "truncated": rollout.truncated, "gt_box": row.get("gt_box")}
    if row.get("gt_box") and any(c["ok"] for c in calls):
        record["zoom_iou"] = max(box_iou(c["box"], row["gt_box"]) for c in calls if c["ok"])
    return record


def score_record(record: dict) -> dict:
    """Add the exported response and both MCQ parses (official rules, our strict `<answer>`)."""
    export = official_export_response(record["response"], record.get("answer"))
    record["llm_response"] = export
    if record["is_mcq"]:
        truth = mcq_letter(record["final_answer"])
        record["official_letter"] = official_mcq_letter(export)
        record["strict_letter"] = strict_mcq_letter(record["response"])
        record["mcq_correct"] = record["official_letter"] == truth
        record["mcq_correct_strict"] = record["strict_letter"] == truth
    return record


def summarise(records: list[dict], judged: dict[str, dict], judge_enabled: bool) -> dict:
    mcq = [r for r in records if r["is_mcq"]]
    calls = [c for r in records for c in r["tool_calls"]]
    scores = [judged[r["idx"]]["scores"] for r in records if judged.get(r["idx"], {}).get("scores")]
    # with a judge, every row without scores is a failure, reported with its reason (never dropped)
    failed = [judged.get(r["idx"], {}) for r in records if not judged.get(r["idx"], {}).get("scores")] \
        if judge_enabled else []
    ious = [r["zoom_iou"] for r in records if "zoom_iou" in r]
    agg = aggregate_judgments(scores)
    return {
        "rows": len(records),
        "mcq_rows": len(mcq),
        "mcq_accuracy": 100 * sum(r["mcq_correct"] for r in mcq) / len(mcq) if mcq else None,
        "mcq_accuracy_strict": 100 * sum(r["mcq_correct_strict"] for r in mcq) / len(mcq) if mcq else None,
        "reasoning_score": agg["reasoning_score"],
        "sub_metrics": {m: agg[m] for m in METRICS},
        "judge": "on" if judge_enabled else "off (pass --judge-url and --judge-model)",
        "judged": len(scores),
        "judge_failures": len(failed),
        "judge_failure_reasons": dict(Counter(f.get("error") or "not judged" for f in failed)),
        "tool_calls_per_question": len(calls) / len(records) if records else 0.0,
        "tool_failure_rate": sum(not c["ok"] for c in calls) / len(calls) if calls else 0.0,
        "zoom_iou": sum(ious) / len(ious) if ious else None,
        "zoom_iou_rows": len(ious),
        "truncated": sum(r["truncated"] for r in records),
    }


def _fmt(v):
    return "n/a" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))


def write_summary(summary: dict, out: Path, model_name: str):
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    lines = [f"# DriveLMM-o1 evaluation: {model_name}", "", "| metric | value |", "|---|---|"]
    for key in ("rows", "mcq_rows", "mcq_accuracy", "mcq_accuracy_strict", "reasoning_score", "judge", "judged",
                "judge_failures", "tool_calls_per_question", "tool_failure_rate", "zoom_iou", "zoom_iou_rows",
                "truncated"):
        lines.append(f"| {key} | {_fmt(summary[key])} |")
    lines += ["", "| sub-metric (x10) | value |", "|---|---|"]
    lines += [f"| {m} | {_fmt(v)} |" for m, v in summary["sub_metrics"].items()]
    lines += ["", "Published (reasoning % / MCQ %): " + ", ".join(f"{k} {a}/{b}" for k, (a, b) in PUBLISHED.items())]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    plot_summary(summary, out / "summary.png", model_name)


def plot_summary(summary: dict, path: Path, model_name: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [*PUBLISHED, f"ours: {model_name}"]
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
    ax.set_title("DriveLMM-o1: published results and this run")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def evaluate(model: str | None, data: str, images_root: str | None = None, *, engine: str = "hf",
             judge_config=None, limit: int | None = None, out: str = "outputs/eval", batch_size: int = 8,
             max_turns: int = 4, max_new_tokens: int = 512, tools: list | None = None) -> dict:
    from tqdm.auto import tqdm
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from omnidrive_r1 import templates
    from omnidrive_r1.data.loaders import load_drivelmm
    from omnidrive_r1.eval.judge import Judge
    from omnidrive_r1.rollout import HFEngine, VLLMEngine, rollout
    from omnidrive_r1.tiny import build_tiny_policy

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ds, report = load_drivelmm(data, images_root, limit=limit, skip_bad=True)
    print(report.summary())
    model_dir = model or str(build_tiny_policy())
    processor = templates.install(AutoProcessor.from_pretrained(model_dir))
    size = processor.image_processor.size
    tool_specs = tools or [{"name": "zoom_in"}]
    for spec in tool_specs:
        if spec.get("name") == "zoom_in":
            spec.setdefault("min_pixels", size["shortest_edge"])
            spec.setdefault("max_pixels", size["longest_edge"])

    generated = _read_jsonl(out / "generations.jsonl")
    todo = [i for i, idx in enumerate(ds["idx"]) if idx not in generated]
    if generated:
        print(f"resuming: {len(generated)} rows already generated, {len(todo)} to go")
    if todo:
        if engine == "vllm":
            runner = VLLMEngine(model_dir, processor, max_images=1 + max_turns)
        elif engine == "hf":
            runner = HFEngine(AutoModelForImageTextToText.from_pretrained(model_dir, dtype="auto").eval(), processor)
        else:
            raise ValueError(f"--engine must be hf or vllm, got {engine!r}")
        append = _Appender(out / "generations.jsonl")
        for start in tqdm(range(0, len(todo), batch_size), desc="generating", unit="batch"):
            rows = [ds[i] for i in todo[start:start + batch_size]]
            for row, r in zip(rows, rollout(runner, processor, rows, tool_specs, max_turns=max_turns,
                                            max_new_tokens=max_new_tokens)):
                record = make_record(row, r)
                append(record)
                generated[record["idx"]] = record
    records = [score_record(generated[idx]) for idx in ds["idx"]]

    judged = {k: v for k, v in _read_jsonl(out / "judgments.jsonl").items() if v.get("scores")}
    if judge_config is not None:
        pending = [r for r in records if r["idx"] not in judged]
        if judged:
            print(f"resuming: {len(judged)} rows already judged, {len(pending)} to go")
        append = _Appender(out / "judgments.jsonl")

        def keep(j):
            row = {"idx": j.idx, "scores": j.scores, "error": j.error, "attempts": j.attempts}
            append(row)
            judged[j.idx] = row

        items = [{"idx": r["idx"], "question": r["question"], "steps": r["steps"], "final_answer": r["final_answer"],
                  "response": r["llm_response"]} for r in pending]
        with tqdm(total=len(items), desc="judging") as bar:
            Judge(judge_config).judge_many(items, on_done=lambda j: (keep(j), bar.update()))

    for r in records:
        r["judge"] = judged.get(r["idx"])
    with open(out / "rows.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    (out / "results.json").write_text(json.dumps(
        [{"idx": r["idx"], "question": r["question"], "llm-response": r["llm_response"]} for r in records], indent=1))
    summary = summarise(records, judged, judge_config is not None)
    summary["load_skipped"] = dict(report.skipped)
    write_summary(summary, out, Path(model_dir).name)
    print(json.dumps({k: summary[k] for k in ("rows", "mcq_accuracy", "mcq_accuracy_strict", "reasoning_score",
                                              "judge_failures", "tool_calls_per_question", "zoom_iou")}, indent=1))
    return summary
