"""`omnidrive-r1 view DIR`: one self-contained HTML page that shows where the policy looked.

DIR is an evaluation folder (`rows.jsonl` or `generations.jsonl` from `omnidrive-r1 eval`) or a training stage's
output folder (`rollouts/rollouts.jsonl`, written every `rollouts_every` steps). Per row the page draws the frame
the policy saw with each zoom box (orange; red and dashed when the call failed) and the ground-truth box (green,
dashed), the crops it got back, its reasoning and answer, and the score or every reward term, with filters
(correct, wrong, no tool, failed call) and, for a training run, a step slider. Images are inlined (JPEG data
URIs, each frame once), so the file opens anywhere without a server or a network.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import json
import time
from pathlib import Path

import datasets
from PIL import Image
from tqdm.auto import tqdm

from omnidrive_r1.data.loaders import load_drivelmm
from omnidrive_r1.errors import UserError
from omnidrive_r1.eval.drivelmm_scoring import box_iou
from omnidrive_r1.jsonl import read_jsonl
from omnidrive_r1.rollout_log import thumbnail


def _data_uri(image, side: int) -> str:
    buf = io.BytesIO()
    thumbnail(image, side).convert("RGB").save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


@functools.lru_cache(maxsize=8)  # rows come grouped by frame; a 4800x1800 frame holds 26 MB decoded
def _open(path: str):
    with Image.open(path) as im:
        im.load()
        return im.convert("RGB")


# ----------------------------------------------------------------------------------------- reading rows

def _eval_frames(folder: Path, records: list[dict]) -> dict[str, str]:
    """idx -> frame path for evaluation records written before records carried their frame: read the data file
    that `run.json` names (camera paths relative to its folder)."""
    if all(r.get("frame") for r in records) or not (folder / "run.json").exists():
        return {}

    run = json.loads((folder / "run.json").read_text())
    if "data" not in run or run.get("benchmark", "drivelmm") != "drivelmm":  # only DriveLMM-o1 records predate it
        return {}
    try:
        ds, _ = load_drivelmm(run["data"], stitched_dir=run.get("stitched_dir"), skip_bad=True, progress=False)
    except UserError:
        return {}
    paths = ds.cast_column("image", datasets.Image(decode=False))["image"]
    return {idx: p.get("path") for idx, p in zip(ds["idx"], paths) if p.get("path")}


def _gt_boxes(record: dict) -> list:
    """A record's ground-truth boxes: `gt_boxes` (every benchmark), or the single `gt_box` older records and
    training rollouts carry."""
    return record.get("gt_boxes") or ([record["gt_box"]] if record.get("gt_box") else [])


def _verdict(value, *, by_rule: bool) -> str:
    if value is None:
        return "no verdict (no judge)" if not by_rule else "n/a"
    return ("right" if value else "wrong") + (" (rule)" if by_rule else " (judge)")


def protocol_notes(folder: Path) -> list[str]:
    """What the page says about the figures of an evaluation folder: which are rule-only stand-ins, and which
    published protocol could not be computed without a judge."""
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        return []
    notes = []
    for key in ("deepeyes_protocol", "official_protocol"):
        p = summary.get(key)
        if not isinstance(p, dict):
            continue
        name = p.get("protocol", key)
        if p.get("rule_only"):
            notes.append(f"{name}: rule-only figure {p.get('accuracy') or 0:.1f}%, not the published protocol "
                         f"({p.get('undecided_without_judge')} rows its rules leave to a judge counted wrong)")
        elif p.get("computed") is False:
            notes.append(f"{name}: not computed (no judge)")
        elif p.get("accuracy") is not None:
            notes.append(f"{name}: {p['accuracy']:.1f}%" + (f", judge {p['judge_model']}" if p.get("judge_model") else ""))
    return notes


def _eval_rows(folder: Path) -> list[dict]:
    name = "rows.jsonl" if (folder / "rows.jsonl").exists() else "generations.jsonl"
    records = read_jsonl(folder / name)
    fallback = _eval_frames(folder, records)
    rows = []
    for r in records:
        scores = {}
        if r.get("is_mcq"):
            scores.update(truth_letter=r.get("truth_letter"), official_letter=r.get("official_letter"),
                          correct_ours=r.get("mcq_correct_ours"))
        elif "options" in r:  # V* Bench, HR-Bench
            scores.update({k: r[k] for k in ("category", "cycle_category", "rotation", "truth_letter", "letter")
                           if k in r})
            for name, key, rule in (("DeepEyes protocol", "protocol_correct", "rule_verdict"),
                                    ("DeepEyes scorer", "deepeyes_correct", "deepeyes_rule_verdict"),
                                    ("official (judge)", "official_correct", None)):
                if key in r:
                    scores[name] = _verdict(r.get(key), by_rule=rule is not None and r.get(rule) is not None)
        judge = (r.get("judge") or {}).get("scores") or {}
        if "Overall Score" in judge:
            scores["judge overall"] = judge["Overall Score"]
        if "zoom_iou" in r:
            scores["zoom IoU"] = round(r["zoom_iou"], 3)
        correct = r["correct"] if "correct" in r else r.get("mcq_correct_ours") if r.get("is_mcq") else None
        rows.append({"idx": r["idx"], "step": None, "question": r.get("question"),
                     "truth": r.get("final_answer") or r.get("truth"),
                     "response": r.get("response") or r.get("llm_response") or "", "answer": r.get("answer"),
                     "correct": correct, "scores": scores, "gt_boxes": _gt_boxes(r),
                     "malformed": r.get("malformed_tool_calls") or 0,
                     "frame_path": r.get("frame") or fallback.get(r["idx"]),
                     "tool_calls": [{**c, "crop_path": None} for c in r.get("tool_calls") or []]})
    return rows


def _training_rows(folder: Path) -> list[dict]:
    base = folder / "rollouts"
    latest = {}
    for r in read_jsonl(base / "rollouts.jsonl"):  # a resumed run writes its last steps again: keep the later
        latest[(r["step"], r["sample"])] = r
    rows = []
    for r in latest.values():
        rewards = r.get("rewards") or {}
        accuracy = rewards.get("answer_accuracy")
        rows.append({"idx": r["idx"], "step": r["step"], "question": r.get("question"), "truth": r.get("truth"),
                     "response": r.get("response", ""), "answer": r.get("answer"),
                     "correct": None if accuracy is None else accuracy >= 1.0,
                     "scores": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in rewards.items()},
                     "gt_boxes": _gt_boxes(r), "frame_path": str(base / r["frame"]) if r.get("frame") else None,
                     "frame_size": r.get("frame_size"),
                     "tool_calls": [{**c, "crop_path": str(base / c["crop"]) if c.get("crop") else None}
                                    for c in r.get("tool_calls") or []]})
    return sorted(rows, key=lambda row: (row["step"], row["idx"]))


def read_rows(folder: str | Path) -> tuple[str, list[dict]]:
    folder = Path(folder)
    if (folder / "rollouts" / "rollouts.jsonl").exists():
        return "training", _training_rows(folder)
    if (folder / "rows.jsonl").exists() or (folder / "generations.jsonl").exists():
        return "eval", _eval_rows(folder)
    raise UserError(f"{folder}: nothing to view; expected an evaluation folder (rows.jsonl, from omnidrive-r1 eval) "
                    "or a training output folder (rollouts/rollouts.jsonl; recipe field rollouts_every)")


# ---------------------------------------------------------------------------------------------- the page

STYLE = """
body{font:14px system-ui,sans-serif;margin:0;background:#f4f4f2;color:#222}
header{position:sticky;top:0;background:#fff;border-bottom:1px solid #ccc;padding:8px 16px;z-index:2}
header h1{font-size:17px;margin:0 0 6px}
button.filter{margin-right:4px;padding:3px 10px;border:1px solid #999;background:#eee;border-radius:12px;cursor:pointer}
button.filter.on{background:#334;color:#fff}
.row{background:#fff;margin:12px 16px;padding:10px;border-radius:6px;box-shadow:0 1px 2px #0002;
     display:grid;grid-template-columns:minmax(420px,3fr) 2fr;gap:12px}
.row.wrong{border-left:5px solid #c33}.row.right{border-left:5px solid #3a3}
.frame{position:relative;line-height:0}.frame img{width:100%}
.frame svg{position:absolute;left:0;top:0;width:100%;height:100%}
.crops{display:flex;flex-wrap:wrap;gap:6px;margin-top:6px}
.crops figure{margin:0;font-size:12px;max-width:200px}.crops img{max-width:200px;max-height:160px;border:2px solid #e80}
.crops figure.failed{color:#c33}
pre{white-space:pre-wrap;font-size:12px;background:#f7f7f7;padding:6px;max-height:260px;overflow:auto}
table{border-collapse:collapse;font-size:12px}td{padding:1px 8px 1px 0}
.meta{color:#666;font-size:12px}
"""

SCRIPT = """
const frames = JSON.parse(document.getElementById('frames').textContent);
document.querySelectorAll('img[data-frame]').forEach(img => { img.src = frames[img.dataset.frame]; });
const rows = [...document.querySelectorAll('.row')];
let filter = 'all';
const slider = document.getElementById('step');
function show() {
  const step = slider ? Number(slider.value) : null;
  const steps = slider ? JSON.parse(slider.dataset.steps) : null;
  let n = 0;
  rows.forEach(r => {
    const okFilter = filter === 'all' || r.dataset[filter] === '1';
    const okStep = !slider || Number(slider.value) === -1 || Number(r.dataset.step) === steps[step];
    r.style.display = okFilter && okStep ? '' : 'none';
    if (okFilter && okStep) n++;
  });
  document.getElementById('shown').textContent = n;
  if (slider) document.getElementById('stepname').textContent = Number(slider.value) === -1 ? 'all' : steps[step];
}
document.querySelectorAll('button.filter').forEach(b => b.onclick = () => {
  filter = b.dataset.filter;
  document.querySelectorAll('button.filter').forEach(x => x.classList.toggle('on', x === b));
  show();
});
if (slider) slider.oninput = show;
show();
"""

FILTERS = [("all", "all"), ("correct", "correct"), ("wrong", "wrong"), ("notool", "no tool"), ("failed", "failed call")]


def _box_rect(box, cls: str, label: str = "") -> str:
    x1, y1, x2, y2 = box
    text = (f'<text x="{x1 + 4}" y="{y1 + 18}" class="{cls}t">{html.escape(label)}</text>' if label else "")
    return f'<rect class="{cls}" x="{x1}" y="{y1}" width="{x2 - x1}" height="{y2 - y1}"/>{text}'


def _card(row: dict, frame_id: str | None, frame_size, crops: list[str | None]) -> str:
    calls = row["tool_calls"]
    failed = any(not c.get("ok") for c in calls) or bool(row.get("malformed"))
    attrs = {"correct": row["correct"] is True, "wrong": row["correct"] is False, "notool": not calls,
             "failed": failed}
    data = " ".join(f'data-{k}="{int(v)}"' for k, v in attrs.items())
    step = f' data-step="{row["step"]}"' if row["step"] is not None else ""
    cls = "right" if row["correct"] is True else "wrong" if row["correct"] is False else ""
    picture = '<div class="meta">(frame not found)</div>'
    if frame_id and frame_size:
        w, h = frame_size
        shapes = [_box_rect(box, "gt", "truth") for box in row["gt_boxes"]]
        for k, c in enumerate(calls, 1):
            if c.get("box"):
                shapes.append(_box_rect(c["box"], "zoom" if c.get("ok") else "fail", f"{k} {c.get('label') or ''}"))
        stroke = max(2, w // 400)
        svg = (f'<svg viewBox="0 0 {w} {h}" preserveAspectRatio="none"><style>'
               f'.zoom{{fill:none;stroke:#e80;stroke-width:{stroke}}}.fail{{fill:none;stroke:#c33;stroke-width:{stroke};'
               f'stroke-dasharray:{4 * stroke}}}.gt{{fill:none;stroke:#2a2;stroke-width:{stroke};stroke-dasharray:'
               f'{3 * stroke}}}.zoomt,.failt,.gtt{{font:{8 * stroke}px sans-serif;fill:#fff;paint-order:stroke;'
               f'stroke:#000;stroke-width:{stroke}}}</style>{"".join(shapes)}</svg>')
        picture = f'<div class="frame"><img data-frame="{frame_id}" alt="frame {html.escape(row["idx"])}">{svg}</div>'
    figures = []
    for k, (c, crop) in enumerate(zip(calls, crops), 1):
        best = max((box_iou(c["box"], box) for box in row["gt_boxes"]), default=None) if c.get("box") else None
        iou = f", IoU {best:.2f}" if best is not None else ""
        caption = (f"{k}. {html.escape(str(c.get('label') or ''))} {c.get('box')}{iou}" if c.get("ok") else
                   f"{k}. failed: {html.escape(str(c.get('reason')))} {html.escape(str(c.get('bbox_2d')))[:60]}")
        image = f'<img src="{crop}">' if crop else ""
        figures.append(f'<figure class="{"" if c.get("ok") else "failed"}">{image}<figcaption>{caption}</figcaption>'
                       f'</figure>')
    scores = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
                     for k, v in row["scores"].items())
    head = (f'<div class="meta">{html.escape(row["idx"])}{" · step " + str(row["step"]) if row["step"] is not None else ""}'
            f' · {len(calls)} tool call{"" if len(calls) == 1 else "s"}'
            + (f' · {row["malformed"]} malformed (not parsed)' if row.get("malformed") else "") + "</div>")
    return (f'<div class="row {cls}" {data}{step}><div>{picture}<div class="crops">{"".join(figures)}</div></div>'
            f'<div>{head}<p><b>Q:</b> {html.escape(str(row["question"] or ""))}</p>'
            f'<p><b>answer:</b> {html.escape(str(row["answer"]))}<br><b>truth:</b> {html.escape(str(row["truth"]))}</p>'
            f'<table>{scores}</table><details><summary>reasoning and tool turns</summary>'
            f'<pre>{html.escape(row["response"])}</pre></details></div></div>')


def render(rows: list[dict], title: str, *, frame_side: int = 960, crop_side: int = 240, progress=None,
           notes: list[str] = ()) -> str:
    """The page for `rows` (from `read_rows`)."""
    frames: dict[str, str] = {}
    ids: dict[str, str] = {}
    cards = []
    for row in rows:
        path = row.get("frame_path")
        frame_id, size = None, row.get("frame_size")
        if path and Path(path).exists():
            if path not in ids:
                ids[path] = f"f{len(ids)}"
                frames[ids[path]] = _data_uri(_open(path), frame_side)
            frame_id = ids[path]
            size = size or list(_open(path).size)
        crops = []
        for c in row["tool_calls"]:
            if c.get("crop_path") and Path(c["crop_path"]).exists():  # what the policy was handed (training)
                crops.append(_data_uri(_open(c["crop_path"]), crop_side))
            elif c.get("ok") and c.get("box") and frame_id:  # an evaluation: cut again from the original
                crops.append(_data_uri(_open(path).crop(tuple(c["box"])), crop_side))
            else:
                crops.append(None)
        cards.append(_card(row, frame_id, size, crops))
        if progress:
            progress()
    steps = sorted({r["step"] for r in rows if r["step"] is not None})
    slider = ""
    if steps:
        slider = (f' · step <input type="range" id="step" min="-1" max="{len(steps) - 1}" value="-1" '
                  f"data-steps='{json.dumps(steps)}'> <span id=\"stepname\">all</span> (far left: all steps)")
    buttons = "".join(f'<button class="filter{" on" if key == "all" else ""}" data-filter="{key}">{label}</button>'
                      for key, label in FILTERS)
    counts = {label: sum(1 for c in cards if f'data-{key}="1"' in c) for key, label in FILTERS[1:]}
    summary = ", ".join(f"{n} {label}" for label, n in counts.items())
    frames_json = json.dumps(frames).replace("</", "<\\/")
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><header><h1>{html.escape(title)}</h1>"
            f'{buttons} <span class="meta"><span id="shown">{len(rows)}</span> of {len(rows)} rows shown ({summary})'
            f'</span>{slider}<div class="meta">orange: the zoom box the policy asked for (mapped to the frame\'s '
            f"pixels); red dashed: a failed call; green dashed: the ground truth</div>"
            + "".join(f'<div class="meta note">{html.escape(n)}</div>' for n in notes) + "</header>"
            f'{"".join(cards)}<script type="application/json" id="frames">{frames_json}</script>'
            f"<script>{SCRIPT}</script></body></html>")


def write_view(folder: str | Path, out: str | Path | None = None, *, max_rows: int | None = None) -> dict:
    """Write the page for `folder`; returns where, how many rows, its size and the seconds it took."""
    t0 = time.perf_counter()
    folder = Path(folder)
    kind, rows = read_rows(folder)
    if max_rows:
        rows = rows[-max_rows:] if kind == "training" else rows[:max_rows]
    if not rows:
        raise UserError(f"{folder}: no rows to view")
    out = Path(out) if out else folder / "view.html"
    title = f"{folder.resolve().name if folder.name in ('', '.') else folder.name}: {kind}, {len(rows)} rows"
    with tqdm(total=len(rows), desc="view", unit="row") as bar:
        page = render(rows, title, progress=bar.update, notes=protocol_notes(folder) if kind == "eval" else [])
    out.write_text(page, encoding="utf-8")
    return {"out": str(out), "kind": kind, "rows": len(rows), "bytes": out.stat().st_size,
            "seconds": time.perf_counter() - t0}
