"""What vLLM's Qwen2.5-VL should hold, computed from a transformers state dict (test helper for weight sync).

vLLM fuses projections (q/k/v -> qkv_proj, gate/up -> gate_up_proj), drops transformers' `model.` prefix
of the language model and pads the vocabulary; `expected_vllm_tensor` undoes that for one vLLM name.
"""

from __future__ import annotations

import torch

_FUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


def hf_name(vllm_name: str) -> str:
    if vllm_name.startswith("visual."):
        return "model." + vllm_name
    if vllm_name == "language_model.lm_head.weight":
        return "lm_head.weight"
    if vllm_name.startswith("language_model.model."):
        return "model.language_model." + vllm_name.removeprefix("language_model.model.")
    return vllm_name


def expected_vllm_tensor(vllm_name: str, hf_state: dict[str, torch.Tensor]) -> torch.Tensor:
    name = hf_name(vllm_name)
    if name in hf_state:
        return hf_state[name]
    for fused, parts in _FUSED.items():
        if f".{fused}." in name:
            return torch.cat([hf_state[name.replace(fused, part)] for part in parts], dim=0)
    raise KeyError(f"no transformers weight for vLLM parameter {vllm_name!r}")


def kernel_weight(module, dtype) -> torch.Tensor:
    """What a linear layer really multiplies by, recovered from an identity. On CPUs with AVX-512 or AMX, vLLM
    hands linear layers to packed GEMM kernels that keep their own copy and empty `layer.weight`."""
    eye = torch.eye(module.input_size_per_partition, dtype=dtype)
    return module.cpu_linear(eye, None, None).t().float()


def ulp(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The spacing of `dtype`'s values (its unit in the last place) at each value of `t` (normal range)."""
    info = torch.finfo(dtype)
    _, exponent = torch.frexp(t.float().abs().clamp(min=info.tiny))
    return torch.ldexp(torch.full_like(t, info.eps, dtype=torch.float32), exponent - 1)


def max_weight_gap(vllm_model, hf_state: dict[str, torch.Tensor], in_ulps: bool = False) -> dict[str, float]:
    """Largest difference per vLLM parameter (vocabulary padding ignored): absolute, or with `in_ulps` in units
    in the last place of the parameter's own dtype at each expected value."""
    gaps = {}
    modules = dict(vllm_model.named_modules())
    for name, param in vllm_model.named_parameters():
        want = expected_vllm_tensor(name, hf_state).to(param.device, torch.float32)
        module = modules.get(name.rsplit(".", 1)[0])
        if param.numel() == 0 and hasattr(module, "cpu_linear"):  # the packed path: read the kernel instead
            have = kernel_weight(module, param.dtype)
        else:
            have = param.detach().float()[: want.shape[0]]
        if have.shape != want.shape:
            gaps[name] = float("inf")
            continue
        gap = (have - want).abs()
        if in_ulps:
            gap = gap / ulp(want, param.dtype)
        gaps[name] = float(gap.max())
    return gaps
