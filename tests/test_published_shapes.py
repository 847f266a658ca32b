"""Data files shaped like the published ones (docs/data.md): DriveLMM-o1 TEST and TRAIN rows, a list or an object
keyed by idx, six nuScenes camera paths or pre-stitched frames, and DeepEyes parquet rows with their own system
prompt. Every row here is built as the public files are: 1600x900 cameras in camera order, `lidar` a bare file
name, a 32-hex scene token and sample token in the idx."""

import io
import json

import pytest
from PIL import Image

from omnidrive_r1.cli import main
from omnidrive_r1.data.loaders import DataError, load_deepeyes, load_drivelmm, split_train_answer
from omnidrive_r1.data.stitch import CAMERAS, cell_origin
from omnidrive_r1.prompts import SYSTEM_PROMPT

CAMERA_SIZE = (1600, 900)
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200), (200, 30, 200)]
FRAMES = [("a1b2c3d4e5f60718293a4b5c6d7e8f90", "0f1e2d3c4b5a69788796a5b4c3d2e1f0", "n015-2018-07-24-11-22-45+0800",
           1532402927612460),
          ("5e4d3c2b1a0f9e8d7c6b5a4938271605", "c0ffee00c0ffee00c0ffee00c0ffee00", "n008-2018-08-01-15-16-36-0400",
           1533151603512404)]
MCQ = ("What should the ego vehicle do next? A) Slow down and assess the situation. B) Keep going. "
       "C) Turn left. D) Reverse.")
STEPS = "1. The car ahead brakes, as the top middle image shows.\n2. A pedestrian waits at the crossing."


def _cameras(root, prefix, stamp, colour_shift=0) -> list[str]:
    paths = []
    for k, cam in enumerate(CAMERAS):
        rel = f"samples/{cam}/{prefix}__{cam}__{stamp + k}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", CAMERA_SIZE, COLOURS[(k + colour_shift) % 6]).save(root / rel, quality=90)
        paths.append(rel)
    return paths


@pytest.fixture(scope="module")
def nuscenes(tmp_path_factory):
    """A nuScenes-like folder with two frames' six cameras, and the rows of both (question numbers 1, 2, 7)."""
    root = tmp_path_factory.mktemp("nuscenes")
    frames = []
    for n, (scene, sample, prefix, stamp) in enumerate(FRAMES):
        frames.append((scene, sample, prefix, stamp, _cameras(root, prefix, stamp, colour_shift=n)))
    return root, frames


def _test_rows(frames) -> list[dict]:
    rows = []
    for scene, sample, prefix, stamp, cams in frames:
        for qnum, question, answer in [(1, "What is in front of the ego vehicle?", "A silver car, braking."),
                                       (2, MCQ, "A) Slow down and assess the situation."),
                                       (7, "Is it safe to change lanes?", "No, a truck is in the left lane.")]:
            rows.append({"idx": f"{scene}_{sample}_{qnum}", "image": cams, "question": question,
                         "final_answer": answer, "steps": STEPS, "lidar": f"{prefix}__LIDAR_TOP__{stamp}.pcd.bin",
                         "source_model": "another project's key"})  # other projects add keys of their own
    return rows


def _as_train(row: dict) -> dict:
    """A TEST row reshaped as public consumers read DriveLMM-o1 TRAIN rows: one `answer` holding both parts."""
    out = {k: v for k, v in row.items() if k not in ("steps", "final_answer")}
    out["answer"] = f"**Step-by-Step Reasoning**:\n\n{row['steps']}\n\n**Final Answer**: {row['final_answer']}"
    return out


def _write(path, data):
    path.write_text(json.dumps(data, indent=1))
    return path


def test_a_list_of_test_rows_stitches_nuscenes_cameras_into_the_4800x1800_grid(nuscenes, tmp_path):
    root, frames = nuscenes
    rows = _test_rows(frames)
    path = _write(tmp_path / "DriveLMMo1_TEST.json", rows)
    ds, report = load_drivelmm(path, root, cache_dir=tmp_path / "cache", progress=False)
    assert report.rows_kept == report.rows_read == len(ds) == 6
    frame = ds[0]["image"]
    assert frame.size == (4800, 1800)
    for k, cam in enumerate(CAMERAS):  # each camera in its cell: FRONT_LEFT, FRONT, FRONT_RIGHT / BACK_RIGHT, ...
        x, y = cell_origin(cam, CAMERA_SIZE)
        assert max(abs(a - b) for a, b in zip(frame.getpixel((x + 800, y + 450)), COLOURS[k])) <= 3, cam
    assert ds["is_mcq"] == [False, True, False] * 2
    assert ds[1]["answer"] == "A) Slow down and assess the situation." and ds[1]["steps"] == STEPS
    assert ds[0]["idx"] == f"{FRAMES[0][0]}_{FRAMES[0][1]}_1"


def test_an_object_keyed_by_idx_of_train_rows_loads_with_steps_and_answer_recovered(nuscenes, tmp_path):
    root, frames = nuscenes
    rows = [_as_train(r) for r in _test_rows(frames)]
    keyed = {r["idx"]: r for r in rows}
    del keyed[rows[0]["idx"]]["idx"]  # a keyed row without its own idx takes its key
    path = _write(tmp_path / "DriveLMMo1_TRAIN.json", keyed)
    ds, report = load_drivelmm(path, root, cache_dir=tmp_path / "cache", progress=False)
    assert report.rows_kept == 6 and ds["idx"] == [r["idx"] for r in _test_rows(frames)]
    assert ds[1]["answer"] == "A) Slow down and assess the situation."
    assert ds[1]["steps"] == STEPS and ds[1]["is_mcq"]
    assert ds[0]["image"].size == (4800, 1800)


def test_train_answers_split_into_reasoning_and_final_answer():
    assert split_train_answer("**Step-by-Step Reasoning**:\n\n1. A.\n2. B.\n\n**Final Answer**: C) Stop.") == \
        ("1. A.\n2. B.", "C) Stop.")
    assert split_train_answer("**Final Answer:** yes") == ("", "yes")  # the other bold spelling
    # the last final-answer mark wins: reasoning may quote the phrase
    assert split_train_answer("**Step-by-Step Reasoning**: x **Final Answer**: y\n**Final Answer**: z") == \
        ("x **Final Answer**: y", "z")


@pytest.mark.parametrize("answer", ["**Step-by-Step Reasoning**:\n\n1. A car.", "**Final Answer**:   "])
def test_a_train_row_without_a_final_answer_is_named_or_counted(nuscenes, tmp_path, answer):
    root, frames = nuscenes
    rows = [_as_train(r) for r in _test_rows(frames)]
    rows[4]["answer"] = answer
    path = _write(tmp_path / "train.json", rows)
    with pytest.raises(DataError, match=r"row 4 \(idx '.*_2'\): field 'answer' has no '\*\*Final Answer\*\*: \.\.\.' part"):
        load_drivelmm(path, root, cache_dir=tmp_path / "cache", progress=False)
    ds, report = load_drivelmm(path, root, cache_dir=tmp_path / "cache", progress=False, skip_bad=True)
    assert report.skipped == {"no final answer": 1} and len(ds) == 5


def test_a_row_with_neither_shape_names_both(nuscenes, tmp_path):
    root, frames = nuscenes
    rows = _test_rows(frames)
    del rows[2]["final_answer"]
    with pytest.raises(DataError, match="missing field 'final_answer' .* or 'answer'"):
        load_drivelmm(_write(tmp_path / "t.json", rows), root, cache_dir=tmp_path / "cache", progress=False)


@pytest.mark.parametrize("content, reason", [('{"a_b_1": 3}', "key 'a_b_1' holds int, not a row"),
                                             ('"rows"', "or an object of rows keyed by idx, got str")])
def test_files_that_are_neither_a_list_nor_keyed_rows_are_refused(tmp_path, content, reason):
    path = tmp_path / "x.json"
    path.write_text(content)
    with pytest.raises(DataError, match=reason):
        load_drivelmm(path)


def _stitched_folder(tmp_path, frames, suffix=".png"):
    folder = tmp_path / "stitched"
    folder.mkdir()
    for n, (scene, sample, *_rest) in enumerate(frames):
        Image.new("RGB", (4800, 1800), COLOURS[n]).save(folder / f"{scene}_{sample}{suffix}")
    return folder


def test_pre_stitched_frames_are_found_by_idx_without_the_camera_files(nuscenes, tmp_path):
    _, frames = nuscenes
    folder = _stitched_folder(tmp_path, frames)
    rows = [_as_train(r) for r in _test_rows(frames)]
    path = _write(tmp_path / "train.json", rows)
    # no images root holds the camera files: the stitched folder is all the loader reads
    ds, report = load_drivelmm(path, tmp_path / "nowhere", stitched_dir=folder, progress=False)
    assert report.rows_kept == 6
    assert ds[0]["image"].size == (4800, 1800) and ds[0]["image"].getpixel((10, 10)) == COLOURS[0]
    assert ds[5]["image"].getpixel((10, 10)) == COLOURS[1]
    del rows[3]["image"]  # rows need no camera list then
    ds, _ = load_drivelmm(_write(tmp_path / "train2.json", rows), stitched_dir=folder, progress=False)
    assert len(ds) == 6


def test_a_missing_or_broken_stitched_frame_names_the_idx_and_the_file(nuscenes, tmp_path):
    _, frames = nuscenes
    folder = _stitched_folder(tmp_path, frames[:1], suffix=".jpg")  # .jpg is accepted too
    path = _write(tmp_path / "test.json", _test_rows(frames))
    scene, sample = frames[1][:2]
    with pytest.raises(DataError) as err:
        load_drivelmm(path, stitched_dir=folder, progress=False)
    assert f"idx '{scene}_{sample}_1'" in str(err.value) and str(folder / f"{scene}_{sample}.png") in str(err.value)
    ds, report = load_drivelmm(path, stitched_dir=folder, progress=False, skip_bad=True)
    assert len(ds) == 3 and report.skipped == {"missing image": 3}
    (folder / f"{scene}_{sample}.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read image"):
        load_drivelmm(path, stitched_dir=folder, progress=False)
    with pytest.raises(DataError, match="stitched frames folder not found"):
        load_drivelmm(path, stitched_dir=tmp_path / "absent", progress=False)


def test_data_check_reads_a_keyed_train_file_and_prints_the_rows_kept(nuscenes, tmp_path, capsys):
    root, frames = nuscenes
    path = _write(tmp_path / "DriveLMMo1_TRAIN.json", {r["idx"]: _as_train(r) for r in _test_rows(frames)})
    assert main(["data", "check", "--drivelmm", str(path), "--images-root", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"{path}: kept 6 of 6 rows" in out and "MCQ rows: 2" in out
    folder = _stitched_folder(tmp_path, frames)
    assert main(["data", "check", "--drivelmm", str(path), "--stitched-dir", str(folder)]) == 0
    assert "kept 6 of 6 rows" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------- DeepEyes

THEIR_SYSTEM_PROMPT = (  # shaped like DeepEyes' own: a tool whose schema requires "bbox" while it names "bbox_2d"
    'You may call tools.\n<tools>\n{"type": "function", "function": {"name": "image_zoom_in_tool", "parameters": '
    '{"type": "object", "properties": {"bbox_2d": {"type": "array"}, "label": {"type": "string"}}, '
    '"required": ["bbox"]}}}\n</tools>')


def _deepeyes_rows() -> list[dict]:
    rows = []
    for i, (source, ability, question, truth) in enumerate([
            ("vstar", "perception", "What is the colour of the umbrella?", "The umbrella is red."),
            ("vstar", "perception", "Is the dog on the left or the right of the bench?", "left"),
            ("chart", "chart", "What is the highest value in the chart?", "42"),
            ("thinklite_eureka", "reasoning", "How many triangles are there?", "B")]):
        buf = io.BytesIO()
        Image.new("RGB", (640, 480), COLOURS[i]).save(buf, format="JPEG")
        rows.append({
            "data_source": source,
            "prompt": [{"role": "system", "content": THEIR_SYSTEM_PROMPT},
                       {"role": "user", "content": f"<image>\n{question}\nThink first, then answer."}],
            "images": [{"bytes": buf.getvalue()}],
            "ability": ability, "env_name": "visual_toolbox_v2",
            "reward_model": {"style": "model", "ground_truth": truth},
            "extra_info": {"split": "train", "index": i, "answer": truth, "question": question}})
    return rows


def test_deepeyes_rows_as_published_load_with_our_system_prompt(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = _deepeyes_rows()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train.parquet")
    ds, report = load_deepeyes(tmp_path / "train.parquet")
    assert report.rows_kept == 4
    assert ds["idx"] == ["vstar-0", "vstar-1", "chart-2", "thinklite_eureka-3"]
    assert ds["source"] == ["vstar", "vstar", "chart", "thinklite_eureka"]
    for row, raw in zip(ds, rows):
        # their system prompt (a tool requiring "bbox") is replaced by ours; the question is extra_info's
        assert row["prompt"] == [{"role": "system", "content": SYSTEM_PROMPT},
                                 {"role": "user", "content": raw["extra_info"]["question"]}]
        assert row["answer"] == raw["reward_model"]["ground_truth"] and row["image"].size == (640, 480)
    assert ds["is_mcq"] == [False, False, False, True]
    assert len(load_deepeyes(tmp_path / "train.parquet", sources=["vstar"])[0]) == 2

    # without extra_info.question, the user turn's text is the question (their instruction suffix kept)
    rows[0]["extra_info"] = {k: v for k, v in rows[0]["extra_info"].items() if k != "question"}
    pq.write_table(pa.Table.from_pylist(rows[:1]), tmp_path / "noq.parquet")
    ds, _ = load_deepeyes(tmp_path / "noq.parquet")
    assert ds[0]["question"] == "What is the colour of the umbrella?\nThink first, then answer."
