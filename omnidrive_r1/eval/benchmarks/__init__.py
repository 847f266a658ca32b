"""Benchmarks of `omnidrive-r1 eval --benchmark NAME`: one module each in this package (`docs/evaluation.md`).

A benchmark module defines `BENCHMARK`, an instance of a `Benchmark` subclass (the methods it must write are
listed there). Its rows carry idx, prompt, image (a file path), question, gt_boxes (original pixels, x1 y1 x2
y2; empty when the data has none) and fields (copied into the row's record).

Everything else (rolling out with the one rollout path, resumable per-row records, tool metrics, rows.jsonl and
summary.json) is shared, in `omnidrive_r1/eval/run.py`. Adding a benchmark is one module here and its tests:
modules are found by listing this package.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections import Counter
from dataclasses import dataclass, field

from omnidrive_r1.errors import UserError
from omnidrive_r1.protocol import mcq_letter

LETTERS = "ABCDEFGH"


@dataclass
class Loaded:
    """What a benchmark's `load` returns."""

    rows: list[dict]
    rows_in_file: int  # rows (or items) the file holds, before --limit and skipped rows
    skipped: Counter = field(default_factory=Counter)
    note: str = ""  # one line printed before generating (what was read, what was skipped)


class Benchmark:
    """What a benchmark module writes; everything it does not override is shared."""

    name = ""  # what --benchmark takes
    title = ""  # what summaries call it
    judge = None  # None, "drivelmm" (the 12-metric reasoning judge) or "yesno" (does the response answer it?)
    headline: tuple = ()  # summary keys printed at the end of a run

    def default_data(self) -> str:
        """The toydrive set in this benchmark's published format, generated on first use."""
        raise UserError(f"--data is needed: {self.title} has no toydrive set")

    def load(self, data: str, *, images_root: str | None = None, limit: int | None = None,
             system_prompt: str | None = None, **options) -> Loaded:
        """The rows of `data`, each prompt opened by `system_prompt` (the policy family's; None: the default)."""
        raise NotImplementedError

    def score(self, record: dict) -> dict:
        """The row's own figures; at least `correct` (True, False, or None for a row not scored by rule)."""
        raise NotImplementedError

    def judge_item(self, record: dict) -> dict:
        """What the judge is shown: idx, question, steps, final_answer, response."""
        raise NotImplementedError

    def judged(self, record: dict, judgment: dict | None) -> None:
        """Read the judge's row-level outcome into the record (after `record["judge"]` is set)."""

    def summarise(self, records: list[dict], judge_config, accounting: dict) -> dict:
        raise NotImplementedError

    def write_outputs(self, records: list[dict], summary: dict, out, title: str) -> None:
        """summary.md and summary.png (summary.json and rows.jsonl are written for every benchmark)."""
        raise NotImplementedError

    def produced_by(self, **options) -> dict:
        """Options of `load` that change which rows are evaluated (kept in run.json)."""
        return {k: v for k, v in options.items() if v}


def names() -> list[str]:
    """The benchmarks of this package, DriveLMM-o1 first."""
    found = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    return sorted(found, key=lambda n: (n != "drivelmm", n))


def get(name: str):
    if name not in names():
        raise UserError(f"--benchmark {name!r}: unknown; choose one of {', '.join(names())}")
    module = importlib.import_module(f"{__name__}.{name}")
    return module.BENCHMARK


# ------------------------------------------------------------------------- multiple choice, shared

def choice_prompt(question: str, options: list[str]) -> str:
    """A question with its lettered options, written as DriveLMM-o1 writes its multiple-choice questions
    ("... A) first B) second"), which is how our policies are trained to see them."""
    return " ".join([question.strip(), *(f"{LETTERS[i]}) {option}" for i, option in enumerate(options))])


def rotations(options: list[str], right: int = 0) -> list[tuple[list[str], str]]:
    """Every order of `options` that moves the right one (index `right`) through each position, in turn:
    rotation k puts it at position k. Returns (options in that order, the right letter) per rotation."""
    n = len(options)
    out = []
    for k in range(n):
        shift = (right - k) % n
        out.append(([options[(j + shift) % n] for j in range(n)], LETTERS[k]))
    return out


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]+", "", text.lower()).strip()


def choice_letter(text: str | None, options: list[str]) -> str | None:
    """The option a reply chose: its letter ("B", "B.", "(b)", "B) text"), or, without a letter, the one option
    whose text the reply is (or holds, when exactly one option's text occurs in it). None when undecidable.

    >>> choice_letter("B. red", ["blue", "red"]), choice_letter("It is red.", ["blue", "red"])
    ('B', 'B')
    >>> choice_letter("blue or red", ["blue", "red"]) is None
    True
    """
    if not text:
        return None
    letter = mcq_letter(text)
    if letter is not None:
        return letter if LETTERS.index(letter) < len(options) else None
    said = _norm(text)
    exact = [i for i, o in enumerate(options) if _norm(o) == said]
    if len(exact) == 1:
        return LETTERS[exact[0]]
    inside = [i for i, o in enumerate(options) if _norm(o) and re.search(rf"\b{re.escape(_norm(o))}\b", said)]
    # an option whose text holds another's ("left" in "upper left") counts once: keep the longest
    inside = [i for i in inside if not any(j != i and _norm(options[i]) in _norm(options[j]) for j in inside)]
    return LETTERS[inside[0]] if len(inside) == 1 else None


def reply_text(record: dict) -> str | None:
    """What a record answered: its `<answer>`, or the last line of the response when it wrote none."""
    if record.get("answer") is not None:
        return record["answer"]
    response = (record.get("response") or "").strip()
    return response.splitlines()[-1] if response else None


def percent(values: list) -> float | None:
    return 100.0 * sum(bool(v) for v in values) / len(values) if values else None


