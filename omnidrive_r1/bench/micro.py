"""The pieces of a step in isolation: one zoom call, the CLIP reward batched vs one crop at a time, and vLLM vs
transformers generation. Run by `python -m omnidrive_r1.bench` (`--only tool_call clip_reward vllm_vs_hf`)."""

from __future__ import annotations

import os
import random
import statistics
import time

import torch
from PIL import Image
from transformers import AutoModelForImageTextToText
from trl.chat_template_utils import parse_response

from omnidrive_r1.coordinates import model_size
from omnidrive_r1.data.loaders import load_drivelmm
from omnidrive_r1.policies import build_processor, default
from omnidrive_r1.rewards.clip_grounding import ClipGrounding, OpenClipEncoder
from omnidrive_r1.rollout import with_image
from omnidrive_r1.tools.zoom_in import ZoomInTool
from omnidrive_r1.toy.tiny import build_tiny_policy
from omnidrive_r1.toy.toydrive import ensure_toydrive


def bench_tool_call(repeats: int = 200) -> dict:
    """One zoom tool call on a 4800x1800 stitched frame: parse the policy's text, map the box, crop the
    original, and run the image processor on the crop (what TRL does before the next turn)."""
    family = default()
    f = family.factor
    # the paper preset's resolution: 1280 visual tokens at most
    min_pixels, max_pixels = family.min_pixels, 1280 * f * f
    processor = build_processor(build_tiny_policy(), min_pixels=min_pixels, max_pixels=max_pixels)
    tok, image_processor = processor.tokenizer, processor.image_processor
    frame = Image.effect_noise((4800, 1800), 64).convert("RGB")
    env = ZoomInTool(min_pixels=min_pixels, max_pixels=max_pixels, factor=f, max_tool_calls=10**9, max_images=10**9)
    env.reset(image=frame)
    mw, mh = model_size(*frame.size, min_pixels=min_pixels, max_pixels=max_pixels, factor=f)
    rng = random.Random(0)
    texts = []
    for _ in range(repeats):
        w, h = rng.randint(f, mw // 3), rng.randint(f, mh // 2)
        x, y = rng.randint(0, mw - w), rng.randint(0, mh - h)
        texts.append(tok(f'<think>zoom</think>\n<tool_call>\n{{"name": "image_zoom_in_tool", "arguments": '
                         f'{{"bbox_2d": [{x}, {y}, {x + w}, {y + h}], "label": "car"}}}}\n</tool_call><|im_end|>')
                     ["input_ids"])
    prefix = tok("<|im_start|>assistant\n")["input_ids"]
    times, crop_pixels = [], []
    for ids in texts:
        t0 = time.perf_counter()
        call = parse_response(tok, ids, prefix=prefix)["tool_calls"][0]["function"]
        out = env.image_zoom_in_tool(**call["arguments"])
        image_processor(images=[out[0]["image"]], return_tensors="pt")
        times.append((time.perf_counter() - t0) * 1000)
        crop_pixels.append(out[0]["image"].width * out[0]["image"].height)
    return {"name": "tool_call", "median_ms": statistics.median(times),
            "p90_ms": round(sorted(times)[int(0.9 * len(times))], 2),
            "calls": repeats, "median_crop_px": int(statistics.median(crop_pixels)), "frame": "4800x1800"}


def bench_clip_reward(repeats: int = 64) -> dict:
    """clip_grounding on `repeats` crops (8 prompts x 8 rollouts, one zoom each at a random box, labels drawn
    from three per prompt) with a random ViT-B-32 on CPU: our batched reward vs. a reward that runs CLIP one
    crop at a time (crop, text and full image per call)."""
    torch.manual_seed(0)
    encoder = OpenClipEncoder("ViT-B-32", pretrained=None, device="cpu")
    rng = random.Random(0)
    frames = [Image.effect_noise((1600, 600), 40 + 5 * k).convert("RGB") for k in range(8)]
    envs, completions = [], []
    for i in range(repeats):
        env = ZoomInTool()  # the default resolution: 4 to 1280 image tokens of the default family
        env.reset(image=frames[i % 8])
        x, y = rng.randint(0, 900), rng.randint(0, 300)
        label = rng.choice(["the car", "a vehicle", "the red car"]) + f" #{i % 8}"
        env.image_zoom_in_tool(bbox_2d=[x, y, x + rng.randint(40, 300), y + rng.randint(40, 200)], label=label)
        envs.append(env)
        completions.append([{"role": "assistant", "content": "<think>look</think>"}])
    kwargs = dict(environments=envs, answer=["x"] * repeats, idx=[f"p{i % 8}" for i in range(repeats)])

    def one_at_a_time():
        for env in envs:
            call = env.calls[0]
            crop, text = encoder.encode_images([call.crop]), encoder.encode_texts([call.label])
            full = encoder.encode_images([env.images[0].root])
            float(((crop * text).sum() - (full * text).sum()) / 0.1)

    def batched():
        ClipGrounding(encoder=encoder, gate_on_correct=False)(None, completions, **kwargs)  # fresh cache

    for fn in (batched, one_at_a_time):  # warm-up
        fn()
    t_single, t_batched = [], []
    for _ in range(2):
        t0 = time.perf_counter()
        one_at_a_time()
        t_single.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        batched()
        t_batched.append(time.perf_counter() - t0)
    single, batch = min(t_single), min(t_batched)
    return {"name": "clip_reward", "batched_crops_per_s": round(repeats / batch, 1),
            "single_crops_per_s": round(repeats / single, 1), "speedup": round(single / batch, 2),
            "crops": repeats, "threads": torch.get_num_threads()}


def bench_vllm_vs_hf(repeats: int = 8) -> dict:
    """Generation throughput of vLLM (the CPU build here) vs transformers `generate` on the same batch:
    `repeats` toydrive prompts with their stitched frame, 64 new tokens each (EOS ignored), greedy."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams

    new_tokens = 64
    model_dir = build_tiny_policy()
    processor = build_processor(model_dir)
    ds, _ = load_drivelmm(ensure_toydrive("outputs/toydrive") / "drivelmm" / "test.json", limit=repeats,
                          progress=False)
    texts = [processor.apply_chat_template(with_image(p), add_generation_prompt=True, tokenize=False)
             for p in ds["prompt"]]
    images = list(ds["image"])
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    inputs = processor(text=texts, images=images, return_tensors="pt", padding=True, padding_side="left")
    with torch.no_grad():
        model.generate(**inputs, max_new_tokens=4, do_sample=False)  # warm-up
        t0 = time.perf_counter()
        model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        hf_s = time.perf_counter() - t0
    llm = LLM(model=str(model_dir), max_model_len=4096, gpu_memory_utilization=0.3, limit_mm_per_prompt={"image": 1})
    params = SamplingParams(max_tokens=new_tokens, min_tokens=new_tokens, ignore_eos=True, temperature=0.0)
    requests = [{"prompt": t, "multi_modal_data": {"image": im}} for t, im in zip(texts, images)]
    llm.generate(requests, SamplingParams(max_tokens=4), use_tqdm=False)  # warm-up
    t0 = time.perf_counter()
    outs = llm.generate(requests, params, use_tqdm=False)
    vllm_s = time.perf_counter() - t0
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    hf_tps, vllm_tps = repeats * new_tokens / hf_s, tokens / vllm_s
    return {"name": "vllm_vs_hf", "ratio": vllm_tps / hf_tps, "vllm_tokens_per_s": round(vllm_tps, 1),
            "hf_tokens_per_s": round(hf_tps, 1), "batch": repeats, "new_tokens": new_tokens,
            "prompt_tokens": int(inputs["attention_mask"].sum(1).float().mean())}
