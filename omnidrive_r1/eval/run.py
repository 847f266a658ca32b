"""`omnidrive-r1 eval`: roll a policy out on DriveLMM-o1 rows (or read any model's official results file),
judge the reasoning, and report both the official-equivalent and our own figures (`docs/evaluation.md`).

OUT/run.json           what produced the generations (model and weights, rollout settings, data): a re-run
                       with anything else refuses instead of mixing two models' answers
OUT/generations.jsonl  one line per generated row (appended as rows finish: a re-run skips them)
OUT/judgments.jsonl    one line per judge outcome, with the raw reply (a re-run skips rows already judged
                       by the same judge)
OUT/rows.jsonl         everything per row: response, tool calls with boxes and crop sizes, letters, scores
OUT/results.json       the official results format [{"idx", "question", "llm-response"}]
OUT/summary.json, OUT/summary.md, OUT/summary.png
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

from omnidrive_r1.cache import content_key
from omnidrive_r1.errors import UserError
from omnidrive_r1.eval.drivelmm import (
    box_iou,
    official_export_response,
    official_mcq_correct,
    official_mcq_letter,
    official_reply_scores,
    official_truth_letter,
    our_mcq_correct,
    strict_mcq_letter,
)
from omnidrive_r1.eval.report import summarise, write_summary
from omnidrive_r1.jsonl import Appender, read_jsonl
from omnidrive_r1.protocol import final_answer, messages_text

log = logging.getLogger(__name__)

OUTPUTS = ("run.json", "generations.jsonl", "judgments.jsonl", "rows.jsonl", "results.json", "summary.json",
           "summary.md", "summary.png")


def weights_identity(model_dir: str | Path) -> list:
    """Names, sizes and modification times of a model directory's weight files: a retrained model differs."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return [str(model_dir)]  # a hub id
    return sorted([p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in model_dir.iterdir()
                  if p.suffix in (".safetensors", ".bin") or p.name in ("config.json", "adapter_config.json"))


def claim_output_dir(out: Path, produced_by: dict, overwrite: bool) -> None:
    """Make sure `out` holds nothing produced otherwise: refuse, or with `overwrite` remove our own outputs."""
    marker = out / "run.json"
    if marker.exists():
        before = json.loads(marker.read_text())
        # a key an older version did not write counts as unset (None), so its folders are still resumed
        differs = sorted(k for k in set(before) | set(produced_by) if before.get(k) != produced_by.get(k))
        if differs:
            if not overwrite:
                raise UserError(f"--out {out} holds an evaluation produced differently (differs in: {', '.join(differs)}); "
                                "pass --overwrite to replace it, or choose another --out")
            for name in OUTPUTS:
                (out / name).unlink(missing_ok=True)
    elif (out / "generations.jsonl").exists() and not overwrite:
        raise UserError(f"--out {out} holds generations of unknown origin; pass --overwrite or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(produced_by, indent=1))


def make_record(row: dict, rollout, frame: str | None = None) -> dict:
    """One generated row: the response as text, the parsed answer and every tool call (`frame`: the image file
    the policy saw, for `omnidrive-r1 view`)."""
    calls = [{"ok": c.ok, "reason": c.reason, "label": c.label, "bbox_2d": c.arguments.get("bbox_2d"),
              "box": list(c.box) if c.box else None, "crop_size": list(c.crop.size) if c.crop else None}
             for c in rollout.zoom_calls]
    record = {"idx": row["idx"], "question": row["question"], "final_answer": row["answer"], "steps": row["steps"],
              "is_mcq": row["is_mcq"], "response": messages_text(rollout.completion),
              "answer": final_answer(rollout.completion), "tool_calls": calls, "truncated": rollout.truncated,
              "dropped_tool_reply": rollout.dropped_tool_reply, "gt_box": row.get("gt_box"), "frame": frame}
    if row.get("gt_box") and any(c["ok"] for c in calls):
        record["zoom_iou"] = max(box_iou(c["box"], row["gt_box"]) for c in calls if c["ok"])
    return record


def score_record(record: dict) -> dict:
    """Both MCQ readings of a row. The ground truth's letter is read as the official script reads it."""
    if "llm_response" not in record:  # our generations: export so the official extraction finds our answer
        record["llm_response"] = official_export_response(record["response"], record.get("answer"))
    if record["is_mcq"]:
        truth = official_truth_letter(record["final_answer"])
        letter = official_mcq_letter(record["llm_response"])
        strict = strict_mcq_letter(record.get("response") or record["llm_response"])  # a results file: its text
        record.update(truth_letter=truth, official_letter=letter, strict_letter=strict,
                      mcq_correct=official_mcq_correct(truth, letter),  # the official comparison, row by row
                      mcq_correct_ours=our_mcq_correct(truth, letter),
                      mcq_correct_strict=our_mcq_correct(truth, strict))
    return record


def judge_rows(records: list[dict], judge_config, out: Path) -> dict[str, dict]:
    """Judge every row not yet judged by this same judge; returns idx -> judgment (with its raw reply)."""
    from tqdm.auto import tqdm

    from omnidrive_r1.eval.judge import Judge

    judge_key = content_key(judge_config.identity())
    judged = {r["idx"]: r for r in read_jsonl(out / "judgments.jsonl") if r.get("judge") == judge_key}
    done = {idx for idx, r in judged.items() if r.get("scores")}
    pending = [r for r in records if r["idx"] not in done]
    if done:
        print(f"resuming: {len(done)} rows already judged, {len(pending)} to go")
    append = Appender(out / "judgments.jsonl")

    def keep(j):
        row = {"idx": j.idx, "judge": judge_key, "scores": j.scores, "error": j.error, "attempts": j.attempts,
               "reply": j.reply}
        append(row)
        judged[j.idx] = row

    items = [{"idx": r["idx"], "question": r["question"], "steps": r["steps"], "final_answer": r["final_answer"],
              "response": r["llm_response"]} for r in pending]
    with tqdm(total=len(items), desc="judging", unit="row") as bar:
        Judge(judge_config).judge_many(items, on_done=lambda j: (keep(j), bar.update()))
    return judged


def finish(records: list[dict], out: Path, *, judge_config, title: str, accounting: dict) -> dict:
    """Score, judge, and write rows.jsonl, results.json and the summary."""
    records = [score_record(r) for r in records]
    judged = judge_rows(records, judge_config, out) if judge_config is not None else {}
    for r in records:
        j = judged.get(r["idx"])
        r["judge"] = {k: j[k] for k in ("scores", "error", "attempts")} if j else None
        # what the official script would make of the same reply: None drops the row from its figures
        r["official_scores"] = official_reply_scores(j.get("reply")) if j else None
    with open(out / "rows.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    (out / "results.json").write_text(json.dumps(
        [{"idx": r["idx"], "question": r["question"], "llm-response": r["llm_response"]} for r in records], indent=1))
    summary = summarise(records, judge_config, accounting)
    write_summary(summary, out, title)
    keys = ("rows_in_test_set", "rows_evaluated", "mcq_accuracy", "mcq_accuracy_ours", "mcq_accuracy_strict",
            "reasoning_score", "reasoning_score_ours", "judge_failures", "tool_calls_per_question", "zoom_iou")
    print(json.dumps({k: summary.get(k) for k in keys}, indent=1))
    return summary


def evaluate(model: str, data: str | Path, images_root: str | None = None, *, engine: str = "hf", judge_config=None,
             limit: int | None = None, out: str | Path = "outputs/eval", batch_size: int = 8, settings=None,
             tools: bool = True, overwrite: bool = False, mcq_only: bool = False,
             stitched_dir: str | Path | None = None) -> dict:
    """Roll `model` out on the DriveLMM-o1 file `data` (with the tool unless `tools=False`; its multiple-choice
    rows only with `mcq_only`) and score it. A file whose rows share an idx is refused, naming the idx."""
    from tqdm.auto import tqdm

    from omnidrive_r1.data.loaders import duplicate_idx_error, load_drivelmm, read_drivelmm_rows
    from omnidrive_r1.rollout import RolloutSettings, make_engine, rollout

    out = Path(out)
    settings = settings or RolloutSettings.of_model(model)
    raw_rows = read_drivelmm_rows(data)
    if error := duplicate_idx_error(data, raw_rows):  # records are keyed by idx: one would replace the other
        raise error
    total_rows = len(raw_rows)
    ds, report = load_drivelmm(data, images_root, limit=limit, skip_bad=True, stitched_dir=stitched_dir)
    print(report.summary())
    open_rows = 0
    if mcq_only:
        open_rows = len(ds) - sum(ds["is_mcq"])
        ds = ds.filter(lambda row: row["is_mcq"])
    claim_output_dir(out, {"model": str(Path(model).resolve()) if Path(model).exists() else model,
                           "weights": weights_identity(model), "engine": engine, "tools": tools,
                           "settings": settings.__dict__, "data": str(Path(data).resolve()), "limit": limit,
                           "mcq_only": mcq_only,
                           "stitched_dir": str(Path(stitched_dir).resolve()) if stitched_dir else None}, overwrite)
    generated = {r["idx"]: r for r in read_jsonl(out / "generations.jsonl")}
    todo = [i for i, idx in enumerate(ds["idx"]) if idx not in generated]
    if generated:
        print(f"resuming: {len(generated)} rows already generated, {len(todo)} to go")
    if todo:
        import datasets

        frames = ds.cast_column("image", datasets.Image(decode=False))["image"]
        runner, processor = make_engine(engine, model, settings)
        append = Appender(out / "generations.jsonl")
        for start in tqdm(range(0, len(todo), batch_size), desc="generating", unit="batch"):
            batch = todo[start:start + batch_size]
            rows = [ds[i] for i in batch]
            for i, row, r in zip(batch, rows, rollout(runner, processor, rows, settings, tools=tools)):
                record = make_record(row, r, frame=frames[i].get("path"))
                append(record)
                generated[record["idx"]] = record
    records = [generated[idx] for idx in ds["idx"]]
    skipped = Counter(report.skipped)
    if limit and total_rows - report.rows_read:
        skipped["left out by --limit"] = total_rows - report.rows_read
    if open_rows:
        skipped["open questions, left out by --mcq-only"] = open_rows
    accounting = {"rows_in_test_set": total_rows, "skipped": dict(skipped), "engine": engine, "tools": tools,
                  "settings": settings.__dict__}
    return finish(records, out, judge_config=judge_config, title=Path(model).name if Path(model).exists() else model,
                  accounting=accounting)


def score_results(results: str | Path, data: str | Path, *, judge_config=None, out: str | Path,
                  overwrite: bool = False) -> dict:
    """Score an official-format results file ([{"idx", "question", "llm-response"}], any model's) against the
    DriveLMM-o1 file `data`, generating nothing. Images are not needed."""
    from omnidrive_r1.data.loaders import (
        DRIVELMM_MCQ_QNUMS,
        RowError,
        drivelmm_truth,
        duplicate_idx_error,
        read_drivelmm_rows,
    )

    out, results = Path(out), Path(results)
    rows = read_drivelmm_rows(data)
    if error := duplicate_idx_error(data, rows):
        raise error
    truth, no_truth = {}, {}
    for row in rows:
        if isinstance(row, dict) and isinstance(row.get("idx"), str):
            if "final_answer" in row:  # TEST rows, read as the official script reads them
                truth[row["idx"]] = (row, str(row.get("steps") or ""), str(row["final_answer"]))
                continue
            try:  # TRAIN rows: one answer holding the reasoning and the final answer
                truth[row["idx"]] = (row, *drivelmm_truth(row))
            except RowError as e:
                no_truth[row["idx"]] = f"no usable ground truth in the test set ({e.reason})"
    try:
        items = json.loads(results.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{results}: not a readable JSON results file ({e})") from None
    if not isinstance(items, list):
        raise UserError(f"{results}: expected a JSON list of {{idx, question, llm-response}}")
    claim_output_dir(out, {"results": str(results.resolve()), "results_file": [results.stat().st_size,
                                                                          results.stat().st_mtime_ns],
                           "data": str(Path(data).resolve())}, overwrite)
    records, skipped, seen = [], Counter(), set()
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("llm-response"), str) or "idx" not in item:
            raise UserError(f"{results}, item {i}: needs idx, question and llm-response (text)")
        idx = str(item["idx"])
        if idx in seen:
            raise UserError(f"{results}, item {i}: idx {idx!r} appears twice")
        seen.add(idx)
        if idx in no_truth:
            skipped[no_truth[idx]] += 1
            continue
        if idx not in truth:  # the official script ignores these too
            skipped["not in the test set"] += 1
            continue
        row, steps, final = truth[idx]
        qnum = idx.rsplit("_", 1)[-1]
        records.append({"idx": idx, "question": str(item.get("question", row.get("question", ""))),
                        "final_answer": final, "steps": steps,
                        "is_mcq": qnum.isdigit() and int(qnum) in DRIVELMM_MCQ_QNUMS,
                        "llm_response": item["llm-response"], "tool_calls": []})
    missing = len((set(truth) | set(no_truth)) - seen)
    if missing:
        skipped["no response in the results file"] = missing
    accounting = {"rows_in_test_set": len(truth) + len(no_truth), "skipped": dict(skipped),
                  "results_file": str(results)}
    return finish(records, out, judge_config=judge_config, title=results.name, accounting=accounting)
