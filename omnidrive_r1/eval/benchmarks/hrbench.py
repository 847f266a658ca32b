"""HR-Bench 4K / 8K: multiple choice on 4K and 8K images (`docs/evaluation.md`).

The published file is one TSV: `index, question, answer (the right letter), A, B, C, D, category (FSP: single
instance, FCP: cross instance), cycle_category, image (base64)`; each question appears once per rotation of
its options, and `cycle_category` names the rotation a row belongs to. An `image` field that holds another row's
index (as VLMEvalKit writes repeated images) means that row's image.

Scoring follows the official order: accuracy per category within each cycle, then the mean over the cycles
(per category, and overall from each cycle's accuracy over all its rows). The official scoring asks a judge
model whether the response answers the question; here the letter is read by rule (`choice_letter`), and with
`--judge-url` / `--judge-model` a judge asks the same yes/no question and its figures are reported beside ours.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import io
import sys
from collections import Counter, defaultdict
from pathlib import Path

from omnidrive_r1.data.loaders import DataError
from omnidrive_r1.errors import UserError
from omnidrive_r1.eval.benchmarks import (
    LETTERS,
    Benchmark,
    Loaded,
    choice_letter,
    choice_prompt,
    percent,
    reply_text,
)

COLUMNS = ("index", "question", "answer", "A", "B", "C", "D", "category", "cycle_category", "image")
# published accuracy (%), official scoring (`docs/evaluation.md`)
PUBLISHED = {"4K": {"Qwen2.5-VL-7B": 68.2, "DeepEyes": 73.2, "Mini-o3": 77.5},
             "8K": {"Qwen2.5-VL-7B": 62.7, "DeepEyes": 69.5, "Mini-o3": 73.3}}


class RowError(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def read_tsv(path: Path) -> list[dict]:
    if not path.is_file():
        raise DataError(f"HR-Bench file not found: {path} (the published hr_bench_4k.tsv or hr_bench_8k.tsv)")
    csv.field_size_limit(sys.maxsize)  # a base64 8K image is tens of megabytes in one field
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter="\t")
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{path}: missing column(s) {missing}; HR-Bench files have {list(COLUMNS)}")
            return list(reader)
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: not a readable TSV file ({e})") from None


def image_file(encoded: str, cache: Path) -> Path:
    """The decoded image, written once under `cache` (named by its content)."""
    from PIL import Image, UnidentifiedImageError

    try:
        blob = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise RowError("bad image", "the image field is not base64") from None
    try:
        with Image.open(io.BytesIO(blob)) as im:  # the header only: a full decode of 8K images is slow
            suffix = {"JPEG": ".jpg", "PNG": ".png"}.get(im.format, ".img")
    except (UnidentifiedImageError, OSError) as e:
        raise RowError("bad image", f"the image bytes are not an image ({e})") from None
    path = cache / (hashlib.sha256(blob).hexdigest()[:24] + suffix)
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        tmp.write_bytes(blob)
        tmp.replace(path)
    return path


def _row(raw: dict, images: dict, cache: Path) -> dict:
    index = (raw.get("index") or "").strip()
    question = (raw.get("question") or "").strip()
    if not index or not question:
        raise RowError("missing field", "needs an index and a question")
    options = [(raw.get(k) or "").strip() for k in "ABCD"]
    while options and not options[-1]:
        options.pop()
    if len(options) < 2 or not all(options):
        raise RowError("bad options", f"options A.. must be non-empty texts, got {options!r:.80}")
    truth = (raw.get("answer") or "").strip().upper()
    if truth not in LETTERS[:len(options)]:
        raise RowError("bad answer", f"answer must be one of {LETTERS[:len(options)]}, got {truth!r:.20}")
    encoded = (raw.get("image") or "").strip()
    if len(encoded) <= 64 and encoded in images:  # a reference to another row's image
        encoded = images[encoded]
    if not encoded:
        raise RowError("bad image", "no image")
    return {"idx": index, "question": question, "options": options, "truth_letter": truth,
            "image": str(image_file(encoded, cache)), "category": (raw.get("category") or "").strip() or "none",
            "cycle": (raw.get("cycle_category") or "").strip() or "none"}


class HRBench(Benchmark):
    name = "hrbench"
    title = "HR-Bench"
    judge = "yesno"
    headline = ("rows_evaluated", "accuracy", "by_category", "accuracy_judge", "judge_failures",
                "tool_calls_per_question")

    def default_data(self) -> str:
        from omnidrive_r1.toy.benchmarks import ensure_hrbench

        return str(ensure_hrbench())

    def load(self, data, *, images_root=None, limit=None, system_prompt=None, **options) -> Loaded:
        from omnidrive_r1.cache import cache_root
        from omnidrive_r1.data.loaders import conversation

        opening = {"system_prompt": system_prompt} if system_prompt else {}
        if images_root:
            raise UserError("--images-root: HR-Bench holds its images in the TSV; pass the file as --data")
        path = Path(data)
        raws = read_tsv(path)
        total, skipped = len(raws), Counter()
        images = {(r.get("index") or "").strip(): (r.get("image") or "").strip() for r in raws}
        if limit and total > limit:
            skipped["left out by --limit"] = total - limit
            raws = raws[:limit]
        rows, seen = [], set()
        cache = cache_root() / "hrbench-images"
        for n, raw in enumerate(raws):
            try:
                row = _row(raw, images, cache)
                if row["idx"] in seen:
                    raise RowError("duplicate index", f"index {row['idx']!r} appears twice")
            except RowError as e:
                print(f"{path}, row {n + 1} (index {raw.get('index')!r}): {e}; skipped")
                skipped[e.reason] += 1
                continue
            seen.add(row["idx"])
            text = choice_prompt(row["question"], row["options"])
            truth = f"{row['truth_letter']}. {row['options'][LETTERS.index(row['truth_letter'])]}"
            rows.append({"idx": row["idx"], "prompt": conversation(text, **opening), "image": row["image"], "question": text,
                         "gt_boxes": [],
                         "fields": {"category": row["category"], "cycle_category": row["cycle"],
                                    "options": row["options"], "truth_letter": row["truth_letter"], "truth": truth}})
        if not rows:
            raise DataError(f"{path}: no usable rows")
        note = f"{path}: kept {len(rows)} of {total} rows"
        if skipped:
            note += " (skipped: " + ", ".join(f"{n} {why}" for why, n in skipped.most_common()) + ")"
        return Loaded(rows, total, skipped, note)

    def score(self, record: dict) -> dict:
        letter = choice_letter(reply_text(record), record["options"])
        record.update(letter=letter, correct=letter == record["truth_letter"])
        return record

    def judge_item(self, record: dict) -> dict:
        return {"idx": record["idx"], "question": record["question"], "steps": "", "final_answer": record["truth"],
                "response": reply_text(record) or record.get("response") or ""}

    def judged(self, record: dict, judgment: dict | None) -> None:
        scores = (judgment or {}).get("scores")
        record["judge_correct"] = bool(scores["correct"]) if scores else None

    def summarise(self, records, judge_config, accounting) -> dict:
        from omnidrive_r1.eval.report import tool_figures

        summary = {"benchmark": self.title, "rows_evaluated": len(records), **cycle_figures(records, "correct")}
        if judge_config is not None:
            judge = cycle_figures(records, "judge_correct")
            summary.update(accuracy_judge=judge["accuracy"], by_category_judge=judge["by_category"],
                           judge_model=judge_config.model,
                           judge_failures=sum(r.get("judge_correct") is None for r in records))
        return {**summary, **tool_figures(records), "rows_skipped": accounting.get("skipped", {}),
                **{k: v for k, v in accounting.items() if k != "skipped"}}

    def write_outputs(self, records, summary, out, title) -> None:
        from omnidrive_r1.eval.report import fmt, plot_published, tool_lines

        s = summary
        split = resolution(s.get("data", ""))
        lines = [f"# HR-Bench{' ' + split if split else ''}: {title}", "",
                 f"{s['rows_evaluated']} rows in {len(s['cycles'])} cycles.", ""]
        if s["rows_skipped"]:
            lines += ["Not evaluated:", *[f"- {n} {why}" for why, n in s["rows_skipped"].items()], ""]
        judged = "accuracy_judge" in s
        lines += ["| category | accuracy, letter by rule (%) |" + (" accuracy, judge (%) |" if judged else ""),
                  "|---|---|" + ("---|" if judged else "")]
        for cat, acc in s["by_category"].items():
            lines.append(f"| {cat} | {fmt(acc)} |" + (f" {fmt(s['by_category_judge'].get(cat))} |" if judged else ""))
        lines.append(f"| mean over cycles | {fmt(s['accuracy'])} |" + (f" {fmt(s['accuracy_judge'])} |" if judged else ""))
        lines += ["", "Per cycle (accuracy % per category):", "", "| cycle | " + " | ".join(s["by_category"]) + " | all |",
                  "|---|" + "---|" * (len(s["by_category"]) + 1)]
        for cycle, c in s["cycles"].items():
            lines.append(f"| {cycle} | " + " | ".join(fmt(c["by_category"].get(cat)) for cat in s["by_category"])
                         + f" | {fmt(c['accuracy'])} |")
        if judged:
            lines += ["", f"Judge: {s['judge_model']} asked whether each answer is correct; {s['judge_failures']} rows "
                      "without a verdict count as wrong."]
        lines += ["", *tool_lines(s)]
        published = PUBLISHED.get(split, {})
        if published:
            lines += ["", f"Published (HR-Bench {split}, %): " + ", ".join(f"{k} {v}" for k, v in published.items())]
        (Path(out) / "summary.md").write_text("\n".join(lines) + "\n")
        bars = {"letter by rule": s["accuracy"]}
        if judged:
            bars["judge"] = s["accuracy_judge"]
        plot_published(published, bars, Path(out) / "summary.png", title, f"HR-Bench {split} accuracy (%)".replace("  ", " "))


def resolution(data: str) -> str:
    """'4K' or '8K' from the file name (hr_bench_4k.tsv), '' when it says neither."""
    name = Path(str(data)).name.lower()
    return "8K" if "8k" in name else "4K" if "4k" in name else ""


def cycle_figures(records: list[dict], key: str) -> dict:
    """Accuracy (%) per category within each cycle, then each category's mean over the cycles; overall: the mean
    over cycles of each cycle's accuracy over all its rows. A row whose `key` is None counts as wrong."""
    cycles: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        cycles[r["cycle_category"]].append(r)
    categories = sorted({r["category"] for r in records})
    per_cycle = {}
    for name in sorted(cycles):
        rows = cycles[name]
        per_cycle[name] = {"rows": len(rows), "accuracy": percent([r.get(key) is True for r in rows]),
                           "by_category": {c: percent([r.get(key) is True for r in rows if r["category"] == c])
                                           for c in categories if any(r["category"] == c for r in rows)}}

    def mean(values):
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else None

    return {"accuracy": mean([c["accuracy"] for c in per_cycle.values()]),
            "by_category": {cat: mean([c["by_category"].get(cat) for c in per_cycle.values()]) for cat in categories},
            "cycles": per_cycle}


BENCHMARK = HRBench()
