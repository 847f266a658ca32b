import json
import shutil

import pytest
from PIL import Image

from omnidrive_r1.data import stitch as stitch_mod
from omnidrive_r1.data.loaders import DataError, load_deepeyes, load_drivelmm
from omnidrive_r1.data.stitch import CAMERAS, cell_origin, stitch
from omnidrive_r1.toy.toydrive import STAGE1_ANSWERS

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)]


def test_stitching_puts_each_camera_in_its_cell():
    size = (160, 90)
    frame = stitch([Image.new("RGB", size, c) for c in COLOURS])
    assert frame.size == (480, 180)
    assert [cell_origin(c, size) for c in CAMERAS] == [(0, 0), (160, 0), (320, 0), (0, 90), (160, 90), (320, 90)]
    for cam, colour in zip(CAMERAS, COLOURS):
        x, y = cell_origin(cam, size)
        for px, py in [(x + 1, y + 1), (x + 80, y + 45), (x + 158, y + 88)]:
            assert frame.getpixel((px, py)) == colour, cam


def test_toydrive_loads_through_the_drivelmm_loader(toydrive_dir, tmp_path):
    ds, report = load_drivelmm(toydrive_dir / "drivelmm" / "train.json", cache_dir=tmp_path, progress=False)
    assert report.rows_kept == report.rows_read == len(ds) == 24
    assert set(ds.column_names) == {"idx", "prompt", "image", "question", "answer", "steps", "is_mcq",
                                    "gt_box", "source"}
    row = ds[1]
    assert row["image"].size == (2400, 900)
    assert row["prompt"][0]["role"] == "system" and row["prompt"][-1] == {"role": "user", "content": row["question"]}
    assert sum(ds["is_mcq"]) == 3 * 5
    assert all(b is not None and len(b) == 4 for b in ds["gt_box"])
    assert len(list(tmp_path.glob("*.jpg"))) == 3  # one stitched frame per frame, shared by its 8 questions


def test_stitching_is_cached_across_loads(toydrive_dir, tmp_path, monkeypatch):
    load_drivelmm(toydrive_dir / "drivelmm" / "test.json", cache_dir=tmp_path, progress=False)
    calls = []
    monkeypatch.setattr(stitch_mod, "stitch", lambda imgs: calls.append(1) or stitch(imgs))
    load_drivelmm(toydrive_dir / "drivelmm" / "test.json", cache_dir=tmp_path, progress=False)
    assert calls == []


def test_toydrive_loads_through_the_deepeyes_loader(toydrive_dir):
    ds, report = load_deepeyes(toydrive_dir / "deepeyes" / "train.parquet")
    assert len(ds) == report.rows_kept > 0
    assert ds[0]["image"].size == (2400, 900)  # the stitched six-camera frame, as stage 2 sees it
    assert ds[0]["answer"] in set(STAGE1_ANSWERS.values())
    assert ds[0]["gt_box"] is not None and not ds[0]["is_mcq"]
    assert len(load_deepeyes(toydrive_dir / "deepeyes" / "train.parquet", sources=["toydrive_vstar"])[0]) == len(ds)
    with pytest.raises(DataError, match="no rows with data_source"):
        load_deepeyes(toydrive_dir / "deepeyes" / "train.parquet", sources=["other_source"])


@pytest.fixture()
def broken_copy(toydrive_dir, tmp_path):
    """A private copy of toydrive's train split (three frames) that a test may damage."""
    root = tmp_path / "drive"
    shutil.copytree(toydrive_dir / "drivelmm", root)
    rows = json.loads((root / "train.json").read_text())
    return root, rows


def _write(root, rows):
    path = root / "bad.json"
    path.write_text(json.dumps(rows))
    return path


@pytest.mark.parametrize("damage, reason", [
    ("missing_image", "image file not found"),
    ("unreadable_image", "cannot read image"),
    ("missing_field", "missing field"),
    ("wrong_camera_count", "6 camera paths"),
])
def test_bad_rows_name_the_file_and_row_or_are_counted(broken_copy, tmp_path, damage, reason):
    root, rows = broken_copy
    bad = rows[2]
    if damage == "missing_image":
        bad["image"][3] = "samples/CAM_BACK_RIGHT/not_there.jpg"
    elif damage == "unreadable_image":
        (root / bad["image"][0]).write_bytes(b"not a jpeg")  # the first frame's 8 rows share this file
        bad = rows[0]
    elif damage == "missing_field":
        del bad["question"]
    else:
        bad["image"] = bad["image"][:5]
    path = _write(root, rows)
    with pytest.raises(DataError) as err:
        load_drivelmm(path, cache_dir=tmp_path / "c", progress=False)
    msg = str(err.value)
    assert str(path) in msg and reason in msg and bad.get("idx", "") in msg
    assert "row " in msg

    ds, report = load_drivelmm(path, cache_dir=tmp_path / "c", skip_bad=True, progress=False)
    assert sum(report.skipped.values()) == report.rows_read - report.rows_kept >= 1
    assert len(ds) == report.rows_kept


@pytest.mark.parametrize("content, reason", [("", "empty"), ("[]", "no rows"), ("{", "not valid JSON"),
                                             ('{"idx": 1}', "JSON list")])
def test_unusable_files_fail_with_the_file_name(tmp_path, content, reason):
    path = tmp_path / "x.json"
    path.write_text(content)
    with pytest.raises(DataError, match=reason) as err:
        load_drivelmm(path)
    assert str(path) in str(err.value)


def test_missing_files_fail_clearly(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_drivelmm(tmp_path / "nope.json")
    with pytest.raises(DataError, match="not found"):
        load_deepeyes(tmp_path / "nope.parquet")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1garbage")
    with pytest.raises(DataError, match="parquet"):
        load_deepeyes(tmp_path / "bad.parquet")


def test_deepeyes_bad_image_bytes_are_counted(toydrive_dir, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = pq.read_table(toydrive_dir / "deepeyes" / "train.parquet").to_pylist()
    rows[0]["images"] = [{"bytes": b"broken", "path": "x.png"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet")
    with pytest.raises(DataError, match=r"row 0 \(idx toydrive_vstar-0\): cannot decode"):
        load_deepeyes(tmp_path / "t.parquet")
    ds, report = load_deepeyes(tmp_path / "t.parquet", skip_bad=True)
    assert report.skipped == {"unreadable image": 1} and len(ds) == len(rows) - 1


# ------------------------------------------------------------------- faults a hostile user found (reliability)

@pytest.mark.parametrize("damage, reason", [
    (lambda rows: rows[1].update(idx=rows[0]["idx"]), "duplicate idx"),
    (lambda rows: rows[2].update(gt_box="abc"), "gt_box must be"),
    (lambda rows: rows[2].update(gt_box=[10, 10, 5, 20]), "x1 < x2"),
    (lambda rows: rows[2]["image"].__setitem__(3, None), "camera path"),
    (lambda rows: rows[2].update(question=123), "'question' must be non-empty text, got int"),
    (lambda rows: rows[2].update(question=None), "'question' must be non-empty text, got NoneType"),
    (lambda rows: rows[2].update(final_answer={"letter": "B"}), "'final_answer' must be non-empty text, got dict"),
    (lambda rows: rows[2].update(steps=["a"]), "'steps' must be text"),
    (lambda rows: rows[2]["image"].__setitem__(0, "../../outside.jpg"), "outside the images root"),
])
def test_bad_fields_are_named_by_row_and_idx_or_skipped_by_reason(broken_copy, tmp_path, damage, reason):
    root, rows = broken_copy
    damage(rows)
    path = _write(root, rows)
    with pytest.raises(DataError, match=reason) as err:
        load_drivelmm(path, cache_dir=tmp_path / "c", progress=False)
    assert str(path) in str(err.value) and "row " in str(err.value) and "(idx " in str(err.value)
    ds, report = load_drivelmm(path, cache_dir=tmp_path / "c", skip_bad=True, progress=False)
    assert report.rows_kept == len(rows) - 1 == len(ds) and sum(report.skipped.values()) == 1
    assert len(set(ds["idx"])) == len(ds)


def test_a_truncated_image_inside_a_parquet_file_is_caught_at_load_time(toydrive_dir, tmp_path):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = pq.read_table(toydrive_dir / "deepeyes" / "train.parquet").to_pylist()
    buf = io.BytesIO()
    Image.open(io.BytesIO(rows[1]["images"][0]["bytes"])).save(buf, format="JPEG")
    rows[1]["images"] = [{"bytes": buf.getvalue()[: len(buf.getvalue()) // 2], "path": "cut.jpg"}]  # passes verify()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet")
    with pytest.raises(DataError, match=r"row 1 \(idx toydrive_vstar-1\): cannot decode"):
        load_deepeyes(tmp_path / "t.parquet")
    ds, report = load_deepeyes(tmp_path / "t.parquet", skip_bad=True)
    assert report.skipped == {"unreadable image": 1}
    for image in ds["image"]:  # every kept row decodes: nothing left to fail mid-epoch
        image.load()


def test_deepeyes_field_types_and_duplicates(toydrive_dir, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = pq.read_table(toydrive_dir / "deepeyes" / "train.parquet").to_pylist()
    rows[1]["extra_info"] = {**rows[1]["extra_info"], "index": rows[0]["extra_info"]["index"]}
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "dup.parquet")
    with pytest.raises(DataError, match="duplicate idx"):
        load_deepeyes(tmp_path / "dup.parquet")


def test_unknown_sources_and_bad_limits_are_refused(toydrive_dir):
    with pytest.raises(DataError, match=r"no rows with data_source \['vstr'\]; the file has \['toydrive_vstar'\]"):
        load_deepeyes(toydrive_dir / "deepeyes" / "train.parquet", sources=["vstr"])
    for limit in (-2, 0):
        with pytest.raises(DataError, match="limit must be a positive number"):
            load_drivelmm(toydrive_dir / "drivelmm" / "test.json", limit=limit)
        with pytest.raises(DataError, match="limit must be a positive number"):
            load_deepeyes(toydrive_dir / "deepeyes" / "train.parquet", limit=limit)
