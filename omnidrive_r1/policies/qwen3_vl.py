"""Qwen3-VL (`model_type` qwen3_vl; dense 2B to 32B): 16-pixel patches merged 2x2 (a side is a multiple of 32),
`bbox_2d` relative, 0 to 1000 on each axis of the image it points at, whatever that image's size (the model's own
grounding convention), and the model's own chat template: it declares tools natively, renders tool replies
(images included) as `<tool_response>` inside a user turn, and is prefix-preserving, as TRL's multi-turn
trainer needs (checked by a test). The template text comes from TRL, which ships Qwen's original.

Published architecture of Qwen/Qwen3-VL-8B-Instruct (its config.json on the Hugging Face hub): language model
36 layers, width 4096, MLP 12288, 32 heads with 8 key-value heads of dimension 128, vocabulary 151936,
interleaved M-RoPE (sections 24, 20, 20, theta 5e6); vision tower 27 layers, width 1152, MLP 4304, 16 heads,
patch 16, merge 2, 2304 position embeddings, DeepStack features from vision layers 8, 16 and 24.
"""

from __future__ import annotations

from omnidrive_r1.policies import Family
from omnidrive_r1.policies.qwen2_5_vl import FAMILY as QWEN2_5_VL

QWEN3_VL_8B = {
    "text_config": {"hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36,
                    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936,
                    "max_position_embeddings": 262144,
                    "rope_parameters": {"rope_type": "default", "rope_theta": 5e6, "mrope_section": [24, 20, 20],
                                        "mrope_interleaved": True}},
    "vision_config": {"depth": 27, "hidden_size": 1152, "intermediate_size": 4304, "num_heads": 16,
                      "out_hidden_size": 4096, "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2,
                      "num_position_embeddings": 2304, "deepstack_visual_indexes": [8, 16, 24]},
    "tie_word_embeddings": False,
}


class Qwen3_VL(Family):
    name = "Qwen3-VL"
    model_types = ("qwen3_vl",)
    factor = 32
    min_pixels, max_pixels = 65536, 16777216
    coordinates = "relative"
    lora_targets = QWEN2_5_VL.lora_targets  # the same layer names
    known = {"Qwen/Qwen3-VL-8B-Instruct": QWEN3_VL_8B}
    config_class = "Qwen3VLConfig"
    model_class = "Qwen3VLForConditionalGeneration"

    def chat_template(self) -> str:
        from trl.chat_template_utils import qwen3_vl_chat_template  # light module (omnidrive_r1/policies)

        return qwen3_vl_chat_template


FAMILY = Qwen3_VL()
