"""toydrive: a procedural driving benchmark written in the real DriveLMM-o1 and DeepEyes formats, built so
that answering requires looking closely and where to look is learnable (`docs/toy.md`).

Every frame is six camera views of a road scene (sky, buildings, road, cars, trees) stitched as DriveLMM-o1
stitches them, with two **boards** on posts, one yellow (black stripes) and one red (white stripes), in two
of the six cameras. A board's colour is its visible
context; its decisive detail is the pattern of thin white stripes on it, which says what the board means:

- diagonal `\\` stripes: a chevron pointing **left**;
- vertical stripes: a chevron pointing **right**;
- horizontal stripes: the road is **closed**.

The stripes are a few pixels apart: after the policy's input resize (`docs/coordinates.md`) they average
into the board's colour, while a zoom onto the board shows them clearly. Each board fills one cell of the
policy's grid (`cell_boxes`, one cell per image token): the slot of the camera that holds it (`SLOTS`, six cells spread over
the whole frame), and which cameras hold the boards changes with every frame, so a constant box cannot work.
Every question asks about one board, names it by colour and camera as DriveLMM-o1 questions name objects,
and records its ground-truth box (`gt_box`, stitched-frame pixels).

Same seed, same bytes: all randomness flows from `random.Random(seed)`.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from omnidrive_r1.coordinates import model_size
from omnidrive_r1.data.stitch import CAMERAS, cell_origin, stitch
from omnidrive_r1.policies import default

# The toy world is drawn on the grid of the default family's policy (`omnidrive_r1/policies/`): its resize factor
# is one grid cell. The toy presets' image resolution (recipes/toy/*.yaml): the 2400x900 stitched frame is seen
# at 560x196, and crops are shown at no less than 112x112 pixels.
TOY_TOKENS = (16, 160, 64)  # image tokens: at least, at most, and at most for a crop the zoom tool returns


def toy_pixels(family=None) -> tuple[int, int, int]:
    """(min_pixels, max_pixels, max_crop_pixels) of the toy presets for a model family (default: the default
    family's): the same image tokens whatever the family's factor, so the frame is seen on the same 20 x 7 grid."""
    f = (family or default()).factor
    return tuple(n * f * f for n in TOY_TOKENS)


TOY_FACTOR = default().factor
TOY_MIN_PIXELS, TOY_MAX_PIXELS, TOY_MAX_CROP_PIXELS = toy_pixels()  # max_crop_pixels: a reply costs <= 64 tokens
CAMERA_SIZE = (800, 450)

COLOURS = {"yellow": (245, 195, 20), "red": (215, 35, 35)}
MEANINGS = ("left", "right", "closed")
STRIPE_PERIOD = 4  # pixels (2 on, 2 off); the stitched frame is shrunk 4.3 times, so the stripes leave no trace
STRIPE_COLOURS = {"yellow": (25, 25, 25), "red": (250, 250, 250)}  # like real chevron boards: high contrast
SHOWS = {"left": "A chevron pointing left.", "right": "A chevron pointing right.", "closed": "A road-closed barrier."}
ACTIONS = {"left": "Turn left.", "right": "Turn right.", "closed": "Stop: the road ahead is closed."}
# fixed option order per question (the fourth option is never right): a policy that cannot see guesses
SHOW_OPTIONS = [SHOWS["left"], SHOWS["right"], SHOWS["closed"], "A speed limit of 50."]
ACTION_OPTIONS = [ACTIONS["left"], ACTIONS["right"], ACTIONS["closed"], "Speed up."]
STAGE1_ANSWERS = {"left": "left", "right": "right", "closed": "closed"}


@dataclass
class Board:
    colour: str
    meaning: str
    box: tuple[int, int, int, int]  # stitched-frame pixels: the grid cell it fills
    camera: str = "CAM_FRONT"


# Each camera's board stands at one cell of the policy's grid (column, row of the 20 x 7 grid over the stitched
# frame), just above the horizon: where a board is depends on which camera holds it, which questions name.
SLOTS = {"CAM_FRONT_LEFT": (3, 1), "CAM_FRONT": (10, 1), "CAM_FRONT_RIGHT": (16, 1),
         "CAM_BACK_RIGHT": (3, 4), "CAM_BACK": (10, 4), "CAM_BACK_LEFT": (16, 4)}


def cell_boxes(frame_size: tuple[int, int], min_pixels: int = TOY_MIN_PIXELS,
               max_pixels: int = TOY_MAX_PIXELS) -> list[list[tuple[int, int, int, int]]]:
    """The policy's grid (one cell per `TOY_FACTOR` model pixels) over an image, in the image's own pixels: rows of
    (left, top, right, bottom)."""
    w, h = frame_size
    mw, mh = model_size(w, h, min_pixels=min_pixels, max_pixels=max_pixels, factor=TOY_FACTOR)
    sx, sy, cell = w / mw, h / mh, TOY_FACTOR
    return [[(round(c * cell * sx), round(r * cell * sy), round((c + 1) * cell * sx), round((r + 1) * cell * sy))
             for c in range(mw // cell)]
            for r in range(mh // cell)]


def slot_boxes(frame_size: tuple[int, int] = (3 * CAMERA_SIZE[0], 2 * CAMERA_SIZE[1]),
               family=None) -> dict[str, dict[str, list[int]]]:
    """Per camera, the zoom boxes the toy base writes, as the policy writes boxes (its family's convention:
    pixels of the image it sees, or thousandths of it): `on_target` (the slot's own cell) and `too_large` (4x4
    cells from the cell up and left of it, kept inside the image)."""
    family = family or default()
    lo, hi, _ = toy_pixels(family)
    f = family.factor
    mw, mh = model_size(*frame_size, min_pixels=lo, max_pixels=hi, factor=f)
    cols, rows = mw // f, mh // f
    if family.coordinates == "relative":
        def box(c0, r0, c1, r1):
            return [round(c0 * 1000 / cols), round(r0 * 1000 / rows), round(c1 * 1000 / cols), round(r1 * 1000 / rows)]
    else:
        def box(c0, r0, c1, r1):
            return [c0 * f, r0 * f, c1 * f, r1 * f]
    boxes = {}
    for cam, (c, r) in SLOTS.items():
        c0, r0 = min(max(c - 1, 0), cols - 4), min(max(r - 1, 0), rows - 4)
        boxes[cam] = {"on_target": box(c, r, c + 1, r + 1), "too_large": box(c0, r0, c0 + 4, r0 + 4)}
    return boxes


def usable_cells(camera_size: tuple[int, int] = CAMERA_SIZE) -> list[tuple[int, int, int, int]]:
    """Grid cells that lie inside one camera (a board never straddles two)."""
    cw, ch = camera_size
    cells = []
    for row in cell_boxes((3 * cw, 2 * ch)):
        for box in row:
            left, top, right, bottom = box
            if left // cw == (right - 1) // cw and top // ch == (bottom - 1) // ch:
                cells.append(box)
    return cells


def sample_boards(rng: random.Random, camera_size: tuple[int, int] = CAMERA_SIZE,
                  meanings: tuple[str, str] | None = None) -> list[Board]:
    """A yellow and a red board, each in a camera of its own, at that camera's slot."""
    grid = cell_boxes((3 * camera_size[0], 2 * camera_size[1]))
    cameras = rng.sample(list(SLOTS), 2)
    meanings = meanings or (rng.choice(MEANINGS), rng.choice(MEANINGS))
    return [Board(colour, meaning, grid[SLOTS[cam][1]][SLOTS[cam][0]], cam)
            for colour, meaning, cam in zip(COLOURS, meanings, cameras)]


class _Deck:
    """Meanings dealt from shuffled decks, one per board colour: every meaning comes up equally often, so a
    policy that cannot see scores chance on any test split."""

    def __init__(self, rng: random.Random):
        self.rng, self.cards = rng, {colour: [] for colour in COLOURS}

    def deal(self) -> tuple[str, str]:
        out = []
        for colour in COLOURS:
            if not self.cards[colour]:
                self.cards[colour] = self.rng.sample(MEANINGS, len(MEANINGS))
            out.append(self.cards[colour].pop())
        return tuple(out)


# ----------------------------------------------------------------------------------------------- drawing

def _jitter(rng, rgb, amount=18):
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in rgb)


def _draw_scene(d: ImageDraw.ImageDraw, rng: random.Random, w: int, h: int, road: bool):
    horizon = int(h * rng.uniform(0.42, 0.5))
    sky_top, sky_low = (110, 150, 205), (185, 205, 230)
    for y in range(horizon):
        t = y / max(1, horizon - 1)
        d.line([(0, y), (w, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(sky_top, sky_low)))
    d.rectangle([0, horizon, w, h], fill=_jitter(rng, (95, 100, 95), 8))
    x = 0
    while x < w:  # buildings along the horizon
        bw, bh = rng.randint(w // 14, w // 6), rng.randint(h // 10, h // 3)
        d.rectangle([x, horizon - bh, x + bw, horizon], fill=_jitter(rng, (150, 140, 130), 40))
        for wy in range(horizon - bh + 6, horizon - 6, 12):
            for wx in range(x + 5, x + bw - 6, 12):
                d.rectangle([wx, wy, wx + 4, wy + 5], fill=(70, 80, 95))
        x += bw + rng.randint(0, w // 30)
    if road:
        cx = w // 2
        d.polygon([(cx - w // 40, horizon), (cx + w // 40, horizon), (w, h), (0, h)], fill=(70, 70, 72))
        for k in range(8):
            t0, t1 = (k + 0.3) / 8, (k + 0.7) / 8
            y0, y1 = horizon + (h - horizon) * t0 ** 2, horizon + (h - horizon) * t1 ** 2
            d.line([(cx, y0), (cx, y1)], fill=(225, 225, 215), width=max(1, int(1 + 5 * t1)))
    for _ in range(rng.randint(2, 5)):  # cars and trees
        y = rng.uniform(horizon + (h - horizon) * 0.2, h * 0.98)
        s = (0.25 + 2.2 * (y - horizon) / (h - horizon)) * w / 800
        x = rng.uniform(0.1, 0.9) * w
        colour = _jitter(rng, rng.choice([(200, 200, 200), (40, 40, 40), (60, 70, 110), (130, 130, 130)]), 15)
        d.rectangle([x - 30 * s, y - 17 * s, x + 30 * s, y], fill=colour)
        d.rectangle([x - 20 * s, y - 15 * s, x + 20 * s, y - 8 * s], fill=(60, 80, 100))
    for _ in range(rng.randint(1, 4)):
        y = rng.uniform(horizon + 5, h * 0.8)
        s = (0.3 + 1.5 * (y - horizon) / (h - horizon)) * w / 800
        x = rng.choice([rng.uniform(0, w * 0.15), rng.uniform(w * 0.85, w)])
        d.rectangle([x - 3 * s, y - 40 * s, x + 3 * s, y], fill=(90, 60, 40))
        d.ellipse([x - 18 * s, y - 58 * s, x + 18 * s, y - 22 * s], fill=_jitter(rng, (50, 120, 50), 20))


def stripe_mask(meaning: str, size: tuple[int, int]) -> Image.Image:
    """Stripes half on, half off, exactly periodic along both axes: a pattern with a whole-pixel period has no
    slow beat for the downscale to keep (a 45-degree line drawn with a fractional step leaves one)."""
    y, x = np.mgrid[0:size[1], 0:size[0]]
    # Two diagonals (`\` and `/`) were the first design: the toy base then lost their direction deep in the
    # conversation on most builds (reading in context 0.37 to 0.72, `docs/toy.md`); three orientations were read
    phase = {"closed": y, "left": x - y, "right": x}[meaning] % STRIPE_PERIOD
    return Image.fromarray(((phase < STRIPE_PERIOD // 2) * 255).astype(np.uint8), mode="L")


def draw_board(d: ImageDraw.ImageDraw, board: Board, offset: tuple[int, int] = (0, 0)):
    """The board fills its cell (a small margin left), on a post, white stripes telling its meaning."""
    left, top, right, bottom = (board.box[0] - offset[0], board.box[1] - offset[1],
                                board.box[2] - offset[0], board.box[3] - offset[1])
    mx, my = (right - left) * 0.06, (bottom - top) * 0.06
    x0, y0, x1, y1 = left + mx, top + my, right - mx, bottom - my
    cx = (x0 + x1) / 2
    d.line([(cx, y1), (cx, bottom + (bottom - top))], fill=(70, 70, 70), width=4)
    d.rectangle([x0, y0, x1, y1], fill=COLOURS[board.colour])
    rim = round(0.12 * (x1 - x0))  # a solid rim keeps the board's colour plain at the policy's resolution
    inner = stripe_mask(board.meaning, (round(x1 - x0) - 2 * rim, round(y1 - y0) - 2 * rim))
    d.bitmap((round(x0) + rim, round(y0) + rim), inner, fill=STRIPE_COLOURS[board.colour])


def render_frame(boards: list[Board], seed: int, camera_size: tuple[int, int] = CAMERA_SIZE) -> dict[str, Image.Image]:
    """The six camera views, each board drawn into the camera that holds its cell."""
    w, h = camera_size
    rng = random.Random(seed)
    views = {}
    for cam in CAMERAS:
        img = Image.new("RGB", (w, h))
        d = ImageDraw.Draw(img)
        _draw_scene(d, rng, w, h, road=cam in ("CAM_FRONT", "CAM_BACK"))
        origin = cell_origin(cam, camera_size)
        for board in boards:
            if origin[0] <= board.box[0] < origin[0] + w and origin[1] <= board.box[1] < origin[1] + h:
                draw_board(d, board, origin)
        views[cam] = img
    return views


# --------------------------------------------------------------------------------------------- questions

def _mcq(options: list[str], correct: str) -> tuple[str, str]:
    letters = "ABCD"
    text = " ".join(f"{letters[i]}) {o}" for i, o in enumerate(options))
    return text, f"{letters[options.index(correct)]}) {correct}"


def questions(boards: list[Board]) -> list[dict]:
    """The frame's eight questions in DriveLMM-o1 style (MCQ at qnums 2, 3, 4, 5 and 8), each about one board."""
    yellow, red = boards
    rows = []

    def name(board: Board) -> str:
        return f"{board.colour} board in {board.camera}"

    def add(qnum, board: Board, question, final_answer):
        step = (f"Step 1: Zoom in on the {name(board)}: its stripes show "
                f"{SHOWS[board.meaning][0].lower()}{SHOWS[board.meaning][1:-1]}.")
        rows.append(dict(qnum=qnum, board=board, question=question, final_answer=final_answer,
                         steps=step + f"\nStep 2: So the answer is: {final_answer}"))

    for qnum, board in ((2, yellow), (4, red)):
        opts, ans = _mcq(SHOW_OPTIONS, SHOWS[board.meaning])
        add(qnum, board, f"What does the {name(board)} show? {opts}", ans)
    for qnum, board in ((3, yellow), (5, red)):
        opts, ans = _mcq(ACTION_OPTIONS, ACTIONS[board.meaning])
        add(qnum, board, f"What should the ego vehicle do at the {name(board)}? {opts}", ans)
    opts, ans = _mcq(SHOW_OPTIONS, SHOWS[yellow.meaning])
    add(8, yellow, f"Which sign is on the {name(yellow)}? {opts}", ans)
    add(1, yellow, f"What does the {name(yellow)} show?",
        f"The {yellow.colour} board shows {SHOWS[yellow.meaning][0].lower()}{SHOWS[yellow.meaning][1:]}")
    add(6, red, f"What does the {name(red)} show?",
        f"The {red.colour} board shows {SHOWS[red.meaning][0].lower()}{SHOWS[red.meaning][1:]}")
    add(7, red, f"What should the ego vehicle do at the {name(red)}?",
        f"At the {red.colour} board the ego vehicle should {ACTIONS[red.meaning][0].lower()}{ACTIONS[red.meaning][1:]}")
    return sorted(rows, key=lambda r: r["qnum"])


def stage1_question(board: Board) -> tuple[str, str]:
    """A DeepEyes-style perception question and its short answer."""
    return (f"Which way does the {board.colour} board in {board.camera} point: left, right, or is the road closed?",
            STAGE1_ANSWERS[board.meaning])


def corpus_lines(seed: int = 0, frames: int = 64) -> list[str]:
    """Question, answer and reasoning text of `frames` frames, without drawing any image."""
    rng = random.Random(seed)
    lines = []
    for _ in range(frames):
        boards = sample_boards(rng)
        for q in questions(boards):
            lines += [q["question"], q["final_answer"], q["steps"]]
        for board in boards:
            lines += [*stage1_question(board), f"I zoom in on the {board.colour} board in {board.camera}."]
    lines += ['<tool_call>\n{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [112, 28, 140, 56], '
              '"label": "yellow board"}}\n</tool_call>', "<tool_response>\n</tool_response>"]
    return lines


# -------------------------------------------------------------------------------------------------- files

def _save_jpeg(img: Image.Image, path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    # 4:4:4 chroma and high quality keep the stripes; no timestamps or EXIF, so bytes are reproducible
    img.save(path, format="JPEG", quality=95, subsampling=0)


def generate(out: str | Path, frames: int = 8, seed: int = 0, camera_size: tuple[int, int] = CAMERA_SIZE,
             test_fraction: float = 0.25, progress: bool = True) -> dict:
    """Write toydrive under `out` (formats: `docs/data.md`). Returns counts and paths."""
    if frames < 2:
        raise ValueError("toydrive needs --frames >= 2 (at least one train and one test frame)")
    out = Path(out)
    drive = out / "drivelmm"
    rng = random.Random(seed)
    n_test = min(frames, max(1, round(frames * test_fraction)))
    splits = {"train": [], "test": []}
    deepeyes_rows = []
    deck = _Deck(random.Random(seed ^ 0x5EED))
    for i in tqdm(range(frames), desc="toydrive frames", disable=not progress):
        boards = sample_boards(rng, camera_size, deck.deal())
        frame_seed = rng.getrandbits(32)
        scene, sample, timestamp = f"{rng.getrandbits(128):032x}", f"{rng.getrandbits(128):032x}", 1533151603512404 + 500_000 * i
        views = render_frame(boards, frame_seed, camera_size)
        rel = {}
        for cam in CAMERAS:
            rel[cam] = f"samples/{cam}/n008-2018-08-01-15-16-36-0400__{cam}__{timestamp}.jpg"
            _save_jpeg(views[cam], drive / rel[cam])
        split = "test" if i >= frames - n_test else "train"
        for q in questions(boards):
            splits[split].append({
                "idx": f"{scene}_{sample}_{q['qnum']}",
                "image": [rel[cam] for cam in CAMERAS],
                "question": q["question"],
                "final_answer": q["final_answer"],
                "steps": q["steps"],
                "lidar": f"samples/LIDAR_TOP/n008-2018-08-01-15-16-36-0400__LIDAR_TOP__{timestamp}.pcd.bin",
                "gt_box": list(q["board"].box),
            })
        if split == "train":
            deepeyes_rows += _deepeyes_rows(boards, views, sample, len(deepeyes_rows))
    for split, rows in splits.items():
        (drive / f"{split}.json").write_text(json.dumps(rows, indent=1))
    _write_parquet(out / "deepeyes" / "train.parquet", deepeyes_rows)
    (out / VERSION_FILE).write_text(json.dumps({"version": TOYDRIVE_VERSION, "frames": frames, "seed": seed,
                                                "test_fraction": test_fraction}) + "\n")
    return {"train": len(splits["train"]), "test": len(splits["test"]), "deepeyes": len(deepeyes_rows),
            "drivelmm_dir": str(drive), "deepeyes_parquet": str(out / "deepeyes" / "train.parquet")}


def _deepeyes_rows(boards: list[Board], views: dict, sample: str, start: int) -> list[dict]:
    """Stage-1 rows: the stitched frame, asked about one board (the V*-style perception subset)."""
    buf = io.BytesIO()
    stitch([views[cam] for cam in CAMERAS]).save(buf, format="JPEG", quality=95, subsampling=0)
    rows = []
    for k, board in enumerate(boards):
        question, answer = stage1_question(board)
        rows.append({
            "data_source": "toydrive_vstar",
            "prompt": [{"role": "user", "content": "<image>\n" + question}],
            "images": [{"bytes": buf.getvalue(), "path": f"toydrive_{sample}.jpg"}],
            "ability": "visual_perception",
            "env_name": "visual_toolbox_v2",
            "reward_model": {"style": "model", "ground_truth": answer},
            "extra_info": {"split": "train", "index": start + k, "answer": answer, "question": question,
                           "gt_box": list(board.box)},
        })
    return rows


def _write_parquet(path: Path, rows: list[dict]):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path, compression="zstd")


TOY_FRAMES = 48  # what recipes/toy/*.yaml generate (lab.toydrive.frames)
# Raised whenever the same seed draws different pixels or questions (2: vertical stripes for "right"); a folder
# written by another version is generated again
TOYDRIVE_VERSION = 2
VERSION_FILE = "toydrive.json"
# The held-out evaluation set: its own seed (no training run uses it; the toy base draws its frames from a stream
# of its own) and every frame in test.json. 60 frames, 480 questions, 300 of them multiple choice.
HELDOUT = {"out": "outputs/toydrive-heldout", "frames": 60, "seed": 20261122}


def ensure_toydrive(out: str | Path, frames: int = TOY_FRAMES, seed: int = 0, test_fraction: float = 0.25) -> Path:
    """`out`, with toydrive generated there first if it holds none, or one an older version of the world wrote
    (by default the toy recipes' toydrive, so an evaluation run before training leaves the data training
    expects)."""
    out = Path(out)
    if not (out / "drivelmm" / "test.json").exists() or stale(out):
        print(f"generating toydrive into {out} ({frames} frames, seed {seed})")
        generate(out, frames=frames, seed=seed, test_fraction=test_fraction)
    return out


def stale(out: str | Path) -> bool:
    """Whether `out` holds toydrive written by another version of the world (`TOYDRIVE_VERSION`)."""
    marker = Path(out) / VERSION_FILE
    if not (Path(out) / "drivelmm" / "test.json").exists():
        return False
    return not marker.exists() or json.loads(marker.read_text()).get("version") != TOYDRIVE_VERSION


def ensure_heldout() -> Path:
    """The held-out test file every toy evaluation uses by default (`HELDOUT`), generated on first use."""
    return ensure_toydrive(HELDOUT["out"], HELDOUT["frames"], HELDOUT["seed"], test_fraction=1.0) / "drivelmm" / "test.json"
