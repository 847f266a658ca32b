"""GPU figures at the paper's scale, without downloading anything: the paper recipe's model's published
architecture (`omnidrive_r1/policies/`) with random bf16 weights, trained for a few real GRPO steps of the paper's stage-1 recipe, and the
CLIP reward with ViT-L-14 (random weights).

    python -m omnidrive_r1.bench.paper policy --lora --json out.json    # one GPU; LoRA r=16, or full fine-tuning
    python -m omnidrive_r1.bench.paper clip --json out.json             # ViT-L-14 crops per second

The policy writes scripted trajectories (`omnidrive_r1.bench.steps`): one zoom call, then an answer. The token
ids come from the tiny tokenizer (the weights are random, so which words they spell does not matter); the
vocabulary, and so the embedding and output layers, keep the published model's rows.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoConfig, AutoModelForImageTextToText, GenerationConfig

from omnidrive_r1.bench.steps import run
from omnidrive_r1.config import parse_recipe
from omnidrive_r1.policies import build_processor, family_of
from omnidrive_r1.rewards.clip_grounding import ClipGrounding, OpenClipEncoder
from omnidrive_r1.tools.zoom_in import ZoomInTool
from omnidrive_r1.toy.tiny import build_tiny_processor_dir

PAPER_RECIPE = "recipes/omnidrive_r1/stage1.yaml"
H100_BF16_DENSE_TFLOPS = 989.4  # H100 SXM, dense bf16 tensor cores (NVIDIA's datasheet; 1979 is with sparsity)


def paper_policy_dir(out: Path, layers: int | None = None) -> Path:
    """A model directory with the paper recipe's published model config (special token ids from the tiny
    tokenizer) and the tiny processor; no weights: the model is built in memory."""
    _, _, model_args = parse_recipe(PAPER_RECIPE, ["require_gpu=false"], plan_only=True)
    family = family_of(model_args.model_name_or_path)
    published = family.known[model_args.model_name_or_path]
    processor = build_processor(build_tiny_processor_dir())
    ids = processor.tokenizer.convert_tokens_to_ids
    vision = dict(published["vision_config"])
    depth = {} if layers is None else {"num_hidden_layers": layers}
    if layers is not None:  # a quick check of the code path on a small machine, not a figure
        vision.update(depth=layers, fullatt_block_indexes=[layers - 1])
    text = {**published["text_config"], **depth, "bos_token_id": ids("<|endoftext|>"),
            "eos_token_id": ids("<|im_end|>"), "pad_token_id": ids("<|endoftext|>")}
    config = family.config(text_config=text, vision_config=vision, tie_word_embeddings=False,
                           image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                           vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))
    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_policy(model_dir: Path, device: str):
    config = AutoConfig.from_pretrained(model_dir)
    config._attn_implementation = "sdpa"
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)

    model.generation_config = GenerationConfig(eos_token_id=[config.text_config.eos_token_id],
                                               pad_token_id=config.text_config.pad_token_id)
    return model


def policy_steps(lora: bool, steps: int, warmup: int, group: int, out_dir: Path, layers: int | None = None,
                 extra=()) -> dict:
    """GRPO steps of the paper's stage-1 recipe on one GPU: transformers generation (vLLM is not installed on the
    bench machine), sdpa attention, bf16, gradient checkpointing, one prompt of `group` completions per step."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model_dir = paper_policy_dir(out_dir / "qwen2.5-vl-7b-config", layers)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = build_policy(model_dir, device)
    build_s = time.perf_counter() - t0
    overrides = [f"model_name_or_path={model_dir}", "data.path=outputs/toydrive/deepeyes/train.parquet",
                 "lab.toydrive={out: outputs/toydrive, frames: 48, seed: 0}", "use_vllm=false",
                 "attn_implementation=sdpa", f"num_generations={group}", f"per_device_train_batch_size={group}",
                 "gradient_accumulation_steps=1", "report_to=[]", "rewards.clip_grounding.model_name=ViT-L-14",
                 "rewards.clip_grounding.pretrained=null", "require_gpu=false", f"bf16={device == 'cuda'}"]
    if lora:
        overrides += ["use_peft=true", "lora_r=16", "lora_alpha=32"]
    overrides += list(extra)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    name = f"paper-{'lora' if lora else 'full'}{'-' if extra else ''}{'-'.join(extra).replace('=', '')}"
    result = run(name, calls=1, steps=steps, warmup=warmup, overrides=overrides, recipe=PAPER_RECIPE, model=model)
    result["model_build_seconds"] = build_s
    result["parameters"] = sum(p.numel() for p in model.parameters())
    if device == "cuda":
        result["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 1024**3
        result["gpu"] = torch.cuda.get_device_name()
    result.update(_mfu(model, result, lora))
    return result


def _mfu(model, result: dict, lora: bool) -> dict:
    """Model FLOPs utilisation of the loss forward and the backward: 2 N FLOPs per token forward, 4 N backward
    (2 N with LoRA: no weight gradients), N the language model's parameters outside the embeddings; the vision
    tower, attention scores and checkpointing's recomputation are not counted (the usual MFU convention)."""
    tokens = result.get("trained_tokens_per_step")
    n = sum(p.numel() for name, p in model.named_parameters() if "visual" not in name and "embed_tokens" not in name
            and "lora_" not in name)
    phases = result["phases"]
    if not tokens:
        return {}
    fwd, bwd = phases.get("loss_forward", 0.0), phases.get("backward", 0.0)
    peak = H100_BF16_DENSE_TFLOPS * 1e12
    return {"lm_parameters_counted": n,
            "mfu_loss_forward": 2 * n * tokens / fwd / peak if fwd else None,
            "mfu_backward": (2 if lora else 4) * n * tokens / bwd / peak if bwd else None,
            "trained_tokens_per_s": tokens / (fwd + bwd) if fwd + bwd else None}


def clip_throughput(batch: int = 64, batches: int = 8) -> dict:
    """ViT-L-14 (random weights) image embeddings per second at 224x224, in the reward's precision, and our batched
    `clip_grounding` on 64 zoomed crops (one call each) end to end."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    encoder = OpenClipEncoder("ViT-L-14", pretrained=None, device=device)
    model = encoder.model
    images = torch.randn(batch, 3, 224, 224, device=device, dtype=next(model.parameters()).dtype)
    with torch.no_grad():
        for _ in range(2):
            model.encode_image(images)
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(batches):
            model.encode_image(images)
        if device == "cuda":
            torch.cuda.synchronize()
        tensor_s = time.perf_counter() - t0
    rng = random.Random(0)
    frames = [Image.effect_noise((4800, 1800), 40 + 5 * k).convert("RGB") for k in range(8)]
    envs, completions = [], []
    for i in range(64):
        env = ZoomInTool()  # the default resolution: 4 to 1280 image tokens of the default family
        env.reset(image=frames[i % 8])
        x, y = rng.randint(0, 1200), rng.randint(0, 400)
        env.image_zoom_in_tool(bbox_2d=[x, y, x + rng.randint(40, 300), y + rng.randint(40, 200)], label=f"car {i % 8}")
        envs.append(env)
        completions.append([{"role": "assistant", "content": "<think>look</think>"}])
    kwargs = dict(environments=envs, answer=["x"] * 64, idx=[f"p{i % 8}" for i in range(64)])
    reward = ClipGrounding(encoder=encoder, gate_on_correct=False)
    reward(None, completions, **kwargs)
    t0 = time.perf_counter()
    reward = ClipGrounding(encoder=encoder, gate_on_correct=False)  # fresh cache
    reward(None, completions, **kwargs)
    reward_s = time.perf_counter() - t0
    return {"name": "clip_vit_l14", "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "image_embeddings_per_s": batch * batches / tensor_s, "batch": batch,
            "reward_crops_per_s": 64 / reward_s, "reward_seconds_for_64_crops": reward_s}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m omnidrive_r1.bench.paper", description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["policy", "clip"])
    p.add_argument("--lora", action="store_true", help="LoRA r=16 (default: full fine-tuning)")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--group", type=int, default=8, help="completions per step (one prompt)")
    p.add_argument("--layers", type=int, help="cut the text and vision towers to this many layers (a quick check of "
                   "the code path on a small machine; the figures are then not the 7B's)")
    p.add_argument("--json", type=Path)
    p.add_argument("overrides", nargs="*", help="more recipe key=value overrides (e.g. image_cache_mb=0)")
    args = p.parse_intermixed_args(argv)
    if args.what == "clip":
        result = clip_throughput()
    else:
        result = policy_steps(args.lora, args.steps, args.warmup, args.group, Path("outputs/bench"), args.layers,
                              args.overrides)
    text = json.dumps(result, indent=1, default=float)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
