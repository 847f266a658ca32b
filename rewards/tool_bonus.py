"""`tool_bonus`: a DeepEyes-style bonus for answering right *with* the tool (`docs/rewards.md`).

1.0 when the trajectory holds at least `min_images` images returned by a tool (a crop the policy was shown)
and its answer scores at least `threshold` on `answer_accuracy`; else 0.0. It pays for the fact of a zoom,
not for where the zoom went: the box is never looked at (compare `clip_grounding`, which pays for a crop
that shows what the policy said it would).
"""

from __future__ import annotations

from omnidrive_r1.rewards.answer_accuracy import score as answer_score


def tool_images(completion) -> int:
    """Images that tool replies put into the conversation (a failed call's reply is text only; a reply TRL
    took back for lack of room is not in the completion)."""
    if not isinstance(completion, list):
        return 0
    count = 0
    for message in completion:
        if message.get("role") != "tool" or not isinstance(message.get("content"), list):
            continue
        count += sum(1 for part in message["content"] if isinstance(part, dict) and part.get("type") == "image")
    return count


def tool_bonus(prompts, completions, completion_ids=None, *, answer, is_mcq=None, source=None,
               threshold: float = 0.5, min_images: int = 1, **kwargs):
    """TRL reward function: 1.0 for a right answer (`answer_accuracy` >= `threshold`) reached after at least
    `min_images` tool images, else 0.0."""
    if not 0 <= threshold <= 1:
        raise ValueError(f"tool_bonus threshold must lie in [0, 1], got {threshold}")
    if min_images < 1:
        raise ValueError(f"tool_bonus min_images must be 1 or more, got {min_images}")
    n = len(completions)
    is_mcq = is_mcq if is_mcq is not None else [False] * n
    source = source if source is not None else [None] * n
    return [float(tool_images(c) >= min_images and answer_score(c, a, bool(m), s) >= threshold)
            for c, a, m, s in zip(completions, answer, is_mcq, source)]


REWARD = tool_bonus
