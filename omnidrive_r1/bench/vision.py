"""Qwen2.5-VL's vision tower, windowed attention per window (transformers' sdpa path) against one batched call per
layer (`vision_attention: batched`). Run by `python -m omnidrive_r1.bench --only vision_attention`.

On a GPU the tower is Qwen2.5-VL-7B's (32 layers, width 1280, bf16, random weights). On a CPU it is scaled down
where the cost is (8 layers, width 320, fp32) and keeps what decides the number of attention calls: 14 px patches,
2x2 merge, 112 px windows, full attention every fourth layer. Both see one 2400x900 frame at the paper recipe's
resolution (1003520 pixels at most: 1624x616, 5104 patches).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from PIL import Image
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile
from transformers import Qwen2_5_VLConfig, Qwen2VLImageProcessor
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

from omnidrive_r1.policies._qwen2_5_vl_attention import count_attention_calls, set_vision_attention
from omnidrive_r1.policies.qwen2_5_vl import QWEN2_5_VL_7B

FRAME = (2400, 900)
MAX_PIXELS = 1003520


def _tower(device: str):
    vision = dict(QWEN2_5_VL_7B["vision_config"])
    if device == "cpu":
        vision.update(depth=8, hidden_size=320, num_heads=4, intermediate_size=856, out_hidden_size=512,
                      fullatt_block_indexes=[3, 7])
    config = Qwen2_5_VLConfig(vision_config=vision).vision_config
    config._attn_implementation = "sdpa"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        tower = Qwen2_5_VisionTransformerPretrainedModel._from_config(config, dtype=dtype)
    return tower, dtype


def _inputs(device: str, dtype):
    frame = Image.fromarray(np.random.default_rng(0).integers(0, 255, (FRAME[1], FRAME[0], 3), dtype=np.uint8))
    out = Qwen2VLImageProcessor(min_pixels=3136, max_pixels=MAX_PIXELS)(images=[frame], return_tensors="pt")
    return out["pixel_values"].to(device, dtype), out["image_grid_thw"].to(device)


def _timed(fn, device: str, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def _attention_share(fn, device: str) -> dict:
    """Share of one forward-and-backward's self time spent in attention kernels, and (GPU) kernel launches."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
    events = prof.key_averages()
    if device == "cuda":
        kernels = [e for e in events if e.device_type == DeviceType.CUDA]
        time_of = lambda e: getattr(e, "self_device_time_total", 0.0)  # noqa: E731
    else:
        kernels, time_of = list(events), (lambda e: e.self_cpu_time_total)
    total = sum(time_of(e) for e in kernels)
    attention = sum(time_of(e) for e in kernels if "attention" in e.key.lower() or "fmha" in e.key.lower()
                    or "flash" in e.key.lower())
    out = {"attention_share_of_forward_backward": attention / total if total else 0.0}
    if device == "cuda":
        out["kernel_launches_forward_backward"] = sum(e.count for e in kernels)
    return out


def bench_vision_attention(repeats: int = 3) -> dict:
    """The vision tower's forward and forward+backward, transformers' per-window attention vs one call per layer."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tower, dtype = _tower(device)
    pixels, grid = _inputs(device, dtype)
    result = {"name": "vision_attention", "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
              "dtype": str(dtype).removeprefix("torch."), "layers": len(tower.blocks),
              "width": tower.config.hidden_size, "patches": int(pixels.shape[0]), "grid_thw": grid.tolist()}
    outputs = {}
    for mode in ("per_window", "batched"):
        set_vision_attention(tower, mode)

        def forward():
            with torch.no_grad():
                return tower(pixels, grid_thw=grid).pooler_output

        def forward_backward():
            tower.zero_grad(set_to_none=True)
            tower(pixels, grid_thw=grid).pooler_output.float().square().mean().backward()

        with count_attention_calls() as counter:
            outputs[mode] = forward().float()
        result[mode] = {"attention_calls_per_forward": counter.calls,
                        "forward_seconds": _timed(forward, device, repeats),
                        "forward_backward_seconds": _timed(forward_backward, device, repeats),
                        **_attention_share(forward_backward, device)}
    set_vision_attention(tower, "per_window")
    gap = (outputs["batched"] - outputs["per_window"]).abs()
    result["max_abs_difference"] = float(gap.max())
    result["mean_abs_difference"] = float(gap.mean())
    result["forward_speedup"] = result["per_window"]["forward_seconds"] / result["batched"]["forward_seconds"]
    result["forward_backward_speedup"] = (result["per_window"]["forward_backward_seconds"]
                                          / result["batched"]["forward_backward_seconds"])
    return result
