"""The response parser every supported family shares: the policy's turn as text, with its tool calls read from
`<tool_call>{json}</tool_call>` blocks (the chat templates are the families', `omnidrive_r1/policies/`).
"""

from __future__ import annotations

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
