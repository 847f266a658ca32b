"""`omnidrive-r1 eval`: roll a policy out on a benchmark's rows (DriveLMM-o1 by default; `--benchmark vstar`,
`hrbench`: the modules of `omnidrive_r1/eval/benchmarks/`), or read a results file made anywhere (DriveLMM-o1's
official format; V* Bench and HR-Bench: `docs/benchmarks.md`), and score it (`docs/evaluation.md`). What is shared by every benchmark lives here:

OUT/run.json           what produced the generations (benchmark, model and weights, rollout settings, data): a
                       re-run with anything else refuses instead of mixing two models' answers
OUT/generations.jsonl  one line per generated row (appended as rows finish: a re-run skips them)
OUT/judgments.jsonl    one line per judge outcome, with the raw reply (a re-run skips rows already judged
                       by the same judge)
OUT/rows.jsonl         everything per row: response, tool calls with boxes and crop sizes, the benchmark's scores
OUT/summary.json, OUT/summary.md, OUT/summary.png, and what the benchmark adds (DriveLMM-o1: OUT/results.json,
                       the official results format [{"idx", "question", "llm-response"}])
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import torch
from tqdm.auto import tqdm

from omnidrive_r1.data.loaders import (
    DRIVELMM_MCQ_QNUMS,
    RowError,
    _open_image,
    drivelmm_truth,
    duplicate_idx_error,
    read_drivelmm_rows,
)
from omnidrive_r1.disk_cache import content_key
from omnidrive_r1.errors import UserError
from omnidrive_r1.eval import benchmarks
from omnidrive_r1.eval.drivelmm_scoring import box_iou
from omnidrive_r1.eval.judge import Judge
from omnidrive_r1.jsonl import Appender, read_jsonl
from omnidrive_r1.policies import family_of
from omnidrive_r1.protocol import assistant_turns, final_answer, messages_text, text_of
from omnidrive_r1.rollout import RolloutSettings, make_engine, rollout

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
    produced_by = {"benchmark": "drivelmm", **produced_by}
    if marker.exists():
        before = json.loads(marker.read_text())
        before.setdefault("benchmark", "drivelmm")  # written before there was a choice
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


def zoom_iou(calls: list[dict], gt_boxes: list) -> float | None:
    """Each ground-truth box's best IoU over the good calls' boxes, averaged over the boxes; None without both."""
    boxes = [c["box"] for c in calls if c["ok"] and c.get("box")]
    if not boxes or not gt_boxes:
        return None
    return sum(max(box_iou(b, gt) for b in boxes) for gt in gt_boxes) / len(gt_boxes)


def make_record(row: dict, rollout) -> dict:
    """One generated row: the response as text, the parsed answer, every tool call, and the benchmark's own
    fields (`row["fields"]`); `frame`: the image file the policy saw, for `omnidrive-r1 view`."""
    calls = [{"ok": c.ok, "reason": c.reason, "label": c.label, "bbox_2d": c.arguments.get("bbox_2d"),
              "box": list(c.box) if c.box else None, "crop_size": list(c.crop.size) if c.crop else None}
             for c in rollout.zoom_calls]
    # a call the parser could not read stays in the text as raw <tool_call> (the format reward's rule)
    malformed = sum(text_of(m.get("content")).count("<tool_call>") for m in assistant_turns(rollout.completion))
    record = {"idx": row["idx"], "question": row["question"], **row.get("fields", {}),
              "response": messages_text(rollout.completion), "answer": final_answer(rollout.completion),
              "tool_calls": calls, "malformed_tool_calls": malformed, "truncated": rollout.truncated,
              "dropped_tool_reply": rollout.dropped_tool_reply,
              "gt_boxes": row.get("gt_boxes") or [], "frame": row.get("frame")}
    iou = zoom_iou(calls, record["gt_boxes"])
    if iou is not None:
        record["zoom_iou"] = iou
    return record


def judge_config_for(kind: str, base):
    """The judge request of one kind: DriveLMM-o1's reasoning judge as configured, or the same endpoint asking a
    yes/no (`yesno`) or consistency (`consistency`) question."""
    return base if kind == "drivelmm" else base.as_layout(kind)


def judge_rows(records: list[dict], judge_config, out: Path, bench) -> dict[str, dict[str, dict]]:
    """Ask the judge what the benchmark asks of each row (`bench.judge_asks`: one request per kind, none for a
    row its rules decide), skipping rows this same judge already answered; returns idx -> kind -> judgment (with
    its raw reply)."""
    asks = {r["idx"]: bench.judge_asks(r) for r in records}
    judged: dict[str, dict[str, dict]] = {}
    append = Appender(out / "judgments.jsonl")
    for kind in sorted({k for per_row in asks.values() for k in per_row}):
        config = judge_config_for(kind, judge_config)
        judge_key = content_key(config.identity())
        before = {r["idx"]: r for r in read_jsonl(out / "judgments.jsonl")
                  if r.get("judge") == judge_key and r.get("kind", bench.judge) == kind}
        for idx, r in before.items():
            judged.setdefault(idx, {})[kind] = r
        done = {idx for idx, r in before.items() if r.get("scores")}
        items = [per_row[kind] for idx, per_row in asks.items() if kind in per_row and idx not in done]
        if done:
            print(f"resuming ({kind} judge): {len(done)} rows already judged, {len(items)} to go")

        def keep(j, kind=kind, judge_key=judge_key):
            row = {"idx": j.idx, "kind": kind, "judge": judge_key, "scores": j.scores, "error": j.error,
                   "attempts": j.attempts, "reply": j.reply}
            append(row)
            judged.setdefault(j.idx, {})[kind] = row

        with tqdm(total=len(items), desc=f"judging ({kind})", unit="row") as bar:
            Judge(config).judge_many(items, on_done=lambda j, keep=keep: (keep(j), bar.update()))
    return judged


def finish(records: list[dict], out: Path, *, bench, judge_config, title: str, accounting: dict) -> dict:
    """Score, judge, and write rows.jsonl, summary.json and the benchmark's own outputs."""
    records = [bench.score(r) for r in records]
    judged = judge_rows(records, judge_config, out, bench) if judge_config is not None else {}
    for r in records:
        per_kind = judged.get(r["idx"], {})
        r["judge"] = {kind: {k: j[k] for k in ("scores", "error", "attempts")} for kind, j in per_kind.items()}
        r["judge"] = r["judge"].get(bench.judge) if bench.judge == "drivelmm" else r["judge"] or None
        if judge_config is not None:
            bench.judged(r, per_kind)
    with open(out / "rows.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    summary = bench.summarise(records, judge_config, accounting)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    bench.write_outputs(records, summary, out, title)
    print(json.dumps({k: summary[k] for k in bench.headline if k in summary}, indent=1))
    return summary


def open_rows(rows: list[dict]) -> list[dict]:
    """The rows with their image opened (the rollout and the zoom tool take a picture), `frame` its path."""
    return [{**row, "frame": row["image"], "image": _open_image(Path(row["image"]))} for row in rows]


SAMPLE_SEED = 0


def evaluate(model: str, data: str | Path, images_root: str | None = None, *,
             benchmark: str = "drivelmm", engine: str = "hf", judge_config=None, limit: int | None = None,
             out: str | Path = "outputs/eval", batch_size: int = 8, settings=None, tools: bool = True,
             overwrite: bool = False, sample: bool = False, **options) -> dict:
    """Roll `model` out on `benchmark`'s rows from `data` (its published format), with the tool unless
    `tools=False`, and score it; greedy, or with `sample` at the settings' temperature (torch seeded with
    `SAMPLE_SEED`: a rerun on the same machine draws the same rollouts). `options` go to the benchmark's loader
    (DriveLMM-o1: `mcq_only`, `open_only`, `stitched_dir`)."""
    bench = benchmarks.get(benchmark)
    if judge_config is not None and bench.judge is None:
        raise UserError(f"{bench.title} is scored by rule; it takes no judge (--judge-url)")
    if not data:
        raise UserError(f"--data is needed: the {bench.title} file or folder to evaluate on")
    data = str(data)
    out = Path(out)
    settings = settings or RolloutSettings.of_model(model)

    loaded = bench.load(data, images_root=images_root, limit=limit, system_prompt=family_of(model).system_prompt(),
                        **options)
    print(loaded.note)
    rows = loaded.rows
    claim_output_dir(out, {"benchmark": bench.name,
                           "model": str(Path(model).resolve()) if Path(model).exists() else model,
                           "weights": weights_identity(model), "engine": engine, "tools": tools,
                           "settings": settings.as_json(), "data": str(Path(data).resolve()), "limit": limit,
                           **bench.produced_by(**options),
                           **({"sample": {"temperature": settings.temperature, "seed": SAMPLE_SEED}} if sample else {})},
                      overwrite)
    generated = {r["idx"]: r for r in read_jsonl(out / "generations.jsonl")}
    todo = [row for row in rows if row["idx"] not in generated]
    if generated:
        print(f"resuming: {len(generated)} rows already generated, {len(todo)} to go")
    if todo:
        runner, processor = make_engine(engine, model, settings)
        if sample:
            torch.manual_seed(SAMPLE_SEED + len(generated))  # a resumed run does not repeat the first draws
        append = Appender(out / "generations.jsonl")
        for start in tqdm(range(0, len(todo), batch_size), desc="generating", unit="batch"):
            batch = open_rows(todo[start:start + batch_size])
            for row, r in zip(batch, rollout(runner, processor, batch, settings, tools=tools, do_sample=sample)):
                record = make_record(row, r)
                append(record)
                generated[record["idx"]] = record
    records = [generated[row["idx"]] for row in rows]
    accounting = {"rows_in_test_set": loaded.rows_in_file, "skipped": dict(loaded.skipped), "engine": engine,
                  "tools": tools, "settings": settings.as_json(), "data": data}
    return finish(records, out, bench=bench, judge_config=judge_config,
                  title=Path(model).name if Path(model).exists() else model, accounting=accounting)


def score_results(results: str | Path, data: str | Path, *, judge_config=None, out: str | Path,
                  overwrite: bool = False) -> dict:
    """Score an official-format results file ([{"idx", "question", "llm-response"}], any model's) against the
    DriveLMM-o1 file `data`, generating nothing. Images are not needed."""
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
    return finish(records, out, bench=benchmarks.get("drivelmm"), judge_config=judge_config, title=results.name,
                  accounting=accounting)


RESULT_ID_KEYS = ("idx", "index", "id")
RESULT_TEXT_KEYS = ("response", "prediction", "llm-response", "pred_ans", "output")


def read_results(results: Path) -> list[dict]:
    """A results file's rows: a JSON list, a JSON object keyed by id, or JSON lines."""
    try:
        text = results.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{results}: not readable ({e})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        try:
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as e:
            raise UserError(f"{results}: neither JSON nor JSON lines ({e})") from None
    if isinstance(data, dict):
        data = [{"idx": k, **(v if isinstance(v, dict) else {"response": v})} for k, v in data.items()]
    if not isinstance(data, list):
        raise UserError(f"{results}: expected a list of rows, each with an id ({', '.join(RESULT_ID_KEYS)}) "
                        f"and a text ({', '.join(RESULT_TEXT_KEYS)})")
    return data


def score_choice_results(results: str | Path, data: str | Path, *, benchmark: str, judge_config=None,
                         out: str | Path, overwrite: bool = False) -> dict:
    """Score a results file made elsewhere (another framework, a served model) on a multiple-choice benchmark
    (`vstar`, `hrbench`): each row an id of the benchmark's data and the model's text, generating nothing and
    needing no image. Rows of the data without a response are counted, never guessed."""
    bench = benchmarks.get(benchmark)
    out, results = Path(out), Path(results)
    loaded = bench.load(str(data), images=False)
    rows = {r["idx"]: r for r in loaded.rows}
    items = read_results(results)
    claim_output_dir(out, {"benchmark": bench.name, "results": str(results.resolve()),
                           "results_file": [results.stat().st_size, results.stat().st_mtime_ns],
                           "data": str(Path(data).resolve())}, overwrite)
    answered: dict[str, dict] = {}
    skipped = Counter()
    for i, item in enumerate(items):
        given = next((item[k] for k in RESULT_ID_KEYS if isinstance(item, dict) and k in item), None)
        text = next((item[k] for k in RESULT_TEXT_KEYS if isinstance(item, dict) and k in item), None)
        if given is None or not isinstance(text, str):
            raise UserError(f"{results}, row {i}: needs an id ({' or '.join(RESULT_ID_KEYS)}) and a text "
                            f"({' or '.join(RESULT_TEXT_KEYS)})")
        idx = bench.result_row(str(given), rows)
        if idx is None:
            skipped["not in the benchmark's data"] += 1
            continue
        if idx in answered:
            raise UserError(f"{results}, row {i}: {given!r} answers row {idx!r} a second time")
        row = rows[idx]
        answered[idx] = {"idx": idx, "question": row["question"], **row.get("fields", {}), "response": text,
                         "answer": None, "tool_calls": [], "malformed_tool_calls": 0,
                         "gt_boxes": row.get("gt_boxes") or [], "frame": row.get("image")}
    rotated = any(r.get("rotation", 0) for r in answered.values())
    # a file that answers the file order only (V*'s published way) leaves the other rotations out by design
    expected = [idx for idx, r in rows.items() if rotated or r.get("fields", {}).get("rotation", 0) == 0]
    if missing := sum(idx not in answered for idx in expected):
        skipped["no response in the results file"] = missing
    if not answered:
        raise UserError(f"{results}: no row names a row of {data} (ids such as {next(iter(rows), '?')!r})")
    print(f"{results}: {len(answered)} responses scored against {data}" + (
        " (" + ", ".join(f"{n} {why}" for why, n in skipped.items()) + ")" if skipped else ""))
    records = [answered[idx] for idx in rows if idx in answered]
    accounting = {"rows_in_test_set": loaded.rows_in_file, "skipped": {**dict(loaded.skipped), **skipped},
                  "results_file": str(results), "data": str(data)}
    return finish(records, out, bench=bench, judge_config=judge_config, title=results.name, accounting=accounting)
