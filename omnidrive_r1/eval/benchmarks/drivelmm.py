"""DriveLMM-o1 (the default benchmark): MCQ accuracy read as the official script reads it and as we do, and the
reasoning score from the 12-metric judge (`docs/evaluation.md`; rules in `omnidrive_r1/eval/drivelmm_scoring.py`)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import datasets

from omnidrive_r1.data.loaders import duplicate_idx_error, load_drivelmm, read_drivelmm_rows
from omnidrive_r1.eval.benchmarks import Benchmark, Loaded
from omnidrive_r1.eval.drivelmm_scoring import (
    official_export_response,
    official_mcq_correct,
    official_mcq_letter,
    official_reply_scores,
    official_truth_letter,
    our_mcq_correct,
    strict_mcq_letter,
)
from omnidrive_r1.eval.report import summarise, write_summary
from omnidrive_r1.rewards.answer_accuracy import token_f1


class DriveLMM(Benchmark):
    name = "drivelmm"
    title = "DriveLMM-o1"
    judge = "drivelmm"
    headline = ("rows_in_test_set", "rows_evaluated", "mcq_accuracy", "mcq_accuracy_ours", "mcq_accuracy_strict",
                "open_answer_f1",
                "reasoning_score", "reasoning_score_ours", "judge_failures", "tool_calls_per_question", "zoom_iou")

    def load(self, data, *, images_root=None, limit=None, system_prompt=None, stitched_dir=None,
             mcq_only=False, open_only=False) -> Loaded:
        """The DriveLMM-o1 file's rows (bad rows skipped and counted; a file whose rows share an idx is refused,
        naming the idx); with `mcq_only` its multiple-choice rows only, with `open_only` its open questions only."""
        raw_rows = read_drivelmm_rows(data)
        if error := duplicate_idx_error(data, raw_rows):  # records are keyed by idx: one would replace the other
            raise error
        ds, report = load_drivelmm(data, images_root, limit=limit, skip_bad=True, stitched_dir=stitched_dir,
                                   **({"system_prompt": system_prompt} if system_prompt else {}))
        skipped = Counter(report.skipped)
        if limit and len(raw_rows) - report.rows_read:
            skipped["left out by --limit"] = len(raw_rows) - report.rows_read
        if mcq_only:
            open_rows = len(ds) - sum(ds["is_mcq"])
            ds = ds.filter(lambda row: row["is_mcq"])
            if open_rows:
                skipped["open questions, left out by --mcq-only"] = open_rows
        if open_only:
            mcq_rows = sum(ds["is_mcq"])
            ds = ds.filter(lambda is_mcq: not is_mcq, input_columns="is_mcq")
            if mcq_rows:
                skipped["multiple-choice questions, left out by --open-only"] = mcq_rows
        frames = ds.cast_column("image", datasets.Image(decode=False))["image"]
        rows = []
        for i, row in enumerate(ds.remove_columns("image")):
            box = row["gt_box"] or None
            rows.append({"idx": row["idx"], "prompt": row["prompt"], "image": frames[i]["path"],
                         "question": row["question"], "gt_boxes": [box] if box else [],
                         "fields": {"final_answer": row["answer"], "steps": row["steps"], "is_mcq": row["is_mcq"],
                                    "gt_box": box}})
        return Loaded(rows, len(raw_rows), skipped, report.summary())

    def produced_by(self, *, stitched_dir=None, mcq_only=False, open_only=False) -> dict:
        # the keys an evaluation folder has always recorded, so older folders are resumed
        keys = {"mcq_only": mcq_only, "stitched_dir": str(Path(stitched_dir).resolve()) if stitched_dir else None}
        return {**keys, "open_only": True} if open_only else keys

    def score(self, record: dict) -> dict:
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
        elif "response" in record:  # our generation of an open row: the training reward's token F1 of its answer
            record["answer_f1"] = token_f1(record["answer"], record["final_answer"]) if record.get("answer") else 0.0
        record["correct"] = record.get("mcq_correct_ours") if record["is_mcq"] else None
        return record

    def judge_asks(self, record: dict) -> dict[str, dict]:
        return {"drivelmm": {"idx": record["idx"], "question": record["question"], "steps": record["steps"],
                             "final_answer": record["final_answer"], "response": record["llm_response"]}}

    def judged(self, record: dict, judgments: dict[str, dict]) -> None:
        # what the official script would make of the same reply: None drops the row from its figures
        judgment = judgments.get("drivelmm")
        record["official_scores"] = official_reply_scores(judgment.get("reply")) if judgment else None

    def summarise(self, records, judge_config, accounting) -> dict:
        return summarise(records, judge_config, accounting)

    def write_outputs(self, records, summary, out, title) -> None:
        (Path(out) / "results.json").write_text(json.dumps(
            [{"idx": r["idx"], "question": r["question"], "llm-response": r["llm_response"]} for r in records],
            indent=1))
        write_summary(summary, Path(out), title)


BENCHMARK = DriveLMM()
