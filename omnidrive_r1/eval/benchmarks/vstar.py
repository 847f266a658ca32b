"""V* Bench: high-resolution images, one question each about small objects (`docs/evaluation.md`).

The published layout: one folder per category (`direct_attributes`, `relative_position`), in it one image and
one JSON per item with `target_object` (names), `bbox` (one `[x, y, w, h]` per target, image pixels),
`question` and `options`, the right option first.

Every item is asked once per rotation of its options (rotation k puts the right option at position k;
rotation 0 is the file's order). Two accuracies come out:
- `accuracy_file_order`: rotation 0 only, the options listed in the file's order as DeepEyes' evaluation lists
  them, so the right letter is always A. Comparable to published numbers; a policy that always says A gets 100.
- `accuracy_rotated`: an item counts only when every rotation of it is answered right (that policy gets 0).
Beside them, the figure of the protocol behind the published numbers (DeepEyes' V* evaluation, file order):
its rules decide what they can (`choice_reading.deepeyes_rule`) and a judge model is asked the rest
(`--judge-url`, the consistency question). Without a judge that figure is marked rule-only: the rows its rules
leave open count as wrong, and the summary, the plot and the view say so.
Zoom IoU: per row, each target's best IoU over the row's zoom boxes, averaged over the targets.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

from omnidrive_r1.data.loaders import DataError, conversation
from omnidrive_r1.errors import UserError
from omnidrive_r1.eval.benchmarks import (
    Benchmark,
    Loaded,
    choice_prompt,
    percent,
    protocol_status,
    rotations,
)
from omnidrive_r1.eval.choice_reading import read_response
from omnidrive_r1.eval.report import fmt, plot_published, protocol_line, tool_figures, tool_lines

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# published V* overall accuracy (%), options in file order, DeepEyes' protocol (`docs/benchmarks.md`)
PUBLISHED = {"Qwen2.5-VL-7B": 75.5, "DeepEyes": 83.3, "Mini-o3": 88.2}
PROTOCOL = "DeepEyes' V* protocol (rules, then a judge)"


class ItemError(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def _item(path: Path, images: bool = True) -> dict:
    """One item's JSON, checked; the image beside it found."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ItemError("unreadable JSON", f"not readable JSON ({e})") from None
    if not isinstance(raw, dict):
        raise ItemError("not an object", "expected a JSON object")
    question, options = raw.get("question"), raw.get("options")
    if not isinstance(question, str) or not question.strip():
        raise ItemError("missing field", "needs a non-empty `question`")
    if not isinstance(options, list) or len(options) < 2 or not all(isinstance(o, str) and o.strip() for o in options):
        raise ItemError("bad options", f"`options` must list at least two texts, got {options!r:.80}")
    boxes = raw.get("bbox") or []
    if not isinstance(boxes, list) or not all(
            isinstance(b, list) and len(b) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                      for v in b) and b[2] > 0 and b[3] > 0 for b in boxes):
        raise ItemError("bad bbox", f"`bbox` must list [x, y, w, h] boxes with w, h > 0, got {boxes!r:.80}")
    image = next((path.with_suffix(s) for s in IMAGE_SUFFIXES if path.with_suffix(s).exists()), None)
    if image is None and images:
        raise ItemError("missing image", f"no image {path.stem}{{{','.join(IMAGE_SUFFIXES)}}} beside it")
    targets = raw.get("target_object") or []
    return {"question": question.strip(), "options": [o.strip() for o in options], "image": image,
            "gt_boxes": [[b[0], b[1], b[0] + b[2], b[1] + b[3]] for b in boxes],
            "targets": [str(t) for t in targets] if isinstance(targets, list) else [str(targets)]}


def item_files(root: Path) -> list[tuple[str, Path]]:
    """(category, json file) for every item: the JSON files of each sub-folder, or of `root` itself."""
    if not root.is_dir():
        raise DataError(f"V* Bench folder not found: {root} (expected direct_attributes/ and relative_position/, "
                        "each with one image and one JSON per item)")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and any(p.glob("*.json")))
    if not folders and any(root.glob("*.json")):
        folders = [root]
    files = [(folder.name, f) for folder in folders for f in sorted(folder.glob("*.json"))]
    if not files:
        raise DataError(f"{root}: no item JSON files (expected direct_attributes/*.json and relative_position/*.json)")
    return files


class VStar(Benchmark):
    name = "vstar"
    title = "V* Bench"
    judge = "consistency"
    headline = ("items", "rows_evaluated", "accuracy_file_order", "accuracy_rotated", "by_category",
                "deepeyes_protocol", "tool_calls_per_question", "zoom_iou")

    def load(self, data, *, images_root=None, limit=None, system_prompt=None, images=True, **options) -> Loaded:
        opening = {"system_prompt": system_prompt} if system_prompt else {}
        if images_root:
            raise UserError("--images-root: V* Bench keeps each image beside its JSON; pass the folder as --data")
        files = item_files(Path(data))
        total, skipped = len(files), Counter()
        if limit and len(files) > limit:
            skipped["items left out by --limit"] = len(files) - limit
            files = files[:limit]
        rows = []
        for category, path in files:
            try:
                item = _item(path, images)
            except ItemError as e:
                print(f"{path}: {e}; skipped")
                skipped[e.reason] += 1
                continue
            name = f"{category}/{path.stem}"
            for k, (order, truth) in enumerate(rotations(item["options"])):
                text = choice_prompt(item["question"], order)
                rows.append({"idx": f"{name}#r{k}", "prompt": conversation(text, **opening),
                             "image": str(item["image"]) if item["image"] else None,
                             "question": text, "gt_boxes": item["gt_boxes"],
                             "fields": {"item": name, "category": category, "rotation": k, "options": order,
                                        "truth_letter": truth, "truth": f"{truth}. {item['options'][0]}",
                                        "item_question": item["question"], "targets": item["targets"]}})
        items = len({r["fields"]["item"] for r in rows})
        note = f"{data}: {items} items, {len(rows)} rows (every rotation of the options)"
        if skipped:
            note += " (skipped: " + ", ".join(f"{n} {why}" for why, n in skipped.most_common()) + ")"
        return Loaded(rows, total, skipped, note)

    def score(self, record: dict) -> dict:
        """Our reading (`correct`) and what DeepEyes' rules decide (`protocol_correct`: None leaves it to the
        judge)."""
        read = read_response(record.get("response") or "", record["truth_letter"], record["options"],
                             benchmark="vstar")
        rule = read.pop("rule")
        record.update(read, rule_verdict=rule, protocol_correct=rule)
        return record

    def judge_asks(self, record: dict) -> dict[str, dict]:
        if record["rule_verdict"] is not None:
            return {}
        # as DeepEyes' scorer asks: the item's own question, the right option as "A. text", the prediction
        return {"consistency": {"idx": record["idx"], "question": record.get("item_question") or record["question"],
                                "steps": "", "final_answer": record["truth"], "response": record["prediction"]}}

    def judged(self, record: dict, judgments: dict[str, dict]) -> None:
        j = judgments.get("consistency")
        if record["rule_verdict"] is None:
            record["protocol_correct"] = bool(j["scores"]["correct"]) if j and j.get("scores") else None

    def result_row(self, given: str, rows: dict[str, dict]) -> str | None:
        """`category/stem#rK`, `category/stem` (file order) or a stem unique over the categories."""
        for idx in (given, f"{given}#r0"):
            if idx in rows:
                return idx
        found = [idx for idx in rows if idx.endswith("#r0") and idx[:-3].rsplit("/", 1)[-1] == given]
        return found[0] if len(found) == 1 else None

    def summarise(self, records, judge_config, accounting) -> dict:
        return {"benchmark": self.title, **figures(records),
                "deepeyes_protocol": protocol_figures(records, judge_config), **tool_figures(records),
                "rows_skipped": accounting.get("skipped", {}),
                **{k: v for k, v in accounting.items() if k != "skipped"}}

    def write_outputs(self, records, summary, out, title) -> None:
        s, p = summary, summary["deepeyes_protocol"]
        lines = [f"# V* Bench: {title}", "", f"{s['items']} items, {s['rows_evaluated']} rows (each item once per "
                 "rotation of its options).", ""]
        if s["rows_skipped"]:
            lines += ["Not evaluated:", *[f"- {n} {why}" for why, n in s["rows_skipped"].items()], ""]
        head = "DeepEyes' protocol, rules only (%)" if p["rule_only"] else "DeepEyes' protocol (%)"
        lines += [f"| category | items | {head} | ours, file order (%) | ours, every rotation (%) |",
                  "|---|---|---|---|---|"]
        for cat, c in s["by_category"].items():
            lines.append(f"| {cat} | {c['items']} | {fmt(p['by_category'].get(cat))} | {fmt(c['accuracy_file_order'])} "
                         f"| {fmt(c['accuracy_rotated'])} |")
        lines.append(f"| overall | {s['items']} | {fmt(p['accuracy'])} | {fmt(s['accuracy_file_order'])} "
                     f"| {fmt(s['accuracy_rotated'])} |")
        lines += ["", protocol_line(PROTOCOL, p), "",
                  "Ours: the options as the file lists them (the right one is A), read by our rule; every rotation: "
                  "an item counts only when it is answered right with the right option at each position.", "",
                  *tool_lines(s), "", "Published (DeepEyes' protocol, %): "
                  + ", ".join(f"{k} {v}" for k, v in PUBLISHED.items())]
        (Path(out) / "summary.md").write_text("\n".join(lines) + "\n")
        label = "DeepEyes' rules only" if p["rule_only"] else "DeepEyes' protocol"
        plot_published({f"{k} (DeepEyes' protocol)": v for k, v in PUBLISHED.items()},
                       {label: p["accuracy"], "ours, file order": s["accuracy_file_order"],
                        "ours, every rotation": s["accuracy_rotated"]},
                       Path(out) / "summary.png", title, "V* Bench accuracy (%)",
                       rule_only={label} if p["rule_only"] else set())


def protocol_figures(records: list[dict], judge_config) -> dict:
    """DeepEyes' V* figure: file-order rows (rotation 0), per category and overall, each item right when its rules
    or its judge say so; how each verdict came about (`protocol_status`)."""
    rows = [r for r in records if r["rotation"] == 0]
    categories = sorted({r["category"] for r in rows})
    return {"protocol": PROTOCOL, "judge_model": judge_config.model if judge_config is not None else None,
            "accuracy": percent([r.get("protocol_correct") is True for r in rows]),
            "by_category": {c: percent([r.get("protocol_correct") is True for r in rows if r["category"] == c])
                            for c in categories},
            **protocol_status(rows, "protocol_correct", "rule_verdict", judge_config is not None)}


def figures(records: list[dict]) -> dict:
    """Both accuracies, overall and per category, from scored records."""
    items: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        items[r["item"]].append(r)
    complete = {k: rs for k, rs in items.items() if len(rs) == len(rs[0]["options"])}

    def both(names):
        first = [r["correct"] for k in names for r in items[k] if r["rotation"] == 0]
        rotated = [all(r["correct"] for r in complete[k]) for k in names if k in complete]
        return {"items": len(names), "accuracy_file_order": percent(first), "accuracy_rotated": percent(rotated)}

    categories = sorted({rs[0]["category"] for rs in items.values()})
    return {"rows_evaluated": len(records), **both(list(items)),
            "by_category": {c: both([k for k, rs in items.items() if rs[0]["category"] == c]) for c in categories},
            "items_missing_a_rotation": len(items) - len(complete)}


BENCHMARK = VStar()
