"""The zoom tool inside TRL's GRPOTrainer multi-turn loop, with the tiny policy of each model family on CPU.

`generate` is scripted (a random tiny model writes no tool calls): in every batch one rollout zooms and
then answers, the other answers at once. Two optimizer steps run for real. The zoom box is written in the
family's convention: pixels of the 560x210 image the tiny Qwen2.5-VL sees, thousandths of the image for Qwen3-VL.
"""

import pytest
import torch
from datasets import Dataset
from PIL import Image, ImageDraw

pytestmark = pytest.mark.slow

BOXES = {"qwen2_5_vl": [250, 70, 300, 120], "qwen3_vl": [450, 380, 550, 560]}  # both around the lamp at x 1193


def zoom_turn(box) -> str:
    return ('<think>The light is too small to read.</think>\n<tool_call>\n{"name": "image_zoom_in_tool", '
            f'"arguments": {{"bbox_2d": {box}, "label": "traffic light"}}}}\n</tool_call>')
ANSWER_TURN = "<think>The lamp is red.</think><answer>B) The light is red.</answer>"


def _frame():
    img = Image.new("RGB", (2400, 900), (120, 150, 200))
    d = ImageDraw.Draw(img)
    d.rectangle([1190, 400, 1200, 430], fill=(28, 28, 28))
    d.ellipse([1193, 403, 1197, 407], fill=(235, 40, 35))
    return img


def _scripted_generate(tokenizer, calls, zoom):
    """A stand-in for `model.generate`: first turns alternate zoom / direct answer by batch position;
    turns after a tool response answer."""

    def generate(input_ids, attention_mask=None, **kwargs):
        outs = []
        for row, (ids, mask) in enumerate(zip(input_ids, attention_mask)):
            prompt = tokenizer.decode(ids[mask.bool()])
            after_tool = prompt.rstrip().endswith("assistant") and "<tool_response>" in prompt
            text = ANSWER_TURN if after_tool or row % 2 else zoom
            calls.append("zoom" if text is zoom else "answer")
            outs.append(tokenizer(text + "<|im_end|>", add_special_tokens=False)["input_ids"])
        width = max(map(len, outs))
        pad = tokenizer.pad_token_id
        new = torch.tensor([o + [pad] * (width - len(o)) for o in outs])
        return torch.cat([input_ids, new.to(input_ids.device)], dim=1)

    return generate


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_zoom_rollout_trains_two_steps_with_the_crop_in_pixel_values(family, request, tmp_path):
    from transformers import AutoModelForImageTextToText
    from trl import GRPOConfig, GRPOTrainer

    from omnidrive_r1.data.loaders import conversation
    from omnidrive_r1.policies import build_processor, family_of, pixel_limits
    from omnidrive_r1.tools import environment_factory
    from omnidrive_r1.tools.zoom_in import ZoomInTool

    policy_dir = request.getfixturevalue("tiny_qwen3_vl_dir" if family == "qwen3_vl" else "tiny_policy_dir")
    processor = build_processor(policy_dir)
    fam = family_of(processor)
    assert fam.model_types[0] == family
    tok = processor.tokenizer
    model = AutoModelForImageTextToText.from_pretrained(policy_dir)
    generated = []
    model.generate = _scripted_generate(tok, generated, zoom_turn(BOXES[family]))

    forwards = []

    def spy(module, args, kwargs):
        ids = kwargs["input_ids"]
        forwards.append({
            "image_tokens": int((ids == model.config.image_token_id).sum()),
            "pixel_values": None if kwargs.get("pixel_values") is None else kwargs["pixel_values"].detach().clone(),
            "grid": None if kwargs.get("image_grid_thw") is None else kwargs["image_grid_thw"].clone(),
            "mm_types": None if kwargs.get("mm_token_type_ids") is None else int((kwargs["mm_token_type_ids"] == 1).sum()),
        })

    model.register_forward_pre_hook(spy, with_kwargs=True)

    rows = [{"prompt": conversation("What colour is the traffic light ahead? A) Green B) Red", fam.system_prompt()),
             "image": _frame(), "answer": "B) The light is red."} for _ in range(4)]
    dataset = Dataset.from_list(rows)

    def zoomed_reward(completions, **kwargs):  # gives the two rollouts different advantages
        return [1.0 if any(m["role"] == "tool" for m in c) else 0.0 for c in completions]

    args = GRPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=2, num_generations=2, max_steps=2,
        max_completion_length=256, learning_rate=1e-3, logging_steps=1, report_to=[], save_strategy="no",
        use_cpu=True, bf16=False, beta=0.0, max_tool_calling_iterations=2, seed=0, shuffle_dataset=False,
    )
    min_pixels, max_pixels = pixel_limits(processor)
    factory = environment_factory([{"name": "zoom_in", "min_pixels": min_pixels, "max_pixels": max_pixels,
                                    **fam.zoom_options()}])
    trainer = GRPOTrainer(model=model, reward_funcs=zoomed_reward, args=args, train_dataset=dataset,
                          processing_class=processor, environment_factory=factory)
    captured = []
    original = trainer._generate_and_score_completions
    trainer._generate_and_score_completions = lambda inputs: captured.append(original(inputs)) or captured[-1]

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()

    assert trainer.state.global_step == 2
    assert generated.count("zoom") == 2 and generated.count("answer") == 4  # per step: zoom, answer, answer
    changed = [n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())]
    assert any("visual" in n for n in changed) and any("language_model" in n for n in changed)

    # the crop reaches pixel_values: the zoom rollout carries two images (frame + crop), the other one
    env = next(e for e in trainer._environment_pool[None] if isinstance(e, ZoomInTool) and e.calls)
    crop = env.calls[0].crop
    assert env.calls[0].ok and env.calls[0].box[0] < 1193 < 1197 < env.calls[0].box[2]
    crop_pixels = processor.image_processor(images=[crop], return_tensors="pt")["pixel_values"]
    loss_forwards = [f for f in forwards if f["grid"] is not None and f["grid"].shape[0] == 3]
    assert loss_forwards, "no forward pass carried frame + crop + frame"
    for f in loss_forwards:
        n = crop_pixels.shape[0]
        assert any(torch.allclose(f["pixel_values"][i:i + n], crop_pixels)
                   for i in range(f["pixel_values"].shape[0] - n + 1)), "crop pixels missing from the batch"

    # never the "drop all images" fallback: every forward keeps pixel_values, tokens match features
    for f in forwards:
        assert f["pixel_values"] is not None and f["grid"] is not None
        assert f["image_tokens"] == int(f["grid"].prod(-1).sum()) // 4
        assert f["mm_types"] is None or f["mm_types"] == f["image_tokens"]

    # tool-response tokens are masked out of the loss, the policy's own tokens are not
    zoom_rollouts = 0
    for batch in captured:
        tool_mask, completion_ids = batch["tool_mask"], batch["completion_ids"]
        for mask, ids in zip(tool_mask, completion_ids):
            text_ids = ids.tolist()
            if mask.min() == 1:
                continue  # the direct answer
            zoom_rollouts += 1
            masked = tok.decode([t for t, m in zip(text_ids, mask.tolist()) if m == 0])
            kept = tok.decode([t for t, m in zip(text_ids, mask.tolist()) if m == 1])
            assert "<tool_response>" in masked and "<|image_pad|>" in masked and "Zoomed view" in masked
            assert "<tool_call>" in kept and "<answer>B) The light is red.</answer>" in kept
            assert "<tool_response>" not in kept and "<|image_pad|>" not in kept
    assert zoom_rollouts == 2
