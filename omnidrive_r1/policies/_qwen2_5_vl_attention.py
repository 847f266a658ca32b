"""Qwen2.5-VL's windowed vision attention in one attention call per layer (recipe field `vision_attention`).

Qwen2.5-VL's vision tower attends within windows of 112x112 pixels (8x8 patches) in most layers and across the
whole image in a few. With `flash_attention_2` transformers runs each layer as one variable-length call; with
`sdpa` or `eager` it splits the sequence and makes one attention call per window (about 80 for a 2400x900 frame
at the paper recipe's resolution, per layer, per image), which leaves a GPU mostly idle.

`batched` packs every window of a layer into one padded batch, `[windows, heads, longest window, head_dim]`,
and runs one `scaled_dot_product_attention` call; a key mask keeps padding out of the shorter windows (edge
windows), and padded query rows are dropped. The arithmetic per window is the same; only the kernel's batching
differs. Measured (`python -m omnidrive_r1.bench vision_attention`, docs/performance.md) and checked against
transformers' own forward on the tiny policy (tests/test_vision_attention.py).
"""

from __future__ import annotations

import types

import torch
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision

MODES = ("per_window", "batched")


def _window_layout(cu_seqlens: torch.Tensor, total: int):
    """(window of each token, its position in the window, window lengths, longest window)."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    lengths = lengths[lengths > 0]  # an empty window (a zero-length split) holds no token
    starts = torch.cumsum(lengths, 0) - lengths
    window = torch.repeat_interleave(torch.arange(lengths.numel(), device=lengths.device), lengths, output_size=total)
    position = torch.arange(total, device=lengths.device) - torch.repeat_interleave(starts, lengths, output_size=total)
    return window, position, lengths, int(lengths.max())


def batched_window_forward(self, hidden_states: torch.Tensor, cu_seqlens: torch.Tensor,
                           position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
                           max_seqlen: int | None = None, **kwargs) -> torch.Tensor:
    """`Qwen2_5_VLVisionAttention.forward` with every window of the layer in one attention call."""
    total = hidden_states.shape[0]
    q, k, v = self.qkv(hidden_states).reshape(total, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    cos, sin = position_embeddings
    q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)
    window, position, lengths, longest = _window_layout(cu_seqlens, total)
    count = lengths.numel()

    def padded(t: torch.Tensor) -> torch.Tensor:  # [tokens, heads, dim] -> [windows, heads, longest, dim]
        out = t.new_zeros(count, longest, *t.shape[1:])
        out[window, position] = t
        return out.transpose(1, 2)

    mask = None
    if bool((lengths != longest).any()):
        mask = (torch.arange(longest, device=lengths.device) < lengths[:, None])[:, None, None, :]
    out = torch.nn.functional.scaled_dot_product_attention(
        padded(q), padded(k), padded(v), attn_mask=mask, scale=self.scaling,
        dropout_p=self.attention_dropout if self.training else 0.0)
    out = out.transpose(1, 2)[window, position].reshape(total, -1)
    return self.proj(out)


def vision_attention_modules(model) -> list:
    return [m for m in model.modules() if type(m).__name__ == "Qwen2_5_VLVisionAttention"]


def set_vision_attention(model, mode: str) -> int:
    """Switch the vision tower of `model` to `mode` ('batched' or transformers' own 'per_window'); returns the
    number of attention layers switched. `batched` applies to the sdpa and eager implementations only:
    flash_attention_2 already runs one variable-length call per layer, and is left as it is."""
    if mode not in MODES:
        raise ValueError(f"vision_attention: {mode!r}; it is one of {', '.join(MODES)}")
    switched = 0
    for module in vision_attention_modules(model):
        if "flash" in str(module.config._attn_implementation):
            continue
        if mode == "batched":
            module.forward = types.MethodType(batched_window_forward, module)
        else:
            module.__dict__.pop("forward", None)  # back to the class's own forward
        switched += 1
    return switched


class count_attention_calls:
    """Counts `scaled_dot_product_attention` calls while active (transformers' sdpa path and ours call it)."""

    def __init__(self):
        self.calls = 0

    def __enter__(self):
        self._real = torch.nn.functional.scaled_dot_product_attention

        def counted(*args, **kwargs):
            self.calls += 1
            return self._real(*args, **kwargs)

        torch.nn.functional.scaled_dot_product_attention = counted
        return self

    def __exit__(self, *exc):
        torch.nn.functional.scaled_dot_product_attention = self._real
        return False
