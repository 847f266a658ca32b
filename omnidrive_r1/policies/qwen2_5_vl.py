"""Qwen2.5-VL (`model_type` qwen2_5_vl): 14-pixel patches merged 2x2 (a side is a multiple of 28), `bbox_2d` in
pixels of the resized image the model sees, and a chat template of ours (`omnidrive_r1/assets/qwen2_5_vl_tools.jinja`):
the published one has no tool support, which TRL refuses for tool training."""

from __future__ import annotations

from importlib.resources import files

from omnidrive_r1.policies import Family

# Qwen/Qwen2.5-VL-7B-Instruct's published architecture (its config.json), for --plan without a download
QWEN2_5_VL_7B = {
    "text_config": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                    "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
                    "max_position_embeddings": 128000,
                    "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}},
    "vision_config": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                      "out_hidden_size": 3584, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
                      "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31]},
    "tie_word_embeddings": False,
}
TEMPLATE = files("omnidrive_r1").joinpath("assets/qwen2_5_vl_tools.jinja").read_text(encoding="utf-8")


class Qwen2_5_VL(Family):
    name = "Qwen2.5-VL"
    model_types = ("qwen2_5_vl",)
    factor = 28
    min_pixels, max_pixels = 3136, 12845056
    coordinates = "pixels"
    lora_targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    known = {"Qwen/Qwen2.5-VL-7B-Instruct": QWEN2_5_VL_7B}
    config_class = "Qwen2_5_VLConfig"
    model_class = "Qwen2_5_VLForConditionalGeneration"

    def chat_template(self) -> str:
        return TEMPLATE

    def set_vision_attention(self, model, mode: str) -> int:
        from omnidrive_r1.policies._qwen2_5_vl_attention import set_vision_attention

        return set_vision_attention(model, mode)


FAMILY = Qwen2_5_VL()
