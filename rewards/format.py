"""`format`: 1.0 when the trajectory follows the iMCoT protocol (`docs/protocol.md`), else 0.0.

Every assistant turn starts with `<think>...</think>`; every turn but the last then makes exactly one
tool call and nothing else; the last turn writes exactly one `<answer>...</answer>` and nothing after it.
A malformed tool call (left as raw `<tool_call>` text by the parser) breaks the format.
"""

from __future__ import annotations

import re

from omnidrive_r1.protocol import assistant_turns, text_of

_TOOL_TURN = re.compile(r"\s*<think>(?:(?!</?think>|<answer>|</answer>|<tool_call>).)+</think>\s*", re.S)
_ANSWER_TURN = re.compile(
    r"\s*<think>(?:(?!</?think>|<answer>|<tool_call>).)+</think>\s*<answer>(?:(?!</?answer>).)+</answer>\s*", re.S)


def follows_protocol(completion) -> bool:
    turns = assistant_turns(completion)
    if not turns:
        return False
    for turn in turns[:-1]:
        if len(turn.get("tool_calls") or []) != 1 or not _TOOL_TURN.fullmatch(text_of(turn.get("content"))):
            return False
    last = turns[-1]
    return not last.get("tool_calls") and bool(_ANSWER_TURN.fullmatch(text_of(last.get("content"))))


def format_reward(prompts, completions, completion_ids=None, **kwargs):
    """TRL reward function: 1.0 for a well-formed trajectory, 0.0 otherwise."""
    return [float(follows_protocol(c)) for c in completions]


format_reward.__name__ = "format"
REWARD = format_reward
