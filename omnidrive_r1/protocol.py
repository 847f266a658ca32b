"""Reading the iMCoT protocol (`docs/protocol.md`) back out of a completion.

A completion, as TRL hands it to reward functions, is a list of messages: assistant turns (text in
`content`, parsed calls in `tool_calls`) alternating with tool turns. Plain strings are accepted too.
"""

from __future__ import annotations

import json
import re

ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.S)
THINK_RE = re.compile(r"<think>(.*?)</think>", re.S)
# "B)", "B.", "B:", "(B)" or a bare "B" at the start; "A pedestrian" is not a letter
MCQ_LETTER_RE = re.compile(r"^\s*(?:\(([A-Fa-f])\)|([A-Fa-f])(?:[).:]|\s*$))")
OPTION_MARK_RE = re.compile(r"(?:^|[\s,;/(])([A-Fa-f])\)")
LETTER_LIST_RE = re.compile(r"^\s*[A-Fa-f](?:\s*(?:,|/|&|\bor\b|\band\b)\s*[A-Fa-f])+\s*\.?\s*$")


def text_of(content) -> str:
    """The text of a message content (a string or a list of blocks)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(b.get("text") or "" for b in content if isinstance(b, dict) and b.get("type", "text") == "text")


def call_function(call) -> dict:
    """`{"name", "arguments"}` of a tool call, whether nested as TRL writes it (`{"function": {...}}`) or flat."""
    fn = call.get("function", call) if isinstance(call, dict) else None
    return fn if isinstance(fn, dict) else {}


def _blocks_text(content) -> str:
    if isinstance(content, list):
        return "".join("<image>" if isinstance(b, dict) and b.get("type") == "image"
                       else (b.get("text") or "" if isinstance(b, dict) else str(b)) for b in content)
    return "" if content is None else str(content)


def messages_text(messages) -> str:
    r"""A conversation as readable text: assistant turns with their tool calls as `<tool_call>{json}</tool_call>`,
    tool replies as `<tool_response>...</tool_response>`, other turns as `[role] text`; images as `<image>`.

    >>> messages_text([{"role": "assistant", "content": "<think>x</think>",
    ...                 "tool_calls": [{"function": {"name": "zoom", "arguments": {"bbox_2d": [1, 2, 3, 4]}}}]},
    ...                {"role": "tool", "content": [{"type": "image"}, {"type": "text", "text": "crop"}]}])
    '<think>x</think>\n<tool_call>{"name": "zoom", "arguments": {"bbox_2d": [1, 2, 3, 4]}}</tool_call>\n<tool_response><image>crop</tool_response>'
    """
    if isinstance(messages, str):
        return messages
    parts = []
    for m in messages:
        role, text = m.get("role"), _blocks_text(m.get("content"))
        if role == "assistant":
            parts.append(text)
            for call in m.get("tool_calls") or []:
                fn = call_function(call)
                parts.append("<tool_call>" + json.dumps({"name": fn.get("name"), "arguments": fn.get("arguments")},
                                                        default=str) + "</tool_call>")
        elif role == "tool":
            parts.append(f"<tool_response>{text}</tool_response>")
        else:
            parts.append(f"[{role}] {text}")
    return "\n".join(p for p in parts if p)


def assistant_turns(completion) -> list[dict]:
    """The assistant messages of a completion (a plain string counts as one turn without tool calls)."""
    if isinstance(completion, str):
        return [{"role": "assistant", "content": completion}]
    return [m for m in completion if m.get("role") == "assistant"]


def final_answer(completion) -> str | None:
    """Text inside the last `<answer>...</answer>` of the last assistant turn, stripped; None if absent."""
    turns = assistant_turns(completion)
    if not turns:
        return None
    found = ANSWER_RE.findall(text_of(turns[-1].get("content")))
    return found[-1].strip() if found else None


def mcq_letter(answer: str | None) -> str | None:
    """The option letter of an answer such as "B) Slow down", "B", "(b)" or "b." (upper-cased).

    Several different letters written as options ("A) ... B) ...", "A or B") give None: hedging earns
    nothing.

    >>> mcq_letter("B) Slow down."), mcq_letter("b"), mcq_letter("A) stop B) go"), mcq_letter("Slow down")
    ('B', 'B', None, None)
    """
    if not answer or LETTER_LIST_RE.match(answer):
        return None
    m = MCQ_LETTER_RE.match(answer)
    if not m:
        return None
    letter = (m.group(1) or m.group(2)).upper()
    if {x.upper() for x in OPTION_MARK_RE.findall(answer)} - {letter}:
        return None
    return letter
