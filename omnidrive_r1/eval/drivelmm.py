"""DriveLMM-o1 scoring rules (DESIGN.md section 7), reproduced from the official evaluation script.

`official_mcq_letter` follows the official extraction exactly, quirks included; `strict_mcq_letter` reads
our protocol's `<answer>` instead. Both are reported, side by side.
"""

from __future__ import annotations

import re

from omnidrive_r1.protocol import ANSWER_RE, mcq_letter

# In this order: the first marker (in list order) found anywhere in the response is the one used.
OFFICIAL_MARKERS = ("The final answer is:", "**Final Answer:**", "Final Answer", "Answer", "Why take this action?:",
                    "**Final Answer**", "**Final Decision**:", "Final Step:", "<CONCLUSION>")
_OPTION = re.compile(r"([A-F])\)\s*(.+)")

METRICS = ("Faithfulness-Step", "Informativeness-Step", "Risk Assessment Accuracy", "Traffic Rule Adherence",
           "Scene Awareness & Object Understanding", "Repetition-Token", "Hallucination", "Semantic Coverage-Step",
           "Commonsense", "Missing Step", "Relevance", "Missing Details")
OVERALL = "Overall Score"

# Published (reasoning score %, MCQ accuracy %) on DriveLMM-o1 test.
PUBLISHED = {
    "GPT-4o": (72.52, 57.84), "Qwen2.5-VL-7B": (51.77, 37.81), "InternVL2.5-8B": (71.62, 54.87),
    "DriveLMM-o1": (75.24, 62.36), "AgentThink": (79.68, 71.35), "OmniDrive-R1": (80.35, 73.62),
}


def official_answer_text(response: str) -> str:
    """The text the official script takes the letter from: after the *last* occurrence of the first
    marker (in marker order) that occurs at all; empty when no marker occurs."""
    for marker in OFFICIAL_MARKERS:
        if marker in response:
            return response.rsplit(marker, 1)[1]
    return ""


def official_mcq_letter(response: str) -> str | None:
    """The option letter the official DriveLMM-o1 script extracts from a response, or None.

    >>> official_mcq_letter("<think>...</think>The final answer is: B) Slow down.")
    'B'
    >>> official_mcq_letter("<answer>B) Slow down.</answer>") is None   # no marker: the official rules miss it
    True
    >>> official_mcq_letter("Final Answer: none of the options apply")
    'F'
    """
    text = official_answer_text(response)
    match = _OPTION.search(text)
    if match:
        return match.group(1)
    if "none of the " in text.lower():
        return "F"
    return None


def strict_mcq_letter(response: str) -> str | None:
    """Our protocol: the letter written in the last <answer>...</answer>."""
    found = ANSWER_RE.findall(response)
    return mcq_letter(found[-1].strip()) if found else None


def official_export_response(response: str, answer: str | None) -> str:
    """The response written to the official results file: ours, followed by a line the official extraction
    reads (`The final answer is: <our answer>`), so that it parses to the model's own answer."""
    if answer is None:
        return response
    return f"{response.rstrip()}\nThe final answer is: {answer}"


def aggregate_judgments(scores: list[dict]) -> dict:
    """Reasoning score (%) = sum of Overall Score / (N * 10) * 100; each sub-metric = its mean * 10."""
    n = len(scores)
    if not n:
        return {"reasoning_score": None, **{m: None for m in METRICS}}
    out = {"reasoning_score": sum(s[OVERALL] for s in scores) / (n * 10) * 100}
    for m in METRICS:
        out[m] = sum(s[m] for s in scores) / n * 10
    return out


def box_iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
