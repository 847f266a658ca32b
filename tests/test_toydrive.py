import hashlib
import json
import re

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from omnidrive_r1.data.loaders import DRIVELMM_MCQ_QNUMS as MCQ_QNUMS
from omnidrive_r1.data.stitch import CAMERAS
from omnidrive_r1.toy.toydrive import generate


def _tree_digest(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a, b, c = (generate(tmp_path / n, frames=2, seed=s, progress=False) for n, s in [("a", 7), ("b", 7), ("c", 8)])
    da, db, dc = (_tree_digest(tmp_path / n) for n in "abc")
    assert da == db
    assert da["drivelmm/train.json"] != dc["drivelmm/train.json"]
    assert a == {**b, "drivelmm_dir": a["drivelmm_dir"], "deepeyes_parquet": a["deepeyes_parquet"]}


def test_drivelmm_rows_follow_the_official_format(toydrive_dir):
    rows = json.loads((toydrive_dir / "drivelmm" / "train.json").read_text())
    test_rows = json.loads((toydrive_dir / "drivelmm" / "test.json").read_text())
    assert len(rows) == 3 * 8 and len(test_rows) == 8
    for row in rows + test_rows:
        assert {"idx", "image", "question", "final_answer", "steps", "lidar"} <= set(row)
        scene, sample, qnum = row["idx"].split("_")
        assert re.fullmatch(r"[0-9a-f]{32}", scene) and re.fullmatch(r"[0-9a-f]{32}", sample)
        assert [p.split("/")[1] for p in row["image"]] == CAMERAS
        assert all((toydrive_dir / "drivelmm" / p).is_file() for p in row["image"])
        if int(qnum) in MCQ_QNUMS:
            assert re.fullmatch(r"[A-D]\) .+", row["final_answer"])
            assert all(f"{letter}) " in row["question"] for letter in "ABCD")
            assert row["final_answer"].split(") ", 1)[1] in row["question"]
        else:
            assert not re.match(r"[A-D]\) ", row["final_answer"])
        assert row["steps"].startswith("Step 1:")
        x1, y1, x2, y2 = row["gt_box"]
        assert 0 <= x1 < x2 <= 3 * 800 and 0 <= y1 < y2 <= 2 * 450


def test_questions_cover_perception_and_planning_and_name_the_board(toydrive_dir):
    rows = json.loads((toydrive_dir / "drivelmm" / "train.json").read_text())
    text = " ".join(r["question"] for r in rows)
    for words in ("What does the", "What should the ego vehicle do"):
        assert words in text
    assert all(("yellow board in CAM_" in r["question"]) != ("red board in CAM_" in r["question"]) for r in rows)


def test_deepeyes_parquet_has_the_deepeyes_columns(toydrive_dir):
    table = pq.read_table(toydrive_dir / "deepeyes" / "train.parquet")
    assert {"data_source", "prompt", "images", "ability", "env_name", "reward_model", "extra_info"} <= set(
        table.column_names)
    row = table.to_pylist()[0]
    assert "<image>" in row["prompt"][0]["content"]
    assert row["images"][0]["bytes"][:3] == b"\xff\xd8\xff"  # JPEG
    assert row["reward_model"]["ground_truth"] == row["extra_info"]["answer"]


def _inner(box, keep=0.5):
    """The middle `keep` of a box (inside the board's solid rim)."""
    x0, y0, x1, y1 = box
    mx, my = (x1 - x0) * (1 - keep) / 2, (y1 - y0) * (1 - keep) / 2
    return x0 + mx, y0 + my, x1 - mx, y1 - my


def _stripe_strength(img, box):
    """How much a region varies at the stripes' scale: mean absolute difference between neighbouring pixels,
    along x plus along y."""
    a = np.asarray(img.crop(tuple(round(v) for v in box)).convert("L")).astype(float)
    return float(np.abs(np.diff(a, axis=0)).mean() + np.abs(np.diff(a, axis=1)).mean())


def test_the_stripes_vanish_at_input_resolution_and_are_clear_in_a_zoom(toydrive_dir):
    """Measured on every board: the policy's resized frame shows a flat colour where the board is; a zoom onto
    its grid cell (what the tool returns) shows the stripes, and their orientation."""
    from omnidrive_r1.coordinates import model_size, zoom_crop
    from omnidrive_r1.data.stitch import stitch
    from omnidrive_r1.toy.toydrive import TOY_FACTOR, TOY_MAX_PIXELS, TOY_MIN_PIXELS

    rows = json.loads((toydrive_dir / "drivelmm" / "train.json").read_text())
    seen_boards = {}
    for row in rows:
        seen_boards.setdefault((tuple(row["image"]), tuple(row["gt_box"])), row)
    for (cams, box), row in seen_boards.items():
        frame = stitch([Image.open(toydrive_dir / "drivelmm" / p) for p in cams])
        w, h = model_size(*frame.size, min_pixels=TOY_MIN_PIXELS, max_pixels=TOY_MAX_PIXELS, factor=TOY_FACTOR)
        seen = frame.resize((w, h), Image.Resampling.BICUBIC)
        sx, sy = w / frame.width, h / frame.height
        flat = _stripe_strength(seen, _inner((box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)))
        crop = zoom_crop(frame, [box[0] * sx, box[1] * sy, box[0] * sx + TOY_FACTOR, box[1] * sy + TOY_FACTOR],
                         min_pixels=TOY_MIN_PIXELS, max_pixels=TOY_MAX_PIXELS, factor=TOY_FACTOR)
        clear = _stripe_strength(crop, _inner((0, 0, *crop.size)))
        assert flat < 6 and clear > 40, (row["idx"], flat, clear)
        a = np.asarray(crop.crop(tuple(round(v) for v in _inner((0, 0, *crop.size)))).convert("L")).astype(float)
        along_x, along_y = np.abs(np.diff(a, axis=1)).mean(), np.abs(np.diff(a, axis=0)).mean()
        # horizontal stripes change along y only, vertical ones along x only, the diagonal along both
        if "road-closed" in row["steps"]:
            assert along_x < 0.3 * along_y, (row["idx"], along_x, along_y)
        elif "pointing right" in row["steps"]:
            assert along_y < 0.3 * along_x, (row["idx"], along_x, along_y)
        else:
            assert 0.5 < along_x / along_y < 2, (row["idx"], along_x, along_y)


def test_boards_fill_one_grid_cell_and_move_over_the_whole_frame(tmp_path):
    from omnidrive_r1.toy.toydrive import SLOTS, cell_boxes, sample_boards

    grid = cell_boxes((2400, 900))
    slots = {cam: grid[r][c] for cam, (c, r) in SLOTS.items()}
    rng = __import__("random").Random(0)
    seen = set()
    for _ in range(200):
        for board in sample_boards(rng):
            assert board.box == slots[board.camera]  # one grid cell, in the camera's slot
            seen.add(board.box)
    assert len(seen) == 6 and min(b[0] for b in seen) < 400 and max(b[2] for b in seen) > 2000


def test_frames_must_allow_a_split(tmp_path):
    with pytest.raises(ValueError, match="frames"):
        generate(tmp_path, frames=1)


def test_toydrive_written_by_an_older_world_is_generated_again(tmp_path):
    from omnidrive_r1.toy import toydrive

    out = tmp_path / "td"
    toydrive.generate(out, frames=2, seed=1, progress=False)
    assert not toydrive.stale(out)
    first = (out / "drivelmm" / "test.json").read_text()
    marker = out / toydrive.VERSION_FILE
    marker.unlink()  # what every version before the marker left
    (out / "drivelmm" / "test.json").write_text("[]")
    assert toydrive.stale(out)
    toydrive.ensure_toydrive(out, frames=2, seed=1)
    assert not toydrive.stale(out) and (out / "drivelmm" / "test.json").read_text() == first
    marker.write_text(json.dumps({"version": toydrive.TOYDRIVE_VERSION - 1}))
    assert toydrive.stale(out)
    assert not toydrive.stale(tmp_path / "nothing-here")  # nothing written yet: nothing stale
