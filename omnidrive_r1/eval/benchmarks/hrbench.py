"""HR-Bench 4K / 8K: multiple choice on 4K and 8K images (`docs/benchmarks.md`).

The published file is one TSV: `index, question, answer (the right letter), A, B, C, D, category (`single`:
fine-grained single-instance perception, FSP; `cross`: cross-instance, FCP), cycle_category, image (base64)`;
each question appears once per rotation of its options, and `cycle_category` names the rotation a row belongs
to. An `image` field that holds another row's index (as VLMEvalKit writes repeated images) means that row's image.

Three figures, each named by how it reads answers:
- **official** (the protocol behind the published numbers of Qwen2.5-VL-7B and Mini-o3): a judge model is asked
  of every row whether the whole answer is correct, a reply starting with "yes" counts; accuracy per category
  within each cycle, then the mean over the cycles (a category missing from a cycle still counts that cycle).
  Needs `--judge-url`; without a judge there is no official figure.
- **DeepEyes' scorer** (behind DeepEyes' published numbers): its rules (`choice_reading.deepeyes_rule`), a
  consistency judge for the rest; accuracy per category over all rows, overall the mean of the categories, no
  cycles. Without a judge it is marked rule-only.
- **ours** (`accuracy`): the letter read by our rule (`choice_reading.read_choice`), averaged as the official one.
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

from PIL import Image, UnidentifiedImageError

from omnidrive_r1.data.loaders import DataError, conversation
from omnidrive_r1.disk_cache import cache_root
from omnidrive_r1.errors import UserError
from omnidrive_r1.eval.benchmarks import (
    LETTERS,
    Benchmark,
    Loaded,
    choice_prompt,
    percent,
    protocol_status,
)
from omnidrive_r1.eval.choice_reading import final_turn, read_response, yes_verdict
from omnidrive_r1.eval.report import fmt, plot_published, protocol_line, tool_figures, tool_lines

COLUMNS = ("index", "question", "answer", "A", "B", "C", "D", "category", "cycle_category", "image")
# published accuracy (%) and the protocol that produced it (`docs/benchmarks.md`)
PUBLISHED = {"4K": {"Qwen2.5-VL-7B": (68.2, "official"), "DeepEyes": (73.2, "deepeyes"), "Mini-o3": (77.5, "official")},
             "8K": {"Qwen2.5-VL-7B": (62.7, "official"), "DeepEyes": (69.5, "deepeyes"), "Mini-o3": (73.3, "official")}}
PROTOCOLS = {"official": "the official HR-Bench protocol (a judge on every row, mean over cycles)",
             "deepeyes": "DeepEyes' HR-Bench scorer (rules, then a judge; mean of the categories)"}


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


def _row(raw: dict, images: dict, cache: Path | None) -> dict:
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
            "image": str(image_file(encoded, cache)) if cache else None, "category": (raw.get("category") or "").strip() or "none",
            "cycle": (raw.get("cycle_category") or "").strip() or "none"}


class HRBench(Benchmark):
    name = "hrbench"
    title = "HR-Bench"
    judge = "yesno"
    headline = ("rows_evaluated", "accuracy", "by_category", "official_protocol", "deepeyes_protocol",
                "tool_calls_per_question")

    def load(self, data, *, images_root=None, limit=None, system_prompt=None, images=True, **options) -> Loaded:
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
        cache = cache_root() / "hrbench-images" if images else None
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
                                    "options": row["options"], "truth_letter": row["truth_letter"], "truth": truth,
                                    "item_question": row["question"]}})
        if not rows:
            raise DataError(f"{path}: no usable rows")
        note = f"{path}: kept {len(rows)} of {total} rows"
        if skipped:
            note += " (skipped: " + ", ".join(f"{n} {why}" for why, n in skipped.most_common()) + ")"
        return Loaded(rows, total, skipped, note)

    def score(self, record: dict) -> dict:
        """Our reading (`correct`) and what DeepEyes' rules decide (`deepeyes_correct`: None leaves it to the
        judge); the official verdict (`official_correct`) comes from the judge alone."""
        read = read_response(record.get("response") or "", record["truth_letter"], record["options"],
                             benchmark="hrbench")
        rule = read.pop("rule")
        record.update(read, deepeyes_rule_verdict=rule, deepeyes_correct=rule, official_correct=None)
        return record

    def judge_asks(self, record: dict) -> dict[str, dict]:
        # official: every row, the whole final answer, the question with its options and the right option
        asks = {"yesno": {"idx": record["idx"], "question": record["question"], "steps": "",
                          "final_answer": record["truth"], "response": final_turn(record.get("response")).strip()}}
        if record["deepeyes_rule_verdict"] is None:  # DeepEyes: its own question text, the right letter alone
            asks["consistency"] = {"idx": record["idx"], "question": record.get("item_question") or record["question"],
                                   "steps": "", "final_answer": record["truth_letter"],
                                   "response": record["prediction"]}
        return asks

    def judged(self, record: dict, judgments: dict[str, dict]) -> None:
        official = judgments.get("yesno")
        record["official_correct"] = yes_verdict(official["reply"]) if official and official.get("reply") else None
        if record["deepeyes_rule_verdict"] is None:
            j = judgments.get("consistency")
            record["deepeyes_correct"] = bool(j["scores"]["correct"]) if j and j.get("scores") else None

    def summarise(self, records, judge_config, accounting) -> dict:
        judge_on = judge_config is not None
        model = judge_config.model if judge_on else None
        official = {"protocol": PROTOCOLS["official"], "judge_model": model, "computed": judge_on,
                    **(cycle_figures(records, "official_correct") if judge_on else {"accuracy": None, "by_category": {}}),
                    "decided_by_rule": 0, "asked_judge": len(records) if judge_on else 0,
                    "undecided_without_judge": 0 if judge_on else len(records), "rule_only": False,
                    "judge_failures": sum(r.get("official_correct") is None for r in records) if judge_on else 0}
        deepeyes = {"protocol": PROTOCOLS["deepeyes"], "judge_model": model, **category_mean(records, "deepeyes_correct"),
                    **protocol_status(records, "deepeyes_correct", "deepeyes_rule_verdict", judge_on)}
        return {"benchmark": self.title, "rows_evaluated": len(records), **cycle_figures(records, "correct"),
                "official_protocol": official, "deepeyes_protocol": deepeyes, **tool_figures(records),
                "rows_skipped": accounting.get("skipped", {}),
                **{k: v for k, v in accounting.items() if k != "skipped"}}

    def write_outputs(self, records, summary, out, title) -> None:
        s, off, de = summary, summary["official_protocol"], summary["deepeyes_protocol"]
        split = resolution(s.get("data", ""))
        lines = [f"# HR-Bench{' ' + split if split else ''}: {title}", "",
                 f"{s['rows_evaluated']} rows in {len(s['cycles'])} cycles.", ""]
        if s["rows_skipped"]:
            lines += ["Not evaluated:", *[f"- {n} {why}" for why, n in s["rows_skipped"].items()], ""]
        de_head = "DeepEyes' scorer, rules only (%)" if de["rule_only"] else "DeepEyes' scorer (%)"
        categories = sorted(set(s["by_category"]) | set(de["by_category"]))
        lines += [f"| category | official protocol (%) | {de_head} | ours, letter by rule (%) |", "|---|---|---|---|"]
        for cat in categories:
            lines.append(f"| {cat} | {fmt(off['by_category'].get(cat))} | {fmt(de['by_category'].get(cat))} "
                         f"| {fmt(s['by_category'].get(cat))} |")
        lines.append(f"| overall | {fmt(off['accuracy'])} | {fmt(de['accuracy'])} | {fmt(s['accuracy'])} |")
        lines += ["", "Official and ours: accuracy per category within each cycle, then the mean over the cycles. "
                  "DeepEyes' scorer: accuracy per category over all rows, overall the mean of the categories.", ""]
        if off["computed"]:
            lines.append(f"Official protocol: the judge ({off['judge_model']}) was asked about every row's whole answer"
                         + (f"; {off['judge_failures']} rows without a verdict count as wrong." if off["judge_failures"]
                            else "."))
        else:
            lines.append("Official protocol: **not computed** (it asks a judge about every row; pass --judge-url and "
                         "--judge-model).")
        lines += ["", protocol_line("DeepEyes' scorer", de), "",
                  "Per cycle (ours, accuracy % per category):", "",
                  "| cycle | " + " | ".join(s["by_category"]) + " | all |", "|---|" + "---|" * (len(s["by_category"]) + 1)]
        for cycle, c in s["cycles"].items():
            lines.append(f"| {cycle} | " + " | ".join(fmt(c["by_category"].get(cat)) for cat in s["by_category"])
                         + f" | {fmt(c['accuracy'])} |")
        lines += ["", *tool_lines(s)]
        published = PUBLISHED.get(split, {})
        if published:
            lines += ["", f"Published (HR-Bench {split}, %): " + ", ".join(
                f"{k} {v} ({'official protocol' if how == 'official' else 'DeepEyes scorer'})"
                for k, (v, how) in published.items())]
        (Path(out) / "summary.md").write_text("\n".join(lines) + "\n")
        de_label = "DeepEyes' rules only" if de["rule_only"] else "DeepEyes' scorer"
        bars = {"official protocol" if off["computed"] else "official protocol (no judge)": off["accuracy"],
                de_label: de["accuracy"], "ours, letter by rule": s["accuracy"]}
        plot_published({f"{k} ({'official' if how == 'official' else 'DeepEyes scorer'})": v
                        for k, (v, how) in published.items()}, bars, Path(out) / "summary.png", title,
                       f"HR-Bench {split} accuracy (%)".replace("  ", " "),
                       rule_only={de_label} if de["rule_only"] else set())


def resolution(data: str) -> str:
    """'4K' or '8K' from the file name (hr_bench_4k.tsv), '' when it says neither."""
    name = Path(str(data)).name.lower()
    return "8K" if "8k" in name else "4K" if "4k" in name else ""


def cycle_figures(records: list[dict], key: str) -> dict:
    """Accuracy (%) per category within each cycle, then each category's mean over the cycles; overall: the mean
    over cycles of each cycle's accuracy over all its rows. A category missing from a cycle still counts that
    cycle in the denominator, as the official scoring does. A row whose `key` is None counts as wrong."""
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

    def mean_over_cycles(values):
        return sum(v for v in values if v is not None) / len(per_cycle) if per_cycle else None

    return {"accuracy": mean_over_cycles([c["accuracy"] for c in per_cycle.values()]),
            "by_category": {cat: mean_over_cycles([c["by_category"].get(cat) for c in per_cycle.values()])
                            for cat in categories},
            "cycles": per_cycle}


def category_mean(records: list[dict], key: str) -> dict:
    """DeepEyes' HR-Bench arithmetic: accuracy (%) per category over all its rows (no cycles), overall the mean of
    the categories' accuracies. A row whose `key` is None counts as wrong."""
    categories = sorted({r["category"] for r in records})
    by = {c: percent([r.get(key) is True for r in records if r["category"] == c]) for c in categories}
    return {"accuracy": sum(by.values()) / len(by) if by else None, "by_category": by}


BENCHMARK = HRBench()
