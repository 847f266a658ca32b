"""`answer_accuracy`: is the final `<answer>` right? (`docs/rewards.md`)

- MCQ rows (`is_mcq`): 1.0 when the answer's option letter equals the ground truth's, else 0.0.
- open DriveLMM-o1 rows: token F1 between the normalised answer and `final_answer`.
- other rows (DeepEyes and the like): 1.0 on a normalised string or number match, else 0.0.
- no `<answer>`: 0.0.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter

from omnidrive_r1.protocol import final_answer, mcq_letter

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    """Lower-case, drop punctuation and articles, squeeze spaces (SQuAD-style)."""
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCT))
    return " ".join(text.split())


def token_f1(prediction: str, truth: str) -> float:
    """Token-level F1 of normalised texts.

    >>> round(token_f1("The light is red.", "the traffic light is red"), 4)
    0.8571
    """
    p, t = normalize(prediction).split(), normalize(truth).split()
    common = sum((Counter(p) & Counter(t)).values())
    if not p or not t or not common:
        return float(p == t)
    precision, recall = common / len(p), common / len(t)
    return 2 * precision * recall / (precision + recall)


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", "").strip().rstrip("."))
    except ValueError:
        return None


def exact_match(prediction: str, truth: str) -> float:
    """1.0 when the answers agree as numbers (relative tolerance 1e-6) or as normalised strings."""
    a, b = _number(prediction), _number(truth)
    if a is not None and b is not None:
        return float(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9))
    return float(normalize(prediction) == normalize(truth) and normalize(truth) != "")


def score(completion, answer: str, is_mcq: bool, source: str | None) -> float:
    predicted = final_answer(completion)
    if predicted is None:
        return 0.0
    if is_mcq:
        truth = mcq_letter(answer)
        return float(truth is not None and mcq_letter(predicted) == truth)
    if source in (None, "drivelmm"):
        return token_f1(predicted, answer)
    return exact_match(predicted, answer)


def answer_accuracy(prompts, completions, completion_ids=None, *, answer, is_mcq=None, source=None, **kwargs):
    """TRL reward function: one score in [0, 1] per completion."""
    n = len(completions)
    is_mcq = is_mcq if is_mcq is not None else [False] * n
    source = source if source is not None else [None] * n
    return [score(c, a, m, s) for c, a, m, s in zip(completions, answer, is_mcq, source)]


REWARD = answer_accuracy
