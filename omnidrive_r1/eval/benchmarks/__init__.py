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
from collections import Counter
from dataclasses import dataclass, field

from omnidrive_r1.errors import UserError

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
    judge = None  # None, or the kind of question its judge is asked: "drivelmm" (the 12-metric reasoning judge),
    # "yesno" (does the response answer it correctly?), "consistency" (do two answers agree?); see judge_asks
    headline: tuple = ()  # summary keys printed at the end of a run

    def load(self, data: str, *, images_root: str | None = None, limit: int | None = None,
             system_prompt: str | None = None, images: bool = True, **options) -> Loaded:
        """The rows of `data`, each prompt opened by `system_prompt` (the policy family's; None: the default);
        `images=False` reads what scoring needs without the images (`eval --results`)."""
        raise NotImplementedError

    def score(self, record: dict) -> dict:
        """The row's own figures; at least `correct` (True, False, or None for a row not scored by rule)."""
        raise NotImplementedError

    def judge_asks(self, record: dict) -> dict[str, dict]:
        """What the judge is asked about a scored row, by kind of question ("drivelmm", "yesno", "consistency"):
        each an item with idx, question, steps, final_answer, response. A row the rules decide asks nothing."""
        return {}

    def judged(self, record: dict, judgments: dict[str, dict]) -> None:
        """Read the judge's outcomes (kind -> judgment with its raw reply) into the record."""

    def summarise(self, records: list[dict], judge_config, accounting: dict) -> dict:
        raise NotImplementedError

    def write_outputs(self, records: list[dict], summary: dict, out, title: str) -> None:
        """summary.md and summary.png (summary.json and rows.jsonl are written for every benchmark)."""
        raise NotImplementedError

    def result_row(self, given: str, rows: dict[str, dict]) -> str | None:
        """The row (`rows`: idx -> row) a results file's id names (`eval --results`); None when none."""
        return given if given in rows else None

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


def protocol_status(rows: list[dict], key: str, rule_key: str, judge_on: bool) -> dict:
    """How a published protocol's verdicts (`key`) came about over `rows`: decided by its rules (`rule_key` not
    None), asked of the judge, left undecided because no judge was given, or failed at the judge. A row without
    a verdict counts as wrong in the figures; `rule_only` says the figure is not the published protocol's."""
    open_rows = [r for r in rows if r.get(rule_key) is None]
    no_verdict = sum(r.get(key) is None for r in open_rows)
    return {"decided_by_rule": len(rows) - len(open_rows), "asked_judge": len(open_rows) if judge_on else 0,
            "undecided_without_judge": 0 if judge_on else len(open_rows),
            "judge_failures": no_verdict if judge_on else 0, "rule_only": not judge_on and bool(open_rows)}


def percent(values: list) -> float | None:
    return 100.0 * sum(bool(v) for v in values) / len(values) if values else None


