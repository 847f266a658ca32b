"""DriveLMM-o1 scoring rules (`docs/evaluation.md`), as the official evaluation script applies them.

Two readings of every figure are reported side by side:
- official-equivalent: what the official script would print from the same judge answers, quirks included
  (a row whose judge call failed is dropped from both figures; a missing Overall Score adds 0; a row where
  neither the ground truth nor the response yields a letter counts as correct);
- ours: every row counts, judge failures are counted and named, and a missing letter on either side is wrong.
`strict_mcq_letter` reads our protocol's `<answer>` instead of the official markers.
"""

from __future__ import annotations

import ast
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
    return official_truth_letter(official_answer_text(response))  # the same rules, after the marker step


def official_truth_letter(final_answer: str) -> str | None:
    """The ground truth's letter as the official script reads it: the option pattern applied directly to
    `final_answer` (no marker step), "none of the" -> F, otherwise no letter.

    >>> official_truth_letter("B) Slow down."), official_truth_letter("b) green"), official_truth_letter("None of the above.")
    ('B', None, 'F')
    """
    match = _OPTION.search(final_answer)
    if match:
        return match.group(1)
    if "none of the " in final_answer.lower():
        return "F"
    return None


def official_mcq_correct(truth: str | None, letter: str | None) -> bool:
    """The official comparison: two missing letters compare equal ('none' == 'none')."""
    return truth == letter


def our_mcq_correct(truth: str | None, letter: str | None) -> bool:
    """Ours: a row where either side has no letter is wrong."""
    return truth is not None and truth == letter


def official_reply_scores(reply: str | None) -> dict | None:
    """A judge reply read as the official script reads it (`ast.literal_eval` of the raw text); None when that
    fails, which drops the row from the official figures."""
    if reply is None:
        return None
    try:
        value = ast.literal_eval(reply)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def official_reasoning_score(replies: list[dict]) -> float | None:
    """sum(Overall Score) / (rows * 10) * 100 over the rows the official script keeps: a missing or non-numeric
    Overall Score adds 0 and the row still counts; a score given on another scale is added as it is."""
    if not replies:
        return None
    total = 0.0
    for scores in replies:
        value = scores.get(OVERALL)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
            total += float(value)
    return total / (len(replies) * 10) * 100


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
