"""Reading a multiple-choice answer out of what a reasoning model wrote, two ways (`docs/benchmarks.md`):

- **ours** (`read_choice`): our rule for V* Bench and HR-Bench rows: one option's letter or text, or nothing;
- **the published protocols' rules** (`deepeyes_rule`): what DeepEyes' V* and HR-Bench scorers decide by rule
  before they hand a prediction to their judge model. They are reproduced as the public scoring code behaves
  (case-sensitive, substring tests), quirks included, because the published figures came out of them.

Both start from the same text: `final_turn` (what the model said after its last tool reply), then its first
`<answer>` block when it wrote one.
"""

from __future__ import annotations

import re

LETTERS = "ABCDEFGH"
ANSWER_BLOCK_RE = re.compile(r"<answer>(.*?)</answer>", re.S)
THINK_RE = re.compile(r"<think>.*?</think>", re.S)
BOXED_RE = re.compile(r"\\boxed\{([^{}]*)\}")
# "the answer is B", "Answer: (B)", "final answer - b.", "option C", "choice: D"
SAYS_LETTER_RE = re.compile(
    r"(?i:\b(?:answer(?:\s+is)?|option|choice)\s*(?:is\s*)?[:\-]?)\s*\**\(?"
    r"(?:([A-H])(?=[\s.,;:)!*]|$)|([a-h])(?=[.,;:)!*]|\s*$))")
# a letter opening the text: "B", "B.", "B)", "B:", "(B)", "b." ("A red car" opens with an article, so a letter
# needs its punctuation or nothing after it)
LEADING_RE = re.compile(r"^\s*(?:\(([A-Ha-h])\)|([A-Ha-h])(?=[.):,]|\s*$))")


def final_turn(response: str | None) -> str:
    """The part of a response after its last tool reply (the whole text when it has none)."""
    text = response or ""
    cut = text.rfind("</tool_response>")
    return text[cut + len("</tool_response>"):] if cut >= 0 else text


def first_answer_block(text: str) -> str | None:
    """The text of the first `<answer>...</answer>`, stripped; None when there is none."""
    m = ANSWER_BLOCK_RE.search(text or "")
    return m.group(1).strip() if m else None


def published_prediction(response: str | None) -> str:
    """What DeepEyes' V* and HR-Bench evaluations score: the first `<answer>` block of the model's last turn
    when it has one, else that whole turn."""
    turn = final_turn(response)
    block = first_answer_block(turn) if "</answer>" in turn else None
    return block if block is not None else turn.strip()


def unwrap_boxed(text: str) -> str:
    """DeepEyes' unwrapping: from the first `\\boxed{` to the next `}` (no nesting)."""
    if "\\boxed" not in text or "\\boxed{" not in text:
        return text
    return text.split("\\boxed{", 1)[1].split("}", 1)[0]


def _plain(text: str) -> str:
    """Markdown emphasis and code marks removed, \\boxed{} unwrapped, whitespace collapsed."""
    text = BOXED_RE.sub(r"\1", text)
    text = re.sub(r"[*_`]+", "", text)
    return " ".join(text.split())


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]+", " ", text.lower()).split())


def _valid(letter: str | None, options: list[str]) -> str | None:
    if letter is None:
        return None
    letter = letter.upper()
    return letter if LETTERS.index(letter) < len(options) else None


def _option_by_text(text: str, options: list[str]) -> str | None:
    """The one option whose text the reply is, or holds, or (a reply of a few words) the one option that holds
    every word of it. None when no option or several fit."""
    said = _norm(text)
    if not said:
        return None
    norms = [_norm(o) for o in options]
    exact = [i for i, o in enumerate(norms) if o and o == said]
    if len(exact) == 1:
        return LETTERS[exact[0]]
    inside = [i for i, o in enumerate(norms) if o and re.search(rf"\b{re.escape(o)}\b", said)]
    # an option whose text holds another's ("left" in "upper left") counts once: keep the longest
    inside = [i for i in inside if not any(j != i and norms[i] in norms[j] for j in inside)]
    if len(inside) == 1:
        return LETTERS[inside[0]]
    if inside:
        return None
    words = said.split()
    if len(words) <= 3:  # "red" for "The board is red.": the one option holding every word of the reply
        holding = [i for i, o in enumerate(norms) if all(re.search(rf"\b{re.escape(w)}\b", o) for w in words)]
        if len(holding) == 1:
            return LETTERS[holding[0]]
    return None


def read_choice(response: str | None, options: list[str]) -> str | None:
    """Our reading of a multiple-choice reply: the letter of the one option it chose, or None.

    From the first `<answer>` block of the final turn (the whole final turn, thinking removed, without one):
    a letter on its own or opening the text ("B", "b.", "(B)", "B. red", "B\\nbecause ..."), `\\boxed{B}`,
    "the answer is B" / "option B", Markdown bold around any of them; without a letter, the one option whose
    text the reply is or holds, or for a reply of a few words the one option holding all of them. Two different
    letters, or no option, read as None.

    >>> opts = ["red", "blue", "green", "white"]
    >>> [read_choice(r, opts) for r in ["<answer>\\\\boxed{B}</answer>", "The answer is C.", "**D**", "b", "blue"]]
    ['B', 'C', 'D', 'B', 'B']
    >>> read_choice("<answer>A</answer> <answer>B</answer>", opts), read_choice("red or blue", opts)
    ('A', None)
    """
    turn = final_turn(response)
    block = first_answer_block(turn)
    text = block if block is not None else THINK_RE.sub(" ", turn)
    text = _plain(text)
    if not text:
        return None
    lines = [line.strip() for line in re.split(r"[\n]", (block if block is not None else text)) if line.strip()]
    first = _plain(lines[0]) if lines else text
    m = LEADING_RE.match(first)
    if m:
        letter = next(g for g in m.groups() if g)
        rest = first[m.end():]
        # "A or B", "A, B": hedging is no answer
        if not re.match(r"^\s*(?:,|/|&|or\b|and\b)\s*\(?[A-H]\b", rest):
            return _valid(letter, options)
        return None
    said = {(upper or lower).upper() for upper, lower in SAYS_LETTER_RE.findall(text)}
    if len(said) == 1:
        return _valid(said.pop(), options)
    if len(said) > 1:
        return None
    return _option_by_text(text, options)


def deepeyes_rule(prediction: str, letter: str, option: str, *, benchmark: str) -> bool | None:
    """What DeepEyes' scorer decides by rule (True right, False wrong), or None: it asks its judge.

    `prediction` is `published_prediction(...)`, `letter` the right option's letter, `option` its text. After
    `\\boxed{}` is unwrapped: a one-character prediction is right only if it is `letter` (case-sensitive); a
    two-character one holding a "." is right if it holds `letter`. Then V* (`benchmark="vstar"`): right when the
    prediction contains "<letter>. <option>"; HR-Bench (`"hrbench"`): right when it contains `letter` anywhere
    (its scorer tests the bare letter as a substring, so "B. blue" and also any capital B count). Anything else
    goes to the judge.

    >>> deepeyes_rule("\\\\boxed{A}", "A", "red", benchmark="vstar"), deepeyes_rule("a", "A", "red", benchmark="vstar")
    (True, False)
    >>> deepeyes_rule("The answer is A", "A", "red", benchmark="vstar") is None
    True
    """
    pred = unwrap_boxed(prediction)
    if len(pred) == 1:
        return pred == letter
    if len(pred) == 2 and "." in pred:
        return letter in pred
    if benchmark == "vstar":
        return True if f"{letter}. {option}" in pred else None
    if benchmark == "hrbench":
        return True if letter in pred else None
    raise ValueError(f"benchmark must be 'vstar' or 'hrbench', got {benchmark!r}")


def read_response(response: str | None, truth: str, options: list[str], *, benchmark: str) -> dict:
    """Every reading of one multiple-choice answer: ours (`letter`, `correct`), the text the published scorers
    read (`prediction`) and DeepEyes' rule on it (`rule`: None leaves it to the judge)."""
    letter = read_choice(response, options)
    prediction = published_prediction(response)
    rule = deepeyes_rule(prediction, truth, options[LETTERS.index(truth)], benchmark=benchmark)
    return {"letter": letter, "correct": letter == truth, "prediction": prediction, "rule": rule}


def judgement_verdict(reply: str) -> bool:
    """A DeepEyes-style judge reply read as their scorer reads it: after the last "Judgement:" (or the whole
    reply, which must then be exactly "1" or "0"), a "1" anywhere is right, else a "0" is wrong, else wrong.

    >>> judgement_verdict("Judgement: 1"), judgement_verdict("0"), judgement_verdict("I think 1")
    (True, False, False)
    """
    reply = reply.strip()
    if "Judgement:" in reply:
        return "1" in reply.split("Judgement:")[-1]
    return reply == "1"


def yes_verdict(reply: str) -> bool:
    """The official HR-Bench reading of a yes/no judge: a reply that starts with "yes" counts as right.

    >>> yes_verdict("Yes, it does."), yes_verdict("No."), yes_verdict("The answer is yes")
    (True, False, False)
    """
    return reply.strip().lower().startswith("yes")
