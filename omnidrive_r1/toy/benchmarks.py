"""toydrive in the formats of V* Bench and HR-Bench (`docs/evaluation.md`), so that `omnidrive-r1 eval
--benchmark vstar|hrbench`, its tests and a first run need nothing from outside.

The frames are toydrive's (two boards whose stripes say what they mean, `docs/toy.md`), drawn from seeds no
training run uses; the questions are about the boards:
- V* `direct_attributes`: what one board shows (4 options); `relative_position`: whether one board is left or
  right of the other (2 options; both boards are targets).
- HR-Bench: FSP (single instance), what one board shows; FCP (cross instance), which board shows a given
  meaning (the yellow one, the red one, both, neither). Each question once per cycle of its options.

Same seed, same bytes.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import random
import shutil
from pathlib import Path

from omnidrive_r1.data.stitch import CAMERAS, stitch
from omnidrive_r1.eval.benchmarks import rotations
from omnidrive_r1.toy.toydrive import (
    MEANINGS,
    SHOW_OPTIONS,
    SHOWS,
    TOYDRIVE_VERSION,
    VERSION_FILE,
    _Deck,
    render_frame,
    sample_boards,
)

VSTAR = {"out": "outputs/toydrive-vstar", "items": 12, "seed": 20261205}  # items per category
HRBENCH = {"out": "outputs/toydrive-hrbench", "questions": 6, "seed": 20261206}  # questions per category
HRBENCH_FILE = "hr_bench_toy.tsv"
HR_COLUMNS = ("index", "question", "answer", "A", "B", "C", "D", "category", "cycle_category", "image")
HR_CYCLES = 4
WHICH_BOARD = ["The yellow board.", "The red board.", "Both boards.", "Neither board."]


def _frames(seed: int):
    """Endless (boards, stitched frame as JPEG bytes) from `seed`."""
    rng = random.Random(seed)
    deck = _Deck(random.Random(seed ^ 0x5EED))
    while True:
        boards = sample_boards(rng, meanings=deck.deal())
        views = render_frame(boards, rng.getrandbits(32))
        buf = io.BytesIO()
        stitch([views[cam] for cam in CAMERAS]).save(buf, format="JPEG", quality=95, subsampling=0)
        yield boards, buf.getvalue()


def _shows(meaning: str) -> str:
    return SHOWS[meaning][0].lower() + SHOWS[meaning][1:-1]


def _xywh(box) -> list[int]:
    return [box[0], box[1], box[2] - box[0], box[3] - box[1]]


def generate_vstar(out: str | Path, items: int = VSTAR["items"], seed: int = VSTAR["seed"]) -> Path:
    """`items` items per category under `out/direct_attributes` and `out/relative_position`."""
    out = Path(out)
    for folder in ("direct_attributes", "relative_position"):
        shutil.rmtree(out / folder, ignore_errors=True)
        (out / folder).mkdir(parents=True)
    frames = _frames(seed)
    for i in range(items):
        boards, jpeg = next(frames)
        board = boards[i % 2]
        others = [o for o in SHOW_OPTIONS if o != SHOWS[board.meaning]]
        item = {"target_object": [f"{board.colour} board"], "bbox": [_xywh(board.box)],
                "question": f"What does the {board.colour} board in {board.camera} show?",
                "options": [SHOWS[board.meaning], *others]}
        name = f"toy_{i:03d}"
        (out / "direct_attributes" / f"{name}.jpg").write_bytes(jpeg)
        (out / "direct_attributes" / f"{name}.json").write_text(json.dumps(item, indent=1))
    i = 0
    while i < items:
        boards, jpeg = next(frames)
        first, second = boards if i % 2 == 0 else boards[::-1]
        dx = (first.box[0] + first.box[2]) - (second.box[0] + second.box[2])
        if abs(dx) < 2 * (first.box[2] - first.box[0]):  # one above the other: no left or right to ask about
            continue
        side, other = ("left", "right") if dx < 0 else ("right", "left")
        item = {"target_object": [f"{first.colour} board", f"{second.colour} board"],
                "bbox": [_xywh(first.box), _xywh(second.box)],
                "question": f"Is the {first.colour} board on the left or right side of the {second.colour} board?",
                "options": [f"The {first.colour} board is on the {side} side of the {second.colour} board.",
                            f"The {first.colour} board is on the {other} side of the {second.colour} board."]}
        name = f"toy_{i:03d}"
        (out / "relative_position" / f"{name}.jpg").write_bytes(jpeg)
        (out / "relative_position" / f"{name}.json").write_text(json.dumps(item, indent=1))
        i += 1
    (out / VERSION_FILE).write_text(json.dumps({"version": TOYDRIVE_VERSION, "format": "vstar", "items": items,
                                                "seed": seed}) + "\n")
    return out


def generate_hrbench(out: str | Path, questions: int = HRBENCH["questions"], seed: int = HRBENCH["seed"]) -> Path:
    """`questions` FSP and `questions` FCP questions, each in `HR_CYCLES` cycles of its options, as one TSV
    (`out/hr_bench_toy.tsv`). Rows of later cycles refer to the first cycle's row for their image."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frames = _frames(seed)
    rng = random.Random(seed)
    asked = []
    for q in range(2 * questions):
        boards, jpeg = next(frames)
        if q % 2 == 0:
            board = boards[(q // 2) % 2]
            question = f"What does the {board.colour} board in {board.camera} show?"
            options, right = SHOW_OPTIONS, SHOW_OPTIONS.index(SHOWS[board.meaning])
            category = "FSP"
        else:
            meaning = rng.choice(MEANINGS)
            hits = [b.meaning == meaning for b in boards]
            right = 2 if all(hits) else 0 if hits[0] and not hits[1] else 1 if hits[1] and not hits[0] else 3
            question = f"Which board shows {_shows(meaning)}?"
            options, category = WHICH_BOARD, "FCP"
        asked.append((question, options, right, category, base64.b64encode(jpeg).decode()))
    rows = []
    for cycle in range(HR_CYCLES):
        for q, (question, options, right, category, image) in enumerate(asked):
            order, letter = rotations(options, right)[cycle]
            index = cycle * len(asked) + q
            rows.append({"index": index, "question": question, "answer": letter, **dict(zip("ABCD", order)),
                         "category": category, "cycle_category": f"cycle{cycle}",
                         "image": image if cycle == 0 else str(q)})
    path = out / HRBENCH_FILE
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=HR_COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    (out / VERSION_FILE).write_text(json.dumps({"version": TOYDRIVE_VERSION, "format": "hrbench",
                                                "questions": questions, "seed": seed}) + "\n")
    return path


def _current(out: Path, fmt: str) -> bool:
    marker = out / VERSION_FILE
    if not marker.exists():
        return False
    saved = json.loads(marker.read_text())
    return saved.get("version") == TOYDRIVE_VERSION and saved.get("format") == fmt


def ensure_vstar(out: str | Path = VSTAR["out"]) -> Path:
    """The toy V* set (`VSTAR`), generated on first use or when an older world wrote it."""
    out = Path(out)
    if not _current(out, "vstar"):
        print(f"generating toydrive in V* Bench format into {out}")
        generate_vstar(out)
    return out


def ensure_hrbench(out: str | Path = HRBENCH["out"]) -> Path:
    """The toy HR-Bench TSV (`HRBENCH`), generated on first use or when an older world wrote it."""
    out = Path(out)
    if not _current(out, "hrbench") or not (out / HRBENCH_FILE).exists():
        print(f"generating toydrive in HR-Bench format into {out}")
        generate_hrbench(out)
    return out / HRBENCH_FILE
