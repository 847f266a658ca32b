import hashlib
import json
import re

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from qwen_vl_utils import smart_resize

from omnidrive_r1.data.loaders import DRIVELMM_MCQ_QNUMS as MCQ_QNUMS
from omnidrive_r1.data.stitch import CAMERAS
from omnidrive_r1.toy.tiny import TINY_MAX_PIXELS, TINY_MIN_PIXELS
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


def test_questions_cover_perception_prediction_and_planning(toydrive_dir):
    rows = json.loads((toydrive_dir / "drivelmm" / "train.json").read_text())
    text = " ".join(r["question"] for r in rows)
    for word in ("What colour", "What will", "What should"):
        assert word in text


def test_deepeyes_parquet_has_the_deepeyes_columns(toydrive_dir):
    table = pq.read_table(toydrive_dir / "deepeyes" / "train.parquet")
    assert {"data_source", "prompt", "images", "ability", "env_name", "reward_model", "extra_info"} <= set(
        table.column_names)
    row = table.to_pylist()[0]
    assert "<image>" in row["prompt"][0]["content"]
    assert row["images"][0]["bytes"][:4] == b"\x89PNG"
    assert row["reward_model"]["ground_truth"] == row["extra_info"]["answer"]


def _near_colour_pixels(img, box, color, tol=60):
    a = np.asarray(img.crop(tuple(int(v) for v in box))).astype(int)
    return int((np.sqrt(((a - np.array(color)) ** 2).sum(-1)) < tol).sum())


def test_decisive_detail_is_lost_at_input_resolution_and_clear_in_a_zoom(toydrive_dir):
    """The detail's key colour (lamp colour, white arrow, orange vest/cone) is measured in its box:
    after the policy's resize no pixel keeps it; in a 112-px zoom crop of the original several do."""
    from omnidrive_r1.data.stitch import stitch

    rows = json.loads((toydrive_dir / "drivelmm" / "train.json").read_text())
    frames = {}
    for row in rows:
        key = tuple(row["image"])
        if key not in frames:
            frames[key] = stitch([Image.open(toydrive_dir / "drivelmm" / p) for p in key])
        frame = frames[key]
        w, h = frame.size
        h2, w2 = smart_resize(h, w, factor=28, min_pixels=TINY_MIN_PIXELS, max_pixels=TINY_MAX_PIXELS)
        seen = frame.resize((w2, h2), Image.Resampling.BICUBIC)
        x1, y1, x2, y2 = row["gt_box"]
        sx, sy = w2 / w, h2 / h
        in_seen = _near_colour_pixels(seen, (x1 * sx - 1, y1 * sy - 1, x2 * sx + 2, y2 * sy + 2), row["gt_color"])

        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        crop = frame.crop((int(cx - 56), int(cy - 56), int(cx - 56) + 112, int(cy - 56) + 112))
        ch, cw = smart_resize(112, 112, factor=28, min_pixels=TINY_MIN_PIXELS, max_pixels=TINY_MAX_PIXELS)
        crop = crop.resize((cw, ch), Image.Resampling.BICUBIC)
        ox, oy = int(cx - 56), int(cy - 56)
        in_crop = _near_colour_pixels(crop, (x1 - ox, y1 - oy, x2 - ox, y2 - oy), row["gt_color"])
        assert in_seen == 0, (row["idx"], in_seen)
        assert in_crop >= 6, (row["idx"], in_crop)


def test_frames_must_allow_a_split(tmp_path):
    with pytest.raises(ValueError, match="frames"):
        generate(tmp_path, frames=1)
