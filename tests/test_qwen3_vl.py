"""Qwen3-VL end to end on the tiny Qwen3-VL built offline: its family's tokens, template and box convention, a
toy training run with resume (weights compared), and evaluation. The GRPO step with zoom calls is in
tests/test_grpo_tool_loop.py, ZeRO-3 on two processes in tests/test_train.py and vLLM's image expansion in
tests/test_vllm_cpu.py, each run for both families."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText

from omnidrive_r1.policies import build_processor, family_of, pixel_limits

ROOT = Path(__file__).resolve().parents[1]
TOY1 = ROOT / "recipes/toy/stage1.yaml"


def test_the_tiny_qwen3_vl_has_its_familys_architecture_tokens_template_and_boxes(tiny_qwen3_vl_dir):
    from trl.chat_template_utils import is_chat_template_prefix_preserving

    from omnidrive_r1.data.loaders import conversation
    from omnidrive_r1.rollout import RolloutSettings, with_image
    from omnidrive_r1.tools import environment_factory, tool_methods

    processor = build_processor(tiny_qwen3_vl_dir)
    family = family_of(processor)
    assert family.name == "Qwen3-VL" and family_of(tiny_qwen3_vl_dir) is family
    model = AutoModelForImageTextToText.from_pretrained(tiny_qwen3_vl_dir).eval()
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"
    assert processor.image_processor.patch_size * processor.image_processor.merge_size == family.factor == 32
    # the model's own template, accepted by TRL's multi-turn trainer
    assert is_chat_template_prefix_preserving(processor)
    # the rollout's zoom tool writes relative boxes and says so in its schema; so does the system prompt
    env = environment_factory(RolloutSettings().tool_specs(processor))()
    schema = processor.apply_chat_template(with_image(conversation("Which lamp is lit?", family.system_prompt())),
                                           tools=list(tool_methods(type(env)).values()), tokenize=False,
                                           add_generation_prompt=True)
    assert type(env).__name__ == "RelativeZoomInTool" and env.factor == 32
    assert "0 to 1000 on each axis" in schema and "in pixels of the image you see" not in schema
    # a tool reply with its crop renders inside a user turn, as Qwen3-VL was trained on
    messages = [*with_image(conversation("Which lamp is lit?", family.system_prompt())),
                {"role": "assistant", "content": "<think>zoom</think>"},
                {"role": "tool", "name": "image_zoom_in_tool",
                 "content": [{"type": "image"}, {"type": "text", "text": "Zoomed view."}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>user\n<tool_response>\n<|vision_start|><|image_pad|><|vision_end|>" in text
    images = [Image.new("RGB", (2400, 900)), Image.new("RGB", (120, 129))]
    inputs = processor(text=[text], images=images, return_tensors="pt")
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == int(inputs["image_grid_thw"].prod(-1).sum()) // 4
    with torch.no_grad():
        assert torch.isfinite(model(**inputs).logits).all()


def test_eval_on_the_tiny_qwen3_vl_rolls_out_with_relative_boxes(tiny_qwen3_vl_dir, toydrive_dir, tmp_path):
    from omnidrive_r1.eval.run import evaluate
    from omnidrive_r1.rollout import RolloutSettings, make_engine

    summary = evaluate(str(tiny_qwen3_vl_dir), toydrive_dir / "drivelmm" / "test.json", limit=3, out=tmp_path,
                       settings=RolloutSettings(max_turns=1, max_completion_length=8))
    assert summary["rows_evaluated"] == 3
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert all(isinstance(r["response"], str) for r in rows)
    _, processor = make_engine("hf", tiny_qwen3_vl_dir)
    spec = RolloutSettings.of_model(tiny_qwen3_vl_dir).tool_specs(processor)[0].options
    assert spec["coordinates"] == "relative" and spec["factor"] == 32


@pytest.mark.slow
def test_a_toy_run_on_qwen3_vl_resumes_with_its_weights_restored(tiny_qwen3_vl_dir, tiny_models, toydrive_dir,
                                                                 tmp_path):
    """Three GRPO steps of the toy recipe on the tiny Qwen3-VL, a checkpoint each step; then the run is
    resumed from checkpoint-2: its third step and final weights are the uninterrupted run's."""
    from omnidrive_r1.rollout import RolloutSettings
    from omnidrive_r1.train import train

    def overrides(out, *extra):
        return [*tiny_models, f"model_name_or_path={tiny_qwen3_vl_dir}",
                f"data.path={toydrive_dir / 'deepeyes/train.parquet'}",
                "per_device_train_batch_size=4", "save_steps=1", "save_total_limit=5", "learning_rate=5e-5",
                "warmup_steps=0", "report_to=[]", "max_steps=3", f"output_dir={out}", *extra]

    reference = tmp_path / "reference"
    final = train(TOY1, overrides(reference))
    steps = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps if "loss" in s] == [1, 2, 3]
    assert json.loads((final / "config.json").read_text())["model_type"] == "qwen3_vl"
    # the saved model keeps the tool's own options; its processor and family give the geometry back
    saved = json.loads((final / "omnidrive_rollout.json").read_text())
    assert "coordinates" not in saved["tools"][0] and saved["tools"][0]["max_tool_calls"] == 2
    processor = build_processor(final)
    spec = RolloutSettings.of_model(final).tool_specs(processor)[0].options
    assert spec["coordinates"] == "relative" and spec["factor"] == 32
    assert (spec["min_pixels"], spec["max_pixels"]) == pixel_limits(processor) == (12544, 125440)  # the recipe's

    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(reference / "checkpoint-2", resumed / "checkpoint-2")
    train(TOY1, overrides(resumed, "resume_from_checkpoint=true"))
    start = AutoModelForImageTextToText.from_pretrained(reference / "checkpoint-2").state_dict()
    want = AutoModelForImageTextToText.from_pretrained(reference / "final").state_dict()
    got = AutoModelForImageTextToText.from_pretrained(resumed / "final").state_dict()
    assert set(got) == set(want)
    assert any(not torch.equal(start[k], want[k]) for k in want)  # the third step moved the weights
    for key in want:
        assert torch.equal(got[key], want[key]), key
