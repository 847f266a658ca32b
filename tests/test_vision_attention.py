"""The batched windowed vision attention (omnidrive_r1/vision_attention.py) against transformers' own forward."""

import numpy as np
import pytest
import torch
from PIL import Image

from omnidrive_r1.policies._qwen2_5_vl_attention import count_attention_calls, set_vision_attention


@pytest.fixture(scope="module")
def policy_and_inputs(tiny_policy_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_policy_dir, size={"shortest_edge": 3136, "longest_edge": 125440})
    rng = np.random.default_rng(0)
    frame = Image.fromarray(rng.integers(0, 255, (900, 2400, 3), dtype=np.uint8))  # 40x14 patches: ragged windows
    crop = frame.crop((100, 50, 420, 250))
    text = "<|vision_start|><|image_pad|><|vision_end|>look <|vision_start|><|image_pad|><|vision_end|>closer"
    inputs = processor(text=[text], images=[frame, crop], return_tensors="pt")
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(tiny_policy_dir, dtype=torch.float32,
                                                        attn_implementation="sdpa")
    return model, inputs


def _windows(grid_thw, window=4) -> int:
    """Windows of 112 px = 4 merged patches a side, per image (ceil on each axis)."""
    return sum(-(-int(h) // 2 // window) * -(-int(w) // 2 // window) for _, h, w in grid_thw)


def _run(model, inputs):
    model.zero_grad()
    with count_attention_calls() as vision:
        vis = model.model.visual(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"])
    logits = model(**inputs).logits
    logp = torch.log_softmax(logits, -1)
    loss = -logp[0, :-1].gather(-1, inputs["input_ids"][0, 1:, None]).mean()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if "visual" in n and p.grad is not None}
    return vis.pooler_output.detach(), logp.detach(), loss.item(), grads, vision.calls


def test_one_attention_call_per_layer_with_the_same_outputs_and_gradients(policy_and_inputs):
    model, inputs = policy_and_inputs
    grid = inputs["image_grid_thw"]
    depth = len(model.model.visual.blocks)
    full_layers = len(model.config.vision_config.fullatt_block_indexes)
    try:
        ref_vis, ref_logp, ref_loss, ref_grads, calls = _run(model, inputs)
        # transformers: one call per window in windowed layers, one per image in full-attention layers
        assert calls == (depth - full_layers) * _windows(grid) + full_layers * len(grid) == 18
        assert set_vision_attention(model, "batched") == depth
        vis, logp, loss, grads, calls = _run(model, inputs)
        assert calls == depth
        assert torch.allclose(vis, ref_vis, atol=1e-5, rtol=0)
        assert (logp - ref_logp).abs().max() < 1e-5 and abs(loss - ref_loss) < 1e-6
        assert grads.keys() == ref_grads.keys() and len(grads) > 10
        for name, g in grads.items():
            assert torch.allclose(g, ref_grads[name], atol=1e-5, rtol=1e-4), name
        assert set_vision_attention(model, "per_window") == depth  # and back to transformers' own
        assert _run(model, inputs)[-1] == 18
    finally:
        set_vision_attention(model, "per_window")


def test_bad_modes_are_refused_and_flash_attention_is_left_alone(policy_and_inputs):
    model, _ = policy_and_inputs
    with pytest.raises(ValueError, match="one of per_window, batched"):
        set_vision_attention(model, "fused")
    config = model.config.vision_config
    before = config._attn_implementation
    try:
        config._attn_implementation = "flash_attention_2"
        assert set_vision_attention(model, "batched") == 0
    finally:
        config._attn_implementation = before
