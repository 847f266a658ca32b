"""Each model family at toy width: its tiny config, tiny processor and the added tokens of its real tokenizer
(so the tiny tokenizer gives them the same relative ids). The lab's side of the policy seam: a family module in
`omnidrive_r1/policies/` says what the real models are, this file how the toy world builds a small one of each.
Keyed by the family's first `model_type`."""

from __future__ import annotations

from transformers import (
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
)

# the real tokenizers' added tokens, in their order (so with the same relative ids)
QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
QWEN2_5_VL_ADDED = ["<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>"]
TOKENS = {
    "qwen2_5_vl": (QWEN_SPECIAL, QWEN2_5_VL_ADDED),
    "qwen3_vl": (QWEN_SPECIAL, [*QWEN2_5_VL_ADDED, "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>",
                                "</tool_response>", "<think>", "</think>"]),
}


def tokens(family) -> tuple[list[str], list[str]]:
    """(special tokens, added tokens) of `family`'s real tokenizer."""
    return TOKENS[family.model_types[0]]


def _text_config(tokenizer, c: dict, rope_parameters: dict, **extra) -> dict:
    """The language model part of a tiny config: every id the model can emit decodes to text."""
    ids = tokenizer.convert_tokens_to_ids
    keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "max_position_embeddings")
    return {"vocab_size": len(tokenizer), **{k: c[k] for k in keys}, "rope_parameters": rope_parameters,
            "bos_token_id": ids("<|endoftext|>"), "eos_token_id": ids("<|im_end|>"),
            "pad_token_id": ids("<|endoftext|>"), **extra}


def _vision_token_ids(tokenizer) -> dict:
    ids = tokenizer.convert_tokens_to_ids
    return {"image_token_id": ids("<|image_pad|>"), "video_token_id": ids("<|video_pad|>"),
            "vision_start_token_id": ids("<|vision_start|>"), "vision_end_token_id": ids("<|vision_end|>")}


def _vision(c: dict, **extra) -> dict:
    return {"depth": c["vision_depth"], "hidden_size": c["vision_hidden_size"], "num_heads": c["vision_heads"],
            "intermediate_size": c["vision_intermediate_size"], "out_hidden_size": c["hidden_size"],
            "spatial_merge_size": 2, "temporal_patch_size": 2, **extra}


def tiny_config(family, tokenizer, c: dict):
    """`family`'s config at toy width (`c`: `omnidrive_r1.toy.tiny.TINY_POLICY_CONFIG`)."""
    head_dim = c["hidden_size"] // c["num_attention_heads"]
    if family.model_types[0] == "qwen2_5_vl":
        if sum(c["mrope_section"]) != head_dim // 2:
            raise ValueError(f"mrope_section {c['mrope_section']} must sum to head_dim/2 = {head_dim // 2}")
        rope = {"rope_type": "default", "rope_theta": c["rope_theta"], "mrope_section": c["mrope_section"]}
        text = _text_config(tokenizer, c, rope)
        vision = _vision(c, fullatt_block_indexes=[c["vision_depth"] - 1], window_size=112, patch_size=14)
    elif family.model_types[0] == "qwen3_vl":
        section = [head_dim // 2 - 2 * (head_dim // 6), head_dim // 6, head_dim // 6]  # sums to head_dim / 2
        rope = {"rope_type": "default", "rope_theta": c["rope_theta"], "mrope_section": section,
                "mrope_interleaved": True}
        text = _text_config(tokenizer, c, rope, head_dim=head_dim)
        # a 16 x 16 grid of position embeddings, interpolated to any image
        vision = _vision(c, patch_size=16, num_position_embeddings=256, deepstack_visual_indexes=[0])
    else:
        raise ValueError(f"no tiny configuration for {family.name}")
    return family.config(text_config=text, vision_config=vision, **_vision_token_ids(tokenizer),
                         tie_word_embeddings=False)


def tiny_processor(family, tokenizer, min_pixels: int, max_pixels: int):
    """`family`'s processor with the tiny tokenizer and the toy's pixel limits."""
    if family.model_types[0] == "qwen2_5_vl":
        return Qwen2_5_VLProcessor(
            image_processor=Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels),
            tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor(), chat_template=family.chat_template())
    if family.model_types[0] == "qwen3_vl":
        image_processor = Qwen2VLImageProcessor(size={"shortest_edge": min_pixels, "longest_edge": max_pixels},
                                                patch_size=16, merge_size=2, image_mean=[0.5] * 3,
                                                image_std=[0.5] * 3)
        return Qwen3VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                video_processor=Qwen3VLVideoProcessor(), chat_template=family.chat_template())
    raise ValueError(f"no tiny processor for {family.name}")
