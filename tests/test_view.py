"""`omnidrive-r1 view`: the page's structure (rows, boxes, crops, filters, step slider), checked without a browser."""

import json
import re
from html.parser import HTMLParser

import pytest
import torch
from PIL import Image

from omnidrive_r1.cli import main
from omnidrive_r1.errors import UserError
from omnidrive_r1.rollout_log import RolloutLog
from omnidrive_r1.tools.zoom_in import ZoomInTool
from omnidrive_r1.view import write_view


class Page(HTMLParser):
    """Collects the page's rows, shapes and images."""

    def __init__(self, text):
        super().__init__()
        self.rows, self.rects, self.imgs, self.buttons, self.slider = [], [], [], [], None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "div" and "row" in (a.get("class") or "").split():
            self.rows.append(a)
        elif tag == "rect":
            self.rects.append(a)
        elif tag == "img":
            self.imgs.append(a)
        elif tag == "button":
            self.buttons.append(a.get("data-filter"))
        elif tag == "input" and a.get("id") == "step":
            self.slider = a


def _frame(path, size=(1200, 450)):
    Image.effect_noise(size, 40).convert("RGB").save(path)
    return path


def test_an_evaluation_folder_becomes_one_page_with_boxes_crops_and_filters(tmp_path):
    frame = _frame(tmp_path / "frame.jpg")
    ok_call = {"ok": True, "reason": None, "label": "yellow board", "bbox_2d": [10, 10, 60, 60],
               "box": [100, 50, 300, 200], "crop_size": [200, 150]}
    bad_call = {"ok": False, "reason": "bad_box", "label": None, "bbox_2d": [5, 5, 5, 5], "box": None,
                "crop_size": None}
    rows = [
        {"idx": "s_a_2", "question": "Which way?", "final_answer": "A) left", "is_mcq": True, "response": "<think>x"
         "</think><answer>A) left</answer>", "answer": "A) left", "tool_calls": [ok_call], "gt_box": [110, 60, 290, 190],
         "mcq_correct_ours": True, "zoom_iou": 0.6, "frame": str(frame)},
        {"idx": "s_a_3", "question": "And now?", "final_answer": "B) right", "is_mcq": True, "response": "<b>no</b>",
         "answer": "C) closed", "tool_calls": [bad_call, ok_call], "gt_box": None, "mcq_correct_ours": False,
         "frame": str(frame)},
        {"idx": "s_a_1", "question": "Open?", "final_answer": "yes", "is_mcq": False, "response": "yes", "answer": "yes",
         "tool_calls": [], "gt_box": None, "frame": str(frame)},
    ]
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    info = write_view(tmp_path / "eval")
    text = (tmp_path / "eval" / "view.html").read_text()
    page = Page(text)
    assert info["rows"] == 3 and info["kind"] == "eval" and len(page.rows) == 3
    assert page.buttons == ["all", "correct", "wrong", "notool", "failed"] and page.slider is None
    flags = [{k: r[f"data-{k}"] for k in ("correct", "wrong", "notool", "failed")} for r in page.rows]
    assert flags == [{"correct": "1", "wrong": "0", "notool": "0", "failed": "0"},
                     {"correct": "0", "wrong": "1", "notool": "0", "failed": "1"},
                     {"correct": "0", "wrong": "0", "notool": "1", "failed": "0"}]
    zooms = [r for r in page.rects if r["class"] == "zoom"]
    assert len(zooms) == 2 and (zooms[0]["x"], zooms[0]["y"], zooms[0]["width"], zooms[0]["height"]) == \
        ("100", "50", "200", "150")  # the box in the frame's own pixels, over a viewBox of the frame's size
    assert [r["class"] for r in page.rects].count("gt") == 1
    assert 'viewBox="0 0 1200 450"' in text
    # the frame is inlined once, the crops are cut from it; nothing is fetched from anywhere
    frames = json.loads(re.search(r'<script type="application/json" id="frames">(.*?)</script>', text).group(1))
    assert len(frames) == 1 and all(v.startswith("data:image/jpeg;base64,") for v in frames.values())
    crops = [i for i in page.imgs if "data-frame" not in i]
    assert len(crops) == 2 and all(i["src"].startswith("data:image/jpeg;base64,") for i in crops)
    assert not re.search(r'(src|href)="(https?:)?//', text)
    assert "&lt;b&gt;no&lt;/b&gt;" in text and "failed: bad_box" in text  # the policy's text is escaped
    assert "IoU 0.78" in text  # the crop's caption: its box against the ground truth (180x130 of 200x150)


def test_a_training_run_gets_a_step_slider_and_every_reward_term(tmp_path, capsys):
    frame = Image.open(_frame(tmp_path / "f.jpg")).convert("RGB")
    log = RolloutLog(tmp_path / "run", every=2)
    for step in (1, 2, 4):
        assert log.due(step)
        envs = []
        for _ in range(2):
            env = ZoomInTool(min_pixels=3136, max_pixels=125440)
            env.reset(image=frame)
            env.image_zoom_in_tool(bbox_2d=[10, 10, 120, 80], label="board")
            envs.append(env)
        inputs = [{"idx": "frame-1", "question": "Which way?", "answer": "left", "gt_box": [0, 0, 300, 200]},
                  {"idx": "frame-2", "question": "Which way?", "answer": "right", "gt_box": None}]
        completions = [[{"role": "assistant", "content": "<answer>left</answer>"}]] * 2
        log.write(step, inputs, completions, envs, torch.tensor([[1.0, 0.2], [0.0, float("nan")]]),
                  ["answer_accuracy", "clip_grounding"])
    assert not log.due(3)
    records = [json.loads(line) for line in (tmp_path / "run" / "rollouts" / "rollouts.jsonl").read_text().splitlines()]
    assert len(records) == 6 and records[1]["rewards"] == {"answer_accuracy": 0.0, "clip_grounding": None}
    assert len(list((tmp_path / "run" / "rollouts" / "frames").glob("*.jpg"))) == 2  # each frame once
    assert main(["view", str(tmp_path / "run")]) == 0
    assert "6 training rows" in capsys.readouterr().out
    text = (tmp_path / "run" / "view.html").read_text()
    page = Page(text)
    assert len(page.rows) == 6 and [r["data-step"] for r in page.rows] == ["1", "1", "2", "2", "4", "4"]
    assert json.loads(page.slider["data-steps"]) == [1, 2, 4]
    assert [r["data-correct"] for r in page.rows[:2]] == ["1", "0"]
    assert "clip_grounding" in text and len([r for r in page.rects if r["class"] == "zoom"]) == 6


def test_a_folder_with_nothing_to_view_is_named(tmp_path):
    with pytest.raises(UserError, match="nothing to view"):
        write_view(tmp_path)
