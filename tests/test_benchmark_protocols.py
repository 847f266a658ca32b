"""V* Bench and HR-Bench scored as the published figures were: crafted answer sets whose figures under each
protocol are computed by hand below, `eval --results` on hand-written results files (no model), the answer-form
table of docs/benchmarks.md, and the rule-only marking without a judge.

The stand-in judge (`tests/judge_server.py`, `verdicts="content"`) is deterministic: an answer is right when it
opens with the reference letter as a word (case-sensitive), says "answer is X", or holds the reference option's
text. Each expected figure below is worked out from that rule and the public protocols' rules."""

import base64
import csv
import io
import json

import pytest
from judge_server import JudgeServer
from PIL import Image

from omnidrive_r1.errors import UserError
from omnidrive_r1.eval.benchmarks.hrbench import COLUMNS, cycle_figures
from omnidrive_r1.eval.choice_reading import deepeyes_rule, published_prediction, read_choice
from omnidrive_r1.eval.judge import JudgeConfig
from omnidrive_r1.eval.run import score_choice_results

COLOURS = ["red", "blue", "green", "white"]

# ---------------------------------------------------------------------------------- the answer-form table
# (form, response, our letter, DeepEyes' V* rule with the right option A "red": True / False / None = its judge)
FORMS = [
    ("bare letter", "<answer>A</answer>", "A", True),
    ("lowercase letter", "<answer>a</answer>", "A", False),
    ("letter and dot", "<answer>A.</answer>", "A", True),
    ("letter, dot and option", "<answer>A. red</answer>", "A", True),
    ("letter and parenthesis", "<answer>A) red</answer>", "A", None),
    ("\\boxed{}", "<answer>\\boxed{A}</answer>", "A", True),
    ("\\boxed{} in a sentence", "<answer>The answer is \\boxed{A}.</answer>", "A", True),
    ("the answer is X", "<answer>The answer is A</answer>", "A", None),
    ("Markdown bold", "<answer>**A**</answer>", "A", None),
    ("letter, then an explanation line", "<answer>A\nThe board is red.</answer>", "A", None),
    ("option text", "<answer>red</answer>", "A", None),
    ("a word of an option", "<answer>light</answer>", "B", None),
    ("two answer blocks", "<answer>B</answer> <answer>A</answer>", "B", False),
    ("no answer block", "<think>...</think> It is red.", "A", None),
    ("two letters", "<answer>A or B</answer>", None, None),
]


@pytest.mark.parametrize("form, response, ours, rule", FORMS, ids=[f[0] for f in FORMS])
def test_each_answer_form_reads_as_the_docs_table_says(form, response, ours, rule):
    options = ["red", "light blue", "green", "white"]
    assert read_choice(response, options) == ours
    assert deepeyes_rule(published_prediction(response), "A", "red", benchmark="vstar") is rule


def test_the_docs_table_lists_every_form():
    from pathlib import Path

    table = (Path(__file__).parent.parent / "docs" / "benchmarks.md").read_text()
    for form, *_ in FORMS:
        assert f"| {form} |" in table, form


def test_deepeyes_hrbench_rule_takes_a_capital_letter_anywhere():
    # its scorer tests the right letter as a substring: "Both ..." is right when B is the answer
    assert deepeyes_rule("Both are red.", "B", "blue", benchmark="hrbench") is True
    assert deepeyes_rule("red", "A", "red", benchmark="hrbench") is None  # to its judge, shown the letter alone
    assert deepeyes_rule("b", "B", "blue", benchmark="hrbench") is False


# ------------------------------------------------------------------------------------------- V* Bench set

# (category, item, options, response); the right option is first in each file (A in file order)
VSTAR = [
    ("direct_attributes", "i01", COLOURS, "<answer>A</answer>"),                    # rule right,  ours right
    ("direct_attributes", "i02", COLOURS, "<answer>\\boxed{A}</answer>"),           # rule right,  ours right
    ("direct_attributes", "i03", COLOURS, "<answer>a</answer>"),                    # rule wrong,  ours right
    ("direct_attributes", "i04", COLOURS, "<answer>A. red</answer>"),               # rule right,  ours right
    ("direct_attributes", "i05", COLOURS, "<answer>B</answer><answer>A</answer>"),  # rule wrong,  ours wrong
    ("direct_attributes", "i06", COLOURS, "<answer>The answer is A</answer>"),      # judge right, ours right
    ("direct_attributes", "i07", COLOURS, "<answer>red</answer>"),                  # judge right, ours right
    ("direct_attributes", "i08", COLOURS, "<answer>A\nThe board is red.</answer>"),  # judge right, ours right
    ("direct_attributes", "i09", COLOURS, "<answer>**A**</answer>"),                # judge right, ours right
    ("direct_attributes", "i10", COLOURS, "<answer>B. blue</answer>"),              # judge wrong, ours wrong
    ("direct_attributes", "i11", COLOURS, "I think it is blue"),                    # judge wrong, ours wrong
    ("relative_position", "p01", ["left", "right"], "<answer>A</answer>"),          # rule right,  ours right
    ("relative_position", "p02", ["left", "right"], "<answer>The board is on the left side.</answer>"),  # judge right
    ("relative_position", "p03", ["left", "right"], "<answer>B</answer>"),          # rule wrong,  ours wrong
]


def _vstar_files(tmp_path):
    root = tmp_path / "vstar"
    for category, item, options, _ in VSTAR + [("relative_position", "p04", ["left", "right"], None)]:
        (root / category).mkdir(parents=True, exist_ok=True)
        (root / category / f"{item}.json").write_text(json.dumps(
            {"target_object": ["board"], "bbox": [[1, 1, 4, 4]], "question": f"Which is it ({item})?",
             "options": options}))
    rows = []
    for n, (category, item, _, response) in enumerate(VSTAR):
        # three ways of naming a row: category/item, category/item#r0, or the item alone
        idx = [f"{category}/{item}", f"{category}/{item}#r0", item][n % 3]
        rows.append({"idx": idx, "response": response})
    rows.append({"idx": "direct_attributes/unknown", "response": "A"})
    results = tmp_path / "vstar_results.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root, results


def _judged(results, data, benchmark, out):
    """`results` scored with the deterministic stand-in judge (tests/judge_server.py, verdicts from the content):
    the summary and the requests the judge received."""
    server = JudgeServer(verdicts="content")
    try:
        return score_choice_results(results, data, benchmark=benchmark, out=out,
                                    judge_config=JudgeConfig.yes_no(server.url, "judge-test", retries=0)), server
    finally:
        server.close()


def test_vstar_results_file_under_deepeyes_protocol_with_a_judge(tmp_path):
    root, results = _vstar_files(tmp_path)
    s, server = _judged(results, root, "vstar", tmp_path / "e")
    p = s["deepeyes_protocol"]
    # right by rule: i01 i02 i04 p01; by the judge: i06 i07 i08 i09 p02 -> 9 of 14
    assert p["accuracy"] == pytest.approx(100 * 9 / 14)
    assert p["by_category"] == pytest.approx({"direct_attributes": 100 * 7 / 11, "relative_position": 100 * 2 / 3})
    assert (p["decided_by_rule"], p["asked_judge"], p["judge_failures"], p["rule_only"]) == (7, 7, 0, False)
    assert len(server.requests) == 7 and all("Judgement" in r["body"]["messages"][0]["content"]
                                             for r in server.requests)
    asked = server.requests[0]["body"]["messages"][1]["content"]
    assert "Standard answer: A. " in asked and "Which is it" in asked and " A) " not in asked  # the item's question
    # ours: every row but i05, i10, i11, p03 -> 10 of 14
    assert s["accuracy_file_order"] == pytest.approx(100 * 10 / 14) and s["accuracy_rotated"] is None
    assert s["rows_skipped"] == {"not in the benchmark's data": 1, "no response in the results file": 1}
    md = (tmp_path / "e" / "summary.md").read_text()
    assert "DeepEyes' protocol (%)" in md and "Rule-only" not in md and (tmp_path / "e" / "summary.png").exists()


def test_vstar_without_a_judge_is_marked_rule_only_in_summary_plot_and_view(tmp_path):
    from omnidrive_r1.view import write_view

    root, results = _vstar_files(tmp_path)
    s = score_choice_results(results, root, benchmark="vstar", out=tmp_path / "e")
    p = s["deepeyes_protocol"]
    assert p["accuracy"] == pytest.approx(100 * 4 / 14) and p["rule_only"] is True  # i01 i02 i04 p01
    assert (p["decided_by_rule"], p["asked_judge"], p["undecided_without_judge"]) == (7, 0, 7)
    md = (tmp_path / "e" / "summary.md").read_text()
    assert "rules only (%)" in md and "Rule-only figure, not the published protocol" in md
    write_view(tmp_path / "e", tmp_path / "v.html")
    page = (tmp_path / "v.html").read_text()
    assert "rule-only figure 28.6%, not the published protocol (7 rows" in page
    assert "no verdict (no judge)" in page and "right (rule)" in page


# ------------------------------------------------------------------------------------------- HR-Bench set

# (index, cycle, category, right letter, response)
HRBENCH = [
    ("1", "c0", "single", "A", "<answer>A</answer>"),
    ("2", "c0", "single", "B", "<answer>b</answer>"),
    ("3", "c0", "cross", "C", "<answer>C\nBecause the light is green.</answer>"),
    ("4", "c0", "cross", "D", "<answer>The answer is \\boxed{D}</answer>"),
    ("5", "c1", "single", "A", "<answer>red</answer>"),
    ("6", "c1", "single", "B", "<answer>A</answer>"),
    ("7", "c1", "cross", "B", "<answer>Both are red.</answer>"),
    ("8", "c1", "cross", "D", "I cannot tell."),
]


def _png_b64():
    buf = io.BytesIO()
    Image.new("RGB", (16, 8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _hrbench_files(tmp_path):
    data = tmp_path / "hr_bench_4k.tsv"
    with open(data, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, delimiter="\t")
        w.writeheader()
        for index, cycle, category, truth, _ in HRBENCH:
            w.writerow({"index": index, "question": "What does the board show?", "answer": truth,
                        **dict(zip("ABCD", COLOURS)), "category": category, "cycle_category": cycle,
                        "image": _png_b64() if index == "1" else "1"})
    results = tmp_path / "hr_results.json"
    results.write_text(json.dumps([{"index": int(i), "prediction": r} for i, *_, r in HRBENCH]))
    return data, results


def test_hrbench_results_file_under_each_protocol_by_hand(tmp_path):
    data, results = _hrbench_files(tmp_path)
    s, server = _judged(results, data, "hrbench", tmp_path / "e")
    # official: the yes/no judge on every row's whole answer: right 1, 3, 5.
    # c0: single 1/2, cross 1/2, all 2/4; c1: single 1/2, cross 0/2, all 1/4 -> means over the two cycles
    off = s["official_protocol"]
    assert off["accuracy"] == pytest.approx(37.5) and off["by_category"] == pytest.approx({"cross": 25.0, "single": 50.0})
    assert (off["asked_judge"], off["judge_failures"], off["computed"]) == (8, 0, True)
    # DeepEyes: rules right on 1, 3, 4 (\boxed{D}), 7 (a capital B in "Both"); its judge, shown the letter alone,
    # rejects 5 ("red") and 8 -> single 1/4, cross 3/4, overall their mean
    de = s["deepeyes_protocol"]
    assert de["by_category"] == pytest.approx({"cross": 75.0, "single": 25.0}) and de["accuracy"] == pytest.approx(50.0)
    assert (de["decided_by_rule"], de["asked_judge"], de["rule_only"]) == (6, 2, False)
    # ours: right on 1 to 5. c0 all 4/4, c1: single 1/2, cross 0/2, all 1/4
    assert s["accuracy"] == pytest.approx(62.5) and s["by_category"] == pytest.approx({"cross": 50.0, "single": 75.0})
    kinds = sorted(r["body"]["messages"][0]["content"][:20] for r in server.requests)
    assert len(kinds) == 10  # 8 yes/no + 2 consistency questions
    whole = [r for r in server.requests if "Because the light is green." in str(r["body"]["messages"][1]["content"])]
    assert whole, "the official judge sees the whole answer, not its last line"
    md = (tmp_path / "e" / "summary.md").read_text()
    assert "official protocol (%)" in md and "DeepEyes scorer" in md


def test_hrbench_without_a_judge_has_no_official_figure_and_a_rule_only_deepeyes_one(tmp_path):
    data, results = _hrbench_files(tmp_path)
    s = score_choice_results(results, data, benchmark="hrbench", out=tmp_path / "e")
    assert s["official_protocol"]["accuracy"] is None and s["official_protocol"]["computed"] is False
    de = s["deepeyes_protocol"]
    assert de["rule_only"] and de["undecided_without_judge"] == 2 and de["accuracy"] == pytest.approx(50.0)
    assert "**not computed**" in (tmp_path / "e" / "summary.md").read_text()


def test_a_category_missing_from_a_cycle_still_counts_that_cycle():
    records = [{"cycle_category": "c0", "category": "single", "correct": True},
               {"cycle_category": "c0", "category": "cross", "correct": True},
               {"cycle_category": "c1", "category": "single", "correct": True}]
    got = cycle_figures(records, "correct")
    assert got["by_category"] == {"cross": 50.0, "single": 100.0}  # cross: (100 + nothing) / 2 cycles


# ----------------------------------------------------------------------------------------- command line

def test_eval_results_from_the_command_line_scores_a_vstar_file(tmp_path, capsys):
    from omnidrive_r1.cli import main

    root, results = _vstar_files(tmp_path)
    assert main(["eval", "--results", str(results), "--benchmark", "vstar", "--data", str(root),
                 "--out", str(tmp_path / "cli")]) == 0
    summary = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert summary["deepeyes_protocol"]["rule_only"] and summary["by_category"]["relative_position"]["items"] == 3


def test_a_results_file_without_ids_is_refused_with_what_it_needs(tmp_path):
    root, _ = _vstar_files(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"text": "A"}]))
    with pytest.raises(UserError, match="needs an id"):
        score_choice_results(bad, root, benchmark="vstar", out=tmp_path / "e")
    bad.write_text(json.dumps([{"idx": "nothing/here", "response": "A"}]))
    with pytest.raises(UserError, match="no row names a row"):
        score_choice_results(bad, root, benchmark="vstar", out=tmp_path / "e2")
