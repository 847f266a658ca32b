"""toydrive: a procedural driving benchmark written in the real DriveLMM-o1 and DeepEyes formats.

Every frame has six camera views of a road scene (sky, buildings, road, lane marks, cars, trees) and
three *decisive details*, each a few pixels wide in the original camera image:

- the lit lamp of a distant traffic light in CAM_FRONT (red, yellow or green);
- a small blue mandatory sign with a white arrow (left, right or straight) in one of the front cameras;
- a small orange object at the crosswalk ahead: a pedestrian in a high-visibility vest or a traffic cone.

After the policy's input resize (DESIGN.md section 4) each detail shrinks below one model pixel and blends
into its surroundings, while a zoom crop of the original shows it clearly; every question depends on one
detail and records that detail's ground-truth box (`gt_box`, pixels of the stitched 2x3 frame) and its
key colour (`gt_color`) so tests and the evaluation can measure both.

Same seed, same bytes: all randomness flows from `random.Random(seed)`.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw

from omnidrive_r1.data.stitch import CAMERAS, cell_origin

LIGHT_COLORS = {"red": (235, 40, 35), "yellow": (245, 200, 30), "green": (40, 220, 90)}
SIGN_BLUE = (30, 80, 200)
WHITE = (250, 250, 250)
VEST_ORANGE = (255, 120, 0)

LIGHT_OPTIONS = {
    "red": "The light is red.",
    "yellow": "The light is yellow.",
    "green": "The light is green.",
    "none": "There is no traffic light ahead.",
}
SIGN_OPTIONS = {
    "left": "An arrow pointing left.",
    "right": "An arrow pointing right.",
    "straight": "An arrow pointing straight ahead.",
    "stop": "A stop sign.",
}
OBJECT_OPTIONS = {
    "pedestrian": "A pedestrian in a high-visibility vest.",
    "cone": "A traffic cone.",
    "cyclist": "A cyclist.",
    "bin": "A rubbish bin.",
}
ACTION_OPTIONS = {
    "stop": "Stop at the stop line and wait for green.",
    "slow": "Slow down and prepare to stop.",
    "yield": "Yield to the pedestrian before proceeding.",
    "proceed": "Proceed with caution, keeping clear of the cone.",
}
MANOEUVRE_OPTIONS = {
    "left": "Turn left at the junction.",
    "right": "Turn right at the junction.",
    "straight": "Continue straight ahead.",
    "uturn": "Make a U-turn.",
}


@dataclass
class FrameSpec:
    """What a frame is about, before any pixel is drawn."""

    scene_token: str
    sample_token: str
    light: str
    sign: str
    sign_camera: str
    crosswalk_object: str
    object_side: float  # -1 (left kerb) .. 1 (right kerb)
    timestamp: int
    seed: int = 0
    details: dict = field(default_factory=dict)  # name -> {"camera", "box", "color"} once rendered


def _token(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"


def sample_frame(rng: random.Random, index: int) -> FrameSpec:
    return FrameSpec(
        scene_token=_token(rng),
        sample_token=_token(rng),
        light=rng.choice(list(LIGHT_COLORS)),
        sign=rng.choice(["left", "right", "straight"]),
        sign_camera=rng.choice(["CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT"]),
        crosswalk_object=rng.choice(["pedestrian", "cone"]),
        object_side=rng.uniform(-0.8, 0.8),
        timestamp=1533151603512404 + 500_000 * index,
        seed=rng.getrandbits(32),
    )


def _action(spec: FrameSpec) -> str:
    if spec.light == "red":
        return "stop"
    if spec.light == "yellow":
        return "slow"
    return "yield" if spec.crosswalk_object == "pedestrian" else "proceed"


def _mcq(rng: random.Random, options: dict[str, str], correct: str) -> tuple[str, str]:
    keys = list(options)
    rng.shuffle(keys)
    letters = "ABCD"
    text = " ".join(f"{letters[i]}) {options[k]}" for i, k in enumerate(keys))
    letter = letters[keys.index(correct)]
    return text, f"{letter}) {options[correct]}"


def questions(spec: FrameSpec, rng: random.Random) -> list[dict]:
    """The frame's eight questions in DriveLMM-o1 style; MCQ at qnums 2, 3, 4, 5 and 8."""
    cam = spec.sign_camera
    obj = "pedestrian in a high-visibility vest" if spec.crosswalk_object == "pedestrian" else "traffic cone"
    action = _action(spec)
    light_step = f"Step 1: Zoom in on the traffic light ahead in CAM_FRONT: its {spec.light} lamp is lit."
    sign_step = f"Step 1: Zoom in on the small blue sign in {cam}: its white arrow points {spec.sign}."
    obj_step = f"Step 1: Zoom in on the small orange object at the crosswalk ahead: it is a {obj}."
    rows = []

    def add(qnum, detail, question, final_answer, steps):
        rows.append(dict(qnum=qnum, detail=detail, question=question, final_answer=final_answer, steps=steps))

    add(1, "light", "What is the state of the traffic light ahead of the ego vehicle?",
        f"The traffic light ahead is {spec.light}.", light_step)
    opts, ans = _mcq(rng, LIGHT_OPTIONS, spec.light)
    add(2, "light", f"What colour is the traffic light ahead in CAM_FRONT? {opts}", ans,
        light_step + f"\nStep 2: The matching option is {ans}")
    opts, ans = _mcq(rng, SIGN_OPTIONS, spec.sign)
    add(3, "sign", f"What does the small blue sign in {cam} show? {opts}", ans,
        sign_step + f"\nStep 2: The matching option is {ans}")
    opts, ans = _mcq(rng, OBJECT_OPTIONS, spec.crosswalk_object)
    add(4, "object", f"What is the small orange object near the crosswalk ahead in CAM_FRONT? {opts}", ans,
        obj_step + f"\nStep 2: The matching option is {ans}")
    opts, ans = _mcq(rng, ACTION_OPTIONS, action)
    add(5, "light", f"What should the ego vehicle do at the intersection ahead? {opts}", ans,
        light_step + f"\n{obj_step.replace('Step 1', 'Step 2')}\nStep 3: Therefore: {ACTION_OPTIONS[action]}")
    moving = {"red": "stay stopped at the line", "yellow": "slow down and stop",
              "green": "move through the intersection"}[spec.light]
    add(6, "light", "What will the vehicles ahead of the ego vehicle most likely do next?",
        f"They will most likely {moving}, because the traffic light is {spec.light}.",
        light_step + f"\nStep 2: Vehicles facing a {spec.light} light {moving}.")
    care = ("wait for the pedestrian to finish crossing" if spec.crosswalk_object == "pedestrian"
            else "steer clear of the cone")
    add(7, "object", "What should the ego vehicle pay attention to when passing the crosswalk?",
        f"There is a {obj} at the crosswalk, so the ego vehicle should {care}.",
        obj_step + f"\nStep 2: So the ego vehicle should {care}.")
    opts, ans = _mcq(rng, MANOEUVRE_OPTIONS, spec.sign)
    add(8, "sign", f"Which manoeuvre does the sign in {cam} require at the next junction? {opts}", ans,
        sign_step + f"\nStep 2: A {spec.sign} arrow requires: {MANOEUVRE_OPTIONS[spec.sign]}")
    return rows


def corpus_lines(seed: int = 0, frames: int = 64) -> list[str]:
    """Question, answer and reasoning text of `frames` frames, without drawing any image."""
    rng = random.Random(seed)
    lines = []
    for i in range(frames):
        spec = sample_frame(rng, i)
        for q in questions(spec, random.Random(spec.seed)):
            lines += [q["question"], q["final_answer"], q["steps"],
                      f"<think>{q['steps']}</think><answer>{q['final_answer']}</answer>"]
    lines += ['<tool_call>\n{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [10, 20, 130, 140], '
              '"label": "traffic light", "image_index": 0}}\n</tool_call>', "<tool_response>\n</tool_response>"]
    return lines


# ----------------------------------------------------------------------------------------------- drawing

def _jitter(rng, rgb, amount=18):
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in rgb)


def _draw_background(d: ImageDraw.ImageDraw, rng: random.Random, w: int, h: int, horizon: int, road: bool):
    sky_top, sky_low = (110, 150, 205), (185, 205, 230)
    for y in range(horizon):
        t = y / max(1, horizon - 1)
        d.line([(0, y), (w, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(sky_top, sky_low)))
    d.rectangle([0, horizon, w, h], fill=_jitter(rng, (95, 100, 95), 8))  # verge / pavement
    x = 0
    while x < w:  # buildings along the horizon
        bw = rng.randint(w // 14, w // 6)
        bh = rng.randint(h // 10, h // 3)
        d.rectangle([x, horizon - bh, x + bw, horizon], fill=_jitter(rng, (150, 140, 130), 40))
        for wy in range(horizon - bh + 6, horizon - 6, 12):
            for wx in range(x + 5, x + bw - 6, 12):
                d.rectangle([wx, wy, wx + 4, wy + 5], fill=(70, 80, 95))
        x += bw + rng.randint(0, w // 30)
    if road:
        cx = w // 2
        d.polygon([(cx - w // 40, horizon), (cx + w // 40, horizon), (w, h), (0, h)], fill=(70, 70, 72))
        for k in range(8):  # centre dashes, shrinking towards the horizon
            t0, t1 = (k + 0.3) / 8, (k + 0.7) / 8
            y0, y1 = horizon + (h - horizon) * t0 ** 2, horizon + (h - horizon) * t1 ** 2
            d.line([(cx, y0), (cx, y1)], fill=(225, 225, 215), width=max(1, int(1 + 5 * t1)))


def _road_x(w: int, h: int, horizon: int, y: float, side: float) -> float:
    """x of a point on the road surface at row y, side -1 (left kerb) .. 1 (right kerb)."""
    half = w / 40 + (w / 2 - w / 40) * (y - horizon) / (h - horizon)
    return w / 2 + side * half


def _draw_car(d, rng, x, y, scale):
    cw, ch = 60 * scale, 34 * scale
    color = _jitter(rng, rng.choice([(180, 30, 30), (30, 60, 150), (200, 200, 200), (40, 40, 40), (120, 120, 40)]), 15)
    d.rectangle([x - cw / 2, y - ch, x + cw / 2, y], fill=color)
    d.rectangle([x - cw / 3, y - ch * 0.9, x + cw / 3, y - ch * 0.5], fill=(60, 80, 100))
    d.rectangle([x - cw / 2, y - ch * 0.25, x - cw / 2 + 8 * scale, y - ch * 0.1], fill=(240, 220, 160))
    d.rectangle([x + cw / 2 - 8 * scale, y - ch * 0.25, x + cw / 2, y - ch * 0.1], fill=(240, 220, 160))


def _draw_tree(d, rng, x, y, scale):
    d.rectangle([x - 3 * scale, y - 40 * scale, x + 3 * scale, y], fill=(90, 60, 40))
    r = 18 * scale
    d.ellipse([x - r, y - 40 * scale - r, x + r, y - 40 * scale + r], fill=_jitter(rng, (50, 120, 50), 20))


def _draw_clutter(d, rng, w, h, horizon, road: bool):
    for _ in range(rng.randint(2, 5)):
        y = rng.uniform(horizon + (h - horizon) * 0.2, h * 0.98)
        scale = 0.25 + 2.2 * (y - horizon) / (h - horizon)
        x = _road_x(w, h, horizon, y, rng.uniform(-0.6, 0.6)) if road else rng.uniform(0, w)
        _draw_car(d, rng, x, y, scale * w / 800)
    for _ in range(rng.randint(1, 4)):
        y = rng.uniform(horizon + 5, h * 0.8)
        scale = 0.3 + 1.5 * (y - horizon) / (h - horizon)
        x = rng.choice([rng.uniform(0, w * 0.15), rng.uniform(w * 0.85, w)])
        _draw_tree(d, rng, x, y, scale * w / 800)


def _draw_traffic_light(d, w, h, horizon, state) -> tuple[list[float], tuple]:
    s = w / 800
    x, top = w * 0.5 + 0.05 * w, horizon - 34 * s
    d.line([(x, top), (x, horizon + 6 * s)], fill=(60, 60, 60), width=max(1, round(s)))
    hw, hh, r = 3 * s, 7 * s, 1.3 * s
    d.rectangle([x - hw, top - hh, x + hw, top + hh], fill=(28, 28, 28))
    for k, name in enumerate(["red", "yellow", "green"]):
        cy = top - hh * 0.62 + k * hh * 0.62
        color = LIGHT_COLORS[name] if name == state else (48, 48, 48)
        d.ellipse([x - r, cy - r, x + r, cy + r], fill=color)
    pad = 2 * s
    return [x - hw - pad, top - hh - pad, x + hw + pad, top + hh + pad], LIGHT_COLORS[state]


def _draw_sign(d, rng, w, h, horizon, arrow) -> tuple[list[float], tuple]:
    s = w / 800
    x = rng.uniform(0.15, 0.85) * w
    y = horizon - rng.uniform(8, 20) * s
    r = 4.5 * s
    d.line([(x, y), (x, horizon + rng.uniform(2, 10) * s)], fill=(90, 90, 90), width=max(1, round(s)))
    d.ellipse([x - r, y - r, x + r, y + r], fill=SIGN_BLUE)
    a, lw = r * 0.65, max(1, round(0.9 * s))
    if arrow == "straight":
        d.line([(x, y + a), (x, y - a)], fill=WHITE, width=lw)
        d.line([(x - a * 0.6, y - a * 0.3), (x, y - a), (x + a * 0.6, y - a * 0.3)], fill=WHITE, width=lw)
    else:
        sgn = -1 if arrow == "left" else 1
        d.line([(x - sgn * a, y), (x + sgn * a, y)], fill=WHITE, width=lw)
        d.line([(x + sgn * a * 0.3, y - a * 0.6), (x + sgn * a, y), (x + sgn * a * 0.3, y + a * 0.6)],
               fill=WHITE, width=lw)
    pad = 2 * s
    return [x - r - pad, y - r - pad, x + r + pad, y + r + pad], WHITE


def _draw_crosswalk_object(d, w, h, horizon, kind, side) -> tuple[list[float], tuple]:
    s = w / 800
    y = horizon + 9 * s
    for k in range(-4, 5):  # the crosswalk stripes
        xs = _road_x(w, h, horizon, y, k / 4.5)
        d.rectangle([xs - 1.2 * s, y - 1 * s, xs + 1.2 * s, y + 1 * s], fill=(215, 215, 210))
    x = _road_x(w, h, horizon, y, side)
    if kind == "pedestrian":
        d.line([(x - 0.6 * s, y), (x - 0.6 * s, y - 3 * s)], fill=(30, 30, 50), width=max(1, round(0.8 * s)))
        d.line([(x + 0.6 * s, y), (x + 0.6 * s, y - 3 * s)], fill=(30, 30, 50), width=max(1, round(0.8 * s)))
        d.rectangle([x - 1.2 * s, y - 6.5 * s, x + 1.2 * s, y - 3 * s], fill=VEST_ORANGE)
        d.ellipse([x - 0.9 * s, y - 8.4 * s, x + 0.9 * s, y - 6.6 * s], fill=(225, 185, 150))
        top = y - 8.4 * s
    else:
        d.polygon([(x - 2 * s, y), (x + 2 * s, y), (x, y - 6 * s)], fill=VEST_ORANGE)
        d.line([(x - 1.1 * s, y - 2.8 * s), (x + 1.1 * s, y - 2.8 * s)], fill=WHITE, width=max(1, round(0.7 * s)))
        top = y - 6 * s
    pad = 2 * s
    return [x - 2 * s - pad, top - pad, x + 2 * s + pad, y + pad], VEST_ORANGE


def render_frame(spec: FrameSpec, size: tuple[int, int]) -> dict[str, Image.Image]:
    """Draw the six camera views of `spec`; fills `spec.details` with each detail's camera, box and colour."""
    w, h = size
    rng = random.Random(spec.seed)
    views = {}
    for cam in CAMERAS:
        img = Image.new("RGB", (w, h))
        d = ImageDraw.Draw(img)
        horizon = int(h * rng.uniform(0.42, 0.5))
        road = cam in ("CAM_FRONT", "CAM_BACK")
        _draw_background(d, rng, w, h, horizon, road)
        _draw_clutter(d, rng, w, h, horizon, road)
        if cam == "CAM_FRONT":
            box, color = _draw_traffic_light(d, w, h, horizon, spec.light)
            spec.details["light"] = {"camera": cam, "box": box, "color": color}
            box, color = _draw_crosswalk_object(d, w, h, horizon, spec.crosswalk_object, spec.object_side)
            spec.details["object"] = {"camera": cam, "box": box, "color": color}
        if cam == spec.sign_camera:
            box, color = _draw_sign(d, rng, w, h, horizon, spec.sign)
            spec.details["sign"] = {"camera": cam, "box": box, "color": color}
        views[cam] = img
    return views


def stitched_box(camera: str, box: list[float], size: tuple[int, int]) -> list[int]:
    """A box in one camera's pixels, moved into the stitched 2x3 frame (integer, outward-rounded)."""
    ox, oy = cell_origin(camera, size)
    return [int(box[0]) + ox, int(box[1]) + oy, int(box[2] + 0.999) + ox, int(box[3] + 0.999) + oy]


def _save_jpeg(img: Image.Image, path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    # 4:4:4 chroma keeps the colour of two-pixel details; no timestamps or EXIF, so bytes are reproducible
    img.save(path, format="JPEG", quality=95, subsampling=0)


def generate(out: str | Path, frames: int = 8, seed: int = 0, camera_size: tuple[int, int] = (800, 450),
             test_fraction: float = 0.25, progress: bool = True) -> dict:
    """Write toydrive under `out` (DESIGN.md section 6 formats). Returns counts and paths."""
    from tqdm.auto import tqdm

    if frames < 2:
        raise ValueError("toydrive needs --frames >= 2 (at least one train and one test frame)")
    out = Path(out)
    drive = out / "drivelmm"
    rng = random.Random(seed)
    n_test = max(1, round(frames * test_fraction))
    splits = {"train": [], "test": []}
    deepeyes_rows = []
    for i in tqdm(range(frames), desc="toydrive frames", disable=not progress):
        spec = sample_frame(rng, i)
        views = render_frame(spec, camera_size)
        rel = {}
        for cam in CAMERAS:
            name = f"n008-2018-08-01-15-16-36-0400__{cam}__{spec.timestamp}.jpg"
            rel[cam] = f"samples/{cam}/{name}"
            _save_jpeg(views[cam], drive / rel[cam])
        split = "test" if i >= frames - n_test else "train"
        for q in questions(spec, random.Random(spec.seed ^ 0x5EED)):
            det = spec.details[q["detail"]]
            splits[split].append({
                "idx": f"{spec.scene_token}_{spec.sample_token}_{q['qnum']}",
                "image": [rel[cam] for cam in CAMERAS],
                "question": q["question"],
                "final_answer": q["final_answer"],
                "steps": q["steps"],
                "lidar": f"samples/LIDAR_TOP/n008-2018-08-01-15-16-36-0400__LIDAR_TOP__{spec.timestamp}.pcd.bin",
                "gt_box": stitched_box(det["camera"], det["box"], camera_size),
                "gt_color": list(det["color"]),
            })
        if split == "train":
            deepeyes_rows += _deepeyes_rows(spec, views, len(deepeyes_rows))
    for split, rows in splits.items():
        (drive / f"{split}.json").write_text(json.dumps(rows, indent=1))
    _write_parquet(out / "deepeyes" / "train.parquet", deepeyes_rows)
    return {"train": len(splits["train"]), "test": len(splits["test"]), "deepeyes": len(deepeyes_rows),
            "drivelmm_dir": str(drive), "deepeyes_parquet": str(out / "deepeyes" / "train.parquet")}


def _deepeyes_rows(spec: FrameSpec, views: dict, start: int) -> list[dict]:
    """Stage-1 rows: the front camera alone, asked about one tiny detail (the V*-style perception subset)."""
    asks = [
        ("light", "What colour is the lit lamp of the small traffic light?", spec.light),
        ("object", "Is the small orange object at the crosswalk a pedestrian or a cone?", spec.crosswalk_object),
    ]
    if spec.sign_camera == "CAM_FRONT":
        asks.append(("sign", "Which way does the arrow on the small blue sign point?", spec.sign))
    rows = []
    buf = io.BytesIO()
    views["CAM_FRONT"].save(buf, format="PNG")
    png = buf.getvalue()
    for k, (detail, question, answer) in enumerate(asks):
        index = start + k
        rows.append({
            "data_source": "toydrive_vstar",
            "prompt": [{"role": "user", "content": "<image>\n" + question}],
            "images": [{"bytes": png, "path": f"toydrive_{spec.sample_token}_front.png"}],
            "ability": "visual_perception",
            "env_name": "visual_toolbox_v2",
            "reward_model": {"style": "model", "ground_truth": answer},
            "extra_info": {"split": "train", "index": index, "answer": answer, "question": question,
                           "gt_box": [int(v) for v in spec.details[detail]["box"]]},
        })
    return rows


def _write_parquet(path: Path, rows: list[dict]):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path, compression="zstd")


def ensure_toydrive(out: str | Path, frames: int = 16, seed: int = 0) -> Path:
    """`out`, with toydrive generated there first if it holds none."""
    out = Path(out)
    if not (out / "drivelmm" / "test.json").exists():
        print(f"generating toydrive into {out} ({frames} frames, seed {seed})")
        generate(out, frames=frames, seed=seed)
    return out
