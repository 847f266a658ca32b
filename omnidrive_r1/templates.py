"""Chat template and response parser that make Qwen2.5-VL speak the iMCoT tool protocol.

Qwen2.5-VL ships a template without tool support, which TRL refuses for tool training. Ours renders the
same vision placeholders, declares tools Hermes-style and is prefix-preserving (see the .jinja file).
"""

from __future__ import annotations

from importlib.resources import files

QWEN2_5_VL_TOOLS = files("omnidrive_r1").joinpath("assets/qwen2_5_vl_tools.jinja").read_text(encoding="utf-8")

# transformers' streamable response parser (transformers >= 5.13). Reasoning is deliberately not split out
# of `content`: the rewards read `<think>...</think>` and `<answer>...</answer>` from the raw text.
RESPONSE_TEMPLATE = {
    "defaults": {"role": "assistant"},
    "start_anchor": "<|im_start|>assistant\n",
    "fields": {
        "tool_calls": {
            "open": "<tool_call>",
            "close_pattern": r"</tool_call>\s*",
            "repeats": True,
            "content": "json",
            "transform": {"type": "function", "function": "{content}"},
        },
        "content": {"close_pattern": r"<\|im_end\|>\s*", "content": "text"},
    },
}


def install(processor):
    """Put our chat template and response parser on a Qwen2.5-VL processor (and its tokenizer)."""
    processor.chat_template = QWEN2_5_VL_TOOLS
    processor.tokenizer.chat_template = QWEN2_5_VL_TOOLS
    processor.tokenizer.response_template = RESPONSE_TEMPLATE
    return processor
