import inspect
import math
import random
from collections import Counter

import pytest
from PIL import Image

from omnidrive_r1.config import ToolEntry
from omnidrive_r1.plugins import PluginError, resolve
from omnidrive_r1.tools import available, environment_factory, find_part, tool_methods
from omnidrive_r1.tools.zoom_in import FAILURE_REASONS, TOOL_NAME, ZoomInTool, annotate

KNOWN_REASONS = set(FAILURE_REASONS)


def _env(**kw):
    env = ZoomInTool(min_pixels=6272, max_pixels=125440, **kw)
    env.reset(image=Image.new("RGB", (2400, 900), (90, 90, 90)))
    return env


def test_a_valid_call_returns_the_crop_and_records_it():
    env = _env()
    out = env.image_zoom_in_tool(bbox_2d=[280, 98, 308, 126], label="traffic light")
    assert [b["type"] for b in out] == ["image", "text"]
    rec = env.calls[0]
    assert rec.ok and rec.box == (1200, 450, 1320, 579) and rec.crop.size == (120, 129)
    assert rec.label == "traffic light" and rec.image_index == 0 and rec.source_size == (2400, 900)
    assert env.failures == Counter()


def test_limits_answer_with_an_error_text():
    env = _env(max_tool_calls=2)
    for _ in range(2):
        assert isinstance(env.image_zoom_in_tool(bbox_2d=[0, 0, 50, 50], label="x"), list)
    out = env.image_zoom_in_tool(bbox_2d=[0, 0, 50, 50], label="x")
    assert out.startswith("Error:") and "at most 2" in out
    env = _env(max_tool_calls=4, max_images=2)
    env.image_zoom_in_tool(bbox_2d=[0, 0, 50, 50], label="x")
    assert "images" in env.image_zoom_in_tool(bbox_2d=[0, 0, 50, 50], label="x")
    assert env.failures == {"image_limit": 1}


def test_reset_starts_a_fresh_trajectory():
    env = _env()
    env.image_zoom_in_tool(bbox_2d=[1, 2], label="x")
    env.reset(image=Image.new("RGB", (100, 100)))
    assert env.calls == [] and env.failures == Counter() and len(env.images) == 1


HOSTILE = [
    "10,20,30,40", "", "[1,2,3,4]", None, True, 0, -1, 1e308, -1e308, float("nan"), float("inf"), 2 ** 70,
    [], [1], [1, 2, 3], [1, 2, 3, 4, 5], [[1, 2], [3, 4]], [[1, 2, 3, 4]], ["a", "b", "c", "d"],
    [None, None, None, None], [float("nan")] * 4, [float("inf"), 0, 1, 2], [-5, -5, -1, -1], [1e9, 1e9, 2e9, 2e9],
    [10, 10, 10, 10], [0, 0, 560, 1], [True, False, True, False], {"x1": 1}, [1.5, 2.5, 300.5, 150.25],
    [300, 150, 10, 20], [0, 0, 560, 196], [-100, -100, 1000, 1000], list(range(1000)),
]
IMAGE_INDEX = [0, 1, 2, -1, 99, 2 ** 63, "0", 1.5, True, None, [0], float("nan")]
LABELS = ["light", "", 5, None, ["a"], "x" * 10_000, "\x00\udcff"]
EXTRA_KEYS = ["bbox", "box", "name", "arguments", "image", "__class__", "self"]


def _hostile_arguments(rng):
    args = {}
    if rng.random() < 0.9:
        args["bbox_2d"] = rng.choice(HOSTILE + [[rng.uniform(-100, 700) for _ in range(4)]] * 6)
    if rng.random() < 0.85:
        args["label"] = rng.choice(LABELS)
    if rng.random() < 0.5:
        args["image_index"] = rng.choice(IMAGE_INDEX)
    if rng.random() < 0.1:
        args[rng.choice(EXTRA_KEYS)] = rng.choice(HOSTILE)
    return args


def test_fuzz_ten_thousand_hostile_calls_never_raise_and_are_all_counted():
    rng = random.Random(0)
    env = _env(max_tool_calls=4)
    total_calls = total_failures = ok = 0
    reasons = Counter()
    for i in range(10_000):
        if i % 6 == 0:
            total_calls += len(env.calls)
            total_failures += sum(env.failures.values())
            reasons += env.failures
            env.reset(image=Image.new("RGB", rng.choice([(2400, 900), (64, 48), (800, 450)])))
        out = env.image_zoom_in_tool(**_hostile_arguments(rng))
        if isinstance(out, list):
            ok += 1
            assert out[0]["image"].width >= 1 and out[0]["image"].height >= 1
        else:
            assert isinstance(out, str) and out.startswith("Error:")
    total_calls += len(env.calls)
    total_failures += sum(env.failures.values())
    reasons += env.failures
    assert total_calls == 10_000
    assert total_failures + ok == 10_000
    assert set(reasons) <= KNOWN_REASONS
    assert {"bad_arguments", "call_limit", "not_finite", "wrong_arity", "bad_image_index"} <= set(reasons)
    assert ok > 100  # the fuzzer also exercises the success path


def test_every_failed_record_carries_its_reason_and_arguments():
    env = _env()
    env.image_zoom_in_tool(bbox_2d=[float("nan"), 0, 1, 1], label="x")
    env.image_zoom_in_tool(box=[1, 2, 3, 4])
    assert [(c.ok, c.reason) for c in env.calls] == [(False, "not_finite"), (False, "bad_arguments")]
    assert env.calls[1].arguments == {"box": [1, 2, 3, 4]}


def test_tool_schema_comes_from_the_typed_docstring():
    from transformers.utils import get_json_schema

    schema = get_json_schema(ZoomInTool.image_zoom_in_tool)["function"]
    assert schema["name"] == TOOL_NAME
    assert schema["parameters"]["required"] == ["bbox_2d", "label"]
    props = schema["parameters"]["properties"]
    assert props["bbox_2d"]["type"] == "array" and props["image_index"]["type"] == "integer"
    assert "pixels of the image as you see it" in props["bbox_2d"]["description"]


def test_registry_resolves_names_paths_and_refuses_unknown(tmp_path):
    assert "zoom_in" in available()
    name, cls, options = resolve(ToolEntry.of({"name": "zoom_in", "max_tool_calls": 2}), "tool", "omnidrive_r1.tools",
                                  "TOOL")
    assert cls is ZoomInTool and options == {"max_tool_calls": 2}
    with pytest.raises(PluginError, match="known tools: .*zoom_in"):
        environment_factory([{"name": "nope"}])
    plugin = tmp_path / "depth_probe.py"
    plugin.write_text(
        "class DepthProbe:\n"
        "    def reset(self, **row):\n        self.n = 0\n"
        "    def depth_probe(self, x: int, y: int) -> str:\n"
        "        '''Depth at a pixel.\n\n        Args:\n            x: column\n            y: row\n        '''\n"
        "        return f'{x + y} m'\n")
    factory = environment_factory([{"name": "zoom_in", "max_tool_calls": 1, "min_pixels": 6272,
                                    "max_pixels": 125440}, {"path": f"{plugin}:DepthProbe"}])
    env = factory()
    assert set(tool_methods(type(env))) == {TOOL_NAME, "depth_probe"}
    env.reset(image=Image.new("RGB", (800, 450)))
    assert env.depth_probe(x=1, y=2) == "3 m"
    assert isinstance(env.image_zoom_in_tool(bbox_2d=[0, 0, 40, 40], label="a"), list)
    assert find_part(env, ZoomInTool).calls[0].ok
    assert "bbox_2d" in inspect.signature(type(env).image_zoom_in_tool).parameters


def test_reasoning_is_attached_from_the_completion_messages():
    env = _env()
    env.image_zoom_in_tool(bbox_2d=[0, 0, 40, 40], label="light")
    env.image_zoom_in_tool(bbox_2d=[0, 0, 40, 40], label="sign")
    call = lambda args: {"type": "function", "function": {"name": TOOL_NAME, "arguments": args}}  # noqa: E731
    completion = [
        {"role": "assistant", "content": "<think>The light is tiny.</think>", "tool_calls": [call({"x": 1})]},
        {"role": "tool", "name": TOOL_NAME, "content": []},
        {"role": "assistant", "content": "<think>Now the sign.</think>", "tool_calls": [call({"y": 2})]},
        {"role": "tool", "name": TOOL_NAME, "content": []},
        {"role": "assistant", "content": "<answer>A</answer>"},
    ]
    annotate(env, completion)
    assert [c.reasoning for c in env.calls] == ["<think>The light is tiny.</think>", "<think>Now the sign.</think>"]
    assert math.isclose(len(env.calls), 2)


@pytest.mark.parametrize("spec, message", [
    ({"name": "zoom_in", "max_tool_call": 2}, r"tool 'zoom_in' takes no option\(s\) \['max_tool_call'\]; its options: "
                                              r"\['min_pixels', 'max_pixels', 'factor', 'coordinates', 'min_side', 'max_tool_calls'"),
    ({"name": "zoom_in", "max_tool_calls": -1}, "max_tool_calls must be >= 0"),
    ({"path": "nowhere.py:Tool"}, "tool file not found"),
])
def test_bad_tool_options_fail_when_the_recipe_is_read(spec, message):
    with pytest.raises(PluginError, match=message):
        environment_factory([spec])


def test_max_crop_pixels_bounds_a_reply_and_nested_zooms_still_land_on_the_original():
    frame = Image.new("RGB", (2400, 900), (90, 90, 90))
    frame.paste((255, 0, 0), (1500, 300, 1510, 310))  # a marker
    env = ZoomInTool(min_pixels=6272, max_pixels=125440, max_crop_pixels=12544)
    env.reset(image=frame)
    out = env.image_zoom_in_tool(bbox_2d=[280, 40, 420, 120], label="area")  # 600 x 367 original pixels
    crop = out[0]["image"]
    left, top, right, bottom = env.calls[0].box
    assert crop.width * crop.height <= 12544 and (left, top) == (1200, 183) and right - left == 600
    # zoom into the shrunk crop around where the marker shows in it: the box maps back to the original
    from omnidrive_r1.coordinates import model_size

    mw, mh = model_size(*crop.size, min_pixels=6272, max_pixels=125440, factor=env.factor)
    mx, my = (1505 - left) / (right - left) * mw, (305 - top) / (bottom - top) * mh
    env.image_zoom_in_tool(bbox_2d=[mx - 10, my - 10, mx + 10, my + 10], label="marker", image_index=1)
    x1, y1, x2, y2 = env.calls[1].box
    assert x1 <= 1500 and 1510 <= x2 and y1 <= 300 and 310 <= y2, env.calls[1].box
    second = env.calls[1].crop  # shrunk too: look the marker up at its scale
    assert second.getpixel(((1505 - x1) * second.width // (x2 - x1), (305 - y1) * second.height // (y2 - y1)))[0] > 200


def test_replies_taken_back_for_budget_are_counted():
    from omnidrive_r1.tools.zoom_in import metrics

    env = _env()
    env.image_zoom_in_tool(bbox_2d=[0, 0, 50, 50], label="a")
    call = {"type": "function", "function": {"name": TOOL_NAME, "arguments": {"bbox_2d": [0, 0, 50, 50], "label": "a"}}}
    annotate(env, [{"role": "assistant", "content": "<think>x</think>", "tool_calls": [call]}])  # no reply: dropped
    assert env.dropped_replies == 1 and metrics([env])["tools/dropped_replies"] == 1.0
