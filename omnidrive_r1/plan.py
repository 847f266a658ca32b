"""`omnidrive-r1 train RECIPE --plan`: the per-GPU memory a recipe needs, computed without loading a model.

The policy is built on PyTorch's meta device from its config (parameter shapes, no weights), so its parameter
count is exact; the rest follows the usual accounting of mixed-precision training with DeepSpeed ZeRO
(`docs/multinode.md` explains each line). Activations are an estimate (per-layer inputs kept by gradient
checkpointing plus one layer recomputed, and the completion's logits).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForImageTextToText

from omnidrive_r1.config import parse_recipe
from omnidrive_r1.policies import families, family_of

GB = 1024**3

@dataclass
class Plan:
    zero: int
    lora: bool
    gpus: int
    weights: float
    gradients: float
    optimizer: float
    activations: float
    vllm: float
    clip: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations + self.vllm + self.clip


def model_config(source: str):
    """The policy's config: from its directory, or the published one of a hub id its family knows
    (`omnidrive_r1/policies/`)."""
    path = Path(source)
    if (path / "config.json").is_file():
        return AutoConfig.from_pretrained(path)
    for family in families():
        if source in family.known:
            return family.config(**family.known[source])
    known = sorted(k for f in families() for k in f.known)
    raise ValueError(f"--plan: {source} is neither a local model directory nor one of {known}")


def parameter_counts(config, lora_r: int, lora_targets: tuple[str, ...]) -> tuple[int, int]:
    """(all parameters, LoRA parameters) of the model built on the meta device."""
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    lora = sum(lora_r * (m.in_features + m.out_features) for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in lora_targets
               and "visual" not in name)
    return total, lora


def activations_bytes(config, micro_batch: int, seq: int, completion: int, checkpointing: bool) -> float:
    """Estimate: with checkpointing, each layer's input (bf16) plus one layer's full activations; the
    completion's logits in fp32 for the log-softmax."""
    text = config.text_config
    h, layers, heads = text.hidden_size, text.num_hidden_layers, text.num_attention_heads
    one_layer = micro_batch * seq * h * (34 + 5 * heads * seq / h)  # bytes, attention scores included
    kept = micro_batch * seq * h * 2 * layers if checkpointing else one_layer * layers
    logits = micro_batch * completion * text.vocab_size * (2 + 4)
    return kept + (one_layer if checkpointing else 0) + logits


def plans(recipe, grpo, model_args, gpus: int = 8, gpu_gb: float = 80.0) -> tuple[list[Plan], dict]:
    config = model_config(recipe.init_from or model_args.model_name_or_path)
    family = family_of(config)
    lora_r = model_args.lora_r or 16
    total, lora = parameter_counts(config, lora_r, family.lora_targets)
    image_tokens = family.image_tokens(family.image_pixels(recipe.image_min_pixels, recipe.image_max_pixels)[1])
    seq = image_tokens + 600 + grpo.max_completion_length  # frame, system prompt and question, completion
    acts = activations_bytes(config, grpo.per_device_train_batch_size, seq, grpo.max_completion_length,
                             grpo.gradient_checkpointing)
    vllm = (grpo.vllm_gpu_memory_utilization * gpu_gb * GB) if grpo.use_vllm and grpo.vllm_mode == "colocate" else 0
    clip = 0.3 * GB if any(r.name == "clip_grounding" for r in recipe.rewards) else 0
    out = []
    for zero in (2, 3):
        for use_lora in (False, True):
            trainable = lora if use_lora else total
            weights = 2 * total / (gpus if zero == 3 else 1) + (2 * lora if use_lora else 0)
            grads = 2 * trainable / gpus
            optimizer = 12 * trainable / gpus  # fp32 master copy, Adam's two moments
            out.append(Plan(zero, use_lora, gpus, weights / GB, grads / GB, optimizer / GB, acts / GB, vllm / GB,
                            clip / GB))
    facts = {"family": family.name, "parameters": total, "lora_parameters": lora, "lora_r": lora_r, "sequence_tokens": seq,
             "micro_batch": grpo.per_device_train_batch_size, "gpus": gpus, "gpu_gb": gpu_gb}
    return out, facts


def format_plan(rows: list[Plan], facts: dict) -> str:
    lines = [f"policy ({facts['family']}): {facts['parameters'] / 1e9:.2f} B parameters; LoRA r={facts['lora_r']} on the language "
             f"model's linear layers: {facts['lora_parameters'] / 1e6:.1f} M",
             f"per GPU, {facts['gpus']} GPUs, micro-batch {facts['micro_batch']}, up to {facts['sequence_tokens']} "
             "tokens per sequence (GB):", "",
             "| ZeRO | LoRA | weights | grads | Adam | activations | vLLM | CLIP | total | fits 80 GB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for p in rows:
        fits = "yes" if p.total <= facts["gpu_gb"] * 0.92 else "no"
        lines.append(f"| {p.zero} | {'on' if p.lora else 'off'} | {p.weights:.1f} | {p.gradients:.1f} | "
                     f"{p.optimizer:.1f} | {p.activations:.1f} | {p.vllm:.1f} | {p.clip:.1f} | {p.total:.1f} | {fits} |")
    lines += ["", "weights bf16 (ZeRO-3 shards them); gradients bf16 and Adam's fp32 master weights and moments "
              "(12 bytes per trainable parameter), sharded by ZeRO-2 and -3; activations: an estimate with "
              "gradient checkpointing; vLLM: the colocated engine's share (vllm_gpu_memory_utilization). "
              "Leave ~8% for the CUDA context and fragmentation."]
    return "\n".join(lines)


def print_plan(recipe_path: str | Path, overrides: list[str]) -> str:
    recipe, grpo, model_args = parse_recipe(recipe_path, [*overrides, "require_gpu=false"], plan_only=True)
    rows, facts = plans(recipe, grpo, model_args)
    text = format_plan(rows, facts)
    print(text)
    print(json.dumps({"plans": [p.__dict__ | {"total": p.total} for p in rows], **facts}, indent=None))
    return text
