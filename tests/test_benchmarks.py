"""V* Bench and HR-Bench as `omnidrive-r1 eval --benchmark` plug-ins: loading the published formats, scoring
crafted responses against hand computations, the toydrive sets, and the whole path on the tiny policy."""

import base64
import csv
import io
import json

import pytest
from judge_server import JudgeServer
from PIL import Image

from omnidrive_r1.data.loaders import DataError
from omnidrive_r1.errors import UserError
from omnidrive_r1.eval import benchmarks
from omnidrive_r1.eval.benchmarks import choice_prompt, rotations
from omnidrive_r1.eval.benchmarks.hrbench import COLUMNS, cycle_figures
from omnidrive_r1.eval.benchmarks.vstar import figures
from omnidrive_r1.eval.choice_reading import read_choice
from omnidrive_r1.toy.benchmarks import generate_hrbench, generate_vstar


def test_the_package_lists_its_benchmarks_and_names_an_unknown_one():
    assert benchmarks.names() == ["drivelmm", "hrbench", "vstar"]
    with pytest.raises(UserError, match="choose one of drivelmm, hrbench, vstar"):
        benchmarks.get("mmbench")


def test_rotations_put_the_right_option_at_every_position():
    options = ["red", "blue", "green", "white"]
    got = rotations(options)
    assert [letter for _, letter in got] == ["A", "B", "C", "D"]
    assert got[0][0] == options  # rotation 0: the file's order
    for order, letter in got:
        assert order["ABCD".index(letter)] == "red" and sorted(order) == sorted(options)
    assert [o for o, _ in rotations(options, right=2)][0][0] == "green"


@pytest.mark.parametrize("reply, letter", [
    ("B", "B"), ("b.", "B"), ("(C)", "C"), ("B) blue", "B"), ("blue", "B"), ("It is blue.", "B"),
    ("Blue!", "B"), ("blue or red", None), ("E", None), ("purple", None), ("", None), (None, None),
    ("light blue", "B"),
])
def test_a_reply_is_read_as_one_option_or_none(reply, letter):
    assert read_choice(reply, ["red", "blue", "green", "white"]) == letter


def test_an_option_inside_a_longer_one_counts_once():
    assert read_choice("upper left", ["left", "upper left"]) == "B"
    assert choice_prompt("Which?", ["x", "y"]) == "Which? A) x B) y"


# ----------------------------------------------------------------------------------------------- V* Bench

def _vstar_record(item, category, rotation, n, correct):
    truth = "ABCD"[rotation]
    answer = truth if correct else "ABCD"[(rotation + 1) % n]
    return benchmarks.get("vstar").score({"idx": f"{item}#r{rotation}", "item": item, "category": category,
                                          "rotation": rotation, "options": [f"o{i}" for i in range(n)],
                                          "truth_letter": truth, "response": f"<answer>{answer}</answer>"})


def test_vstar_scoring_equals_a_hand_computation():
    records = [_vstar_record("da/x", "da", k, 4, k == 0) for k in range(4)]  # right only in file order
    records += [_vstar_record("rp/y", "rp", k, 2, True) for k in range(2)]  # right in every rotation
    records += [_vstar_record("da/z", "da", k, 4, k != 3) for k in range(4)]  # wrong once
    got = figures(records)
    # file order: x, y, z all right -> 3/3; every rotation: only y -> 1/3
    assert got["accuracy_file_order"] == pytest.approx(100.0)
    assert got["accuracy_rotated"] == pytest.approx(100 / 3)
    assert got["by_category"]["da"] == {"items": 2, "accuracy_file_order": 100.0, "accuracy_rotated": 0.0}
    assert got["by_category"]["rp"] == {"items": 1, "accuracy_file_order": 100.0, "accuracy_rotated": 100.0}
    assert got["items_missing_a_rotation"] == 0


def test_a_policy_that_always_says_a_gets_100_in_file_order_and_0_rotated(tmp_path):
    bench = benchmarks.get("vstar")
    loaded = bench.load(str(generate_vstar(tmp_path / "vs", items=3)))
    records = [bench.score({"idx": r["idx"], **r["fields"], "response": "<answer>A</answer>"}) for r in loaded.rows]
    got = figures(records)
    assert got["items"] == 6 and got["accuracy_file_order"] == 100.0 and got["accuracy_rotated"] == 0.0


def test_vstar_files_load_with_boxes_in_corner_form_and_bad_items_counted(tmp_path):
    root = tmp_path / "vstar"
    (root / "direct_attributes").mkdir(parents=True)
    (root / "relative_position").mkdir()
    Image.new("RGB", (64, 48)).save(root / "direct_attributes" / "a.jpg")
    (root / "direct_attributes" / "a.json").write_text(json.dumps(
        {"target_object": ["cup"], "bbox": [[10, 5, 20, 8]], "question": "What colour is the cup?",
         "options": ["red", "blue", "green", "white"]}))
    (root / "direct_attributes" / "b.json").write_text("{broken")  # unreadable
    (root / "relative_position" / "c.json").write_text(json.dumps(  # no image beside it
        {"target_object": ["a", "b"], "bbox": [[0, 0, 1, 1], [2, 2, 1, 1]], "question": "q", "options": ["l", "r"]}))
    Image.new("RGB", (8, 8)).save(root / "relative_position" / "d.png")
    (root / "relative_position" / "d.json").write_text(json.dumps(
        {"target_object": ["a"], "bbox": [[0, 0, -1, 1]], "question": "q", "options": ["l", "r"]}))  # bad box
    loaded = benchmarks.get("vstar").load(str(root))
    assert [r["idx"] for r in loaded.rows] == [f"direct_attributes/a#r{k}" for k in range(4)]
    assert loaded.rows[0]["gt_boxes"] == [[10, 5, 30, 13]]
    assert loaded.rows[2]["fields"]["options"][2] == "red" and loaded.rows[2]["fields"]["truth_letter"] == "C"
    assert dict(loaded.skipped) == {"unreadable JSON": 1, "missing image": 1, "bad bbox": 1}
    with pytest.raises(DataError, match="not found"):
        benchmarks.get("vstar").load(str(tmp_path / "nowhere"))


# ----------------------------------------------------------------------------------------------- HR-Bench

def _hr(idx, cycle, category, correct, judge=None):
    return {"idx": idx, "cycle_category": cycle, "category": category, "correct": correct, "judge_correct": judge}


def test_hrbench_scoring_averages_per_category_over_cycles_by_hand():
    records = [_hr("1", "c0", "FSP", True), _hr("2", "c0", "FSP", False), _hr("3", "c0", "FCP", True),
               _hr("4", "c0", "FCP", True),
               _hr("5", "c1", "FSP", False), _hr("6", "c1", "FSP", False), _hr("7", "c1", "FSP", False),
               _hr("8", "c1", "FCP", True)]
    got = cycle_figures(records, "correct")
    # c0: FSP 1/2 = 50, FCP 2/2 = 100, all 3/4 = 75; c1: FSP 0/3 = 0, FCP 1/1 = 100, all 1/4 = 25
    assert got["cycles"]["c0"]["by_category"] == {"FCP": 100.0, "FSP": 50.0}
    assert got["cycles"]["c1"]["accuracy"] == 25.0
    assert got["by_category"] == {"FCP": 100.0, "FSP": 25.0}
    assert got["accuracy"] == 50.0  # the mean of 75 and 25, not 4/8 pooled... which happens to agree here
    records[6]["correct"] = True  # c1 all: 2/4 = 50 -> overall (75 + 50) / 2
    assert cycle_figures(records, "correct")["accuracy"] == 62.5
    # a row without a verdict counts as wrong
    judged = [_hr("1", "c0", "FSP", True, judge=True), _hr("2", "c0", "FSP", True, judge=None)]
    assert cycle_figures(judged, "judge_correct")["accuracy"] == 50.0


def _write_tsv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, delimiter="\t")
        w.writeheader()
        w.writerows(rows)


def _png_b64():
    buf = io.BytesIO()
    Image.new("RGB", (32, 16), (200, 10, 10)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_hrbench_rows_load_with_image_references_and_bad_rows_counted(tmp_path):
    base = {"question": "What colour?", "A": "red", "B": "blue", "C": "green", "D": "white", "category": "FSP"}
    rows = [{**base, "index": "0", "answer": "A", "cycle_category": "c0", "image": _png_b64()},
            {**base, "index": "1", "answer": "B", "cycle_category": "c1", "image": "0"},  # the image of row 0
            {**base, "index": "2", "answer": "A", "cycle_category": "c2", "image": "not*base64!"},
            {**base, "index": "3", "answer": "E", "cycle_category": "c3", "image": "0"},
            {**base, "index": "1", "answer": "A", "cycle_category": "c3", "image": "0"}]
    _write_tsv(tmp_path / "hr_bench_8k.tsv", rows)
    loaded = benchmarks.get("hrbench").load(str(tmp_path / "hr_bench_8k.tsv"))
    assert [r["idx"] for r in loaded.rows] == ["0", "1"]
    assert loaded.rows[0]["image"] == loaded.rows[1]["image"] and Image.open(loaded.rows[1]["image"]).size == (32, 16)
    assert loaded.rows[1]["fields"]["truth"] == "B. blue"
    assert dict(loaded.skipped) == {"bad image": 1, "bad answer": 1, "duplicate index": 1}
    _write_tsv(tmp_path / "short.tsv", [])
    (tmp_path / "short.tsv").write_text("index\tquestion\n0\tq\n")
    with pytest.raises(DataError, match="missing column"):
        benchmarks.get("hrbench").load(str(tmp_path / "short.tsv"))


# ------------------------------------------------------------------------------------------ toydrive sets

def test_the_toy_sets_are_the_same_bytes_for_the_same_seed(tmp_path):
    def files(folder):
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    a, b = generate_vstar(tmp_path / "a", items=2), generate_vstar(tmp_path / "b", items=2)
    assert files(a) == files(b) and len(files(a)) == 2 * 2 * 2 + 1
    assert files(generate_vstar(tmp_path / "c", items=2, seed=1)) != files(a)
    p, q = generate_hrbench(tmp_path / "p", questions=2), generate_hrbench(tmp_path / "q", questions=2)
    assert p.read_bytes() == q.read_bytes()
    loaded = benchmarks.get("hrbench").load(str(p))
    assert len(loaded.rows) == 2 * 2 * 4 and {r["fields"]["category"] for r in loaded.rows} == {"FSP", "FCP"}
    # each question's right option visits every letter over the four cycles
    by_question = {}
    for r in loaded.rows:
        by_question.setdefault((r["question"].split(" A) ")[0], r["image"]), set()).add(r["fields"]["truth_letter"])
    assert len(by_question) == 4 and all(letters == set("ABCD") for letters in by_question.values())


# --------------------------------------------------------------------------------- end to end, tiny policy

def test_vstar_end_to_end_writes_both_figures_and_resumes(tiny_policy_dir, tmp_path, monkeypatch):
    from omnidrive_r1.eval.run import evaluate
    from omnidrive_r1.rollout import RolloutSettings

    data = generate_vstar(tmp_path / "vs", items=1)
    settings = RolloutSettings(max_turns=1, max_completion_length=8)
    summary = evaluate(str(tiny_policy_dir), data, benchmark="vstar", out=tmp_path / "e", settings=settings)
    assert summary["items"] == 2 and summary["rows_evaluated"] == 6  # 4 + 2 rotations
    assert {"accuracy_file_order", "accuracy_rotated", "tool_calls_per_question", "zoom_iou"} <= set(summary)
    rows = [json.loads(line) for line in (tmp_path / "e" / "rows.jsonl").read_text().splitlines()]
    assert all(isinstance(r["correct"], bool) and r["frame"].endswith(".jpg") for r in rows)
    assert [len(r["gt_boxes"]) for r in rows] == [1, 1, 1, 1, 2, 2]
    assert "V* Bench" in (tmp_path / "e" / "summary.md").read_text() and (tmp_path / "e" / "summary.png").exists()

    import omnidrive_r1.eval.run as run_module  # where evaluate looks the engine up

    monkeypatch.setattr(run_module, "make_engine", lambda *a, **k: pytest.fail("nothing left to generate"))
    again = evaluate(str(tiny_policy_dir), data, benchmark="vstar", out=tmp_path / "e", settings=settings)
    assert again["accuracy_rotated"] == summary["accuracy_rotated"]
    with pytest.raises(UserError, match="differs in: benchmark"):  # another benchmark's folder is not mixed in
        evaluate(str(tiny_policy_dir), generate_hrbench(tmp_path / "hr", questions=1), benchmark="hrbench",
                 out=tmp_path / "e", settings=settings)


def test_hrbench_end_to_end_with_the_yes_no_judge(tiny_policy_dir, tmp_path):
    from omnidrive_r1.eval.judge import JudgeConfig
    from omnidrive_r1.eval.run import evaluate
    from omnidrive_r1.rollout import RolloutSettings

    data = generate_hrbench(tmp_path / "hr", questions=1)
    server = JudgeServer()
    try:
        judge = JudgeConfig.yes_no(server.url, "judge-test", retries=1, backoff=0.01)
        summary = evaluate(str(tiny_policy_dir), data, benchmark="hrbench", out=tmp_path / "e", judge_config=judge,
                           settings=RolloutSettings(max_turns=1, max_completion_length=8))
    finally:
        server.close()
    assert summary["rows_evaluated"] == 8 and set(summary["cycles"]) == {f"cycle{k}" for k in range(4)}
    official = summary["official_protocol"]
    assert official["accuracy"] == 100.0 and official["judge_failures"] == 0  # the test judge says yes
    assert set(summary["by_category"]) == {"FSP", "FCP"}
    asked = [r["body"]["messages"] for r in server.requests if "yes or no" in r["body"]["messages"][0]["content"]]
    assert len(asked) == 8 and all("Correct option:" in a[1]["content"] for a in asked)  # the official: every row
    assert "judge" in (tmp_path / "e" / "summary.md").read_text()


@pytest.mark.parametrize("args, why", [
    (["--benchmark", "vstar", "--mcq-only"], "DriveLMM-o1's"),
    (["--benchmark", "hrbench", "--judge-url", "http://127.0.0.1:9/v1", "--official-script", "x.py"],
     "DriveLMM-o1's reasoning judge"),
    (["--benchmark", "vstar", "--results", "r.json"], "--results needs --data, the vstar data"),
])
def test_options_of_another_benchmark_are_refused_by_name(args, why, tiny_policy_dir, capsys):
    from omnidrive_r1.cli import main

    assert main(["eval", "--model", str(tiny_policy_dir), *args]) == 2
    assert why in capsys.readouterr().err


def test_the_view_draws_every_target_box_of_a_vstar_row(tmp_path):
    from omnidrive_r1.view import write_view

    Image.new("RGB", (200, 100)).save(tmp_path / "f.jpg")
    record = {"idx": "relative_position/t#r1", "question": "q A) l B) r", "options": ["l", "r"], "rotation": 1,
              "category": "relative_position", "truth_letter": "B", "truth": "B. r", "letter": "B", "correct": True,
              "response": "<answer>B</answer>", "answer": "B", "frame": str(tmp_path / "f.jpg"),
              "gt_boxes": [[0, 0, 20, 20], [100, 50, 140, 90]],
              "tool_calls": [{"ok": True, "box": [95, 45, 145, 95], "label": "red board", "bbox_2d": [1, 2, 3, 4]}]}
    (tmp_path / "rows.jsonl").write_text(json.dumps(record) + "\n")
    page = (tmp_path / "view.html")
    write_view(tmp_path, page)
    text = page.read_text()
    assert text.count('class="gt"') == 2 and text.count('class="zoom"') == 1
    assert 'data-correct="1"' in text and "IoU 0.64" in text and "relative_position" in text


def test_a_tool_call_the_parser_could_not_read_is_counted_and_filtered_as_failed(tmp_path):
    from types import SimpleNamespace

    from omnidrive_r1.eval.report import tool_figures
    from omnidrive_r1.eval.run import make_record
    from omnidrive_r1.view import write_view

    broken = SimpleNamespace(zoom_calls=[], truncated=False, dropped_tool_reply=False, completion=[
        {"role": "assistant", "content": '<tool_call>\n{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [1, 2'
                                         '</answer>'}])
    row = {"idx": "i#r0", "question": "q", "fields": {"correct": False}, "gt_boxes": [], "frame": None}
    record = make_record(row, broken)
    assert record["malformed_tool_calls"] == 1 and record["tool_calls"] == [] and record["answer"] is None
    assert tool_figures([record])["malformed_tool_calls"] == 1
    (tmp_path / "rows.jsonl").write_text(json.dumps(record) + "\n")
    write_view(tmp_path, tmp_path / "v.html")
    text = (tmp_path / "v.html").read_text()
    assert 'data-failed="1"' in text and "1 malformed (not parsed)" in text
