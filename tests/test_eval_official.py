"""DriveLMM-o1 figures that stand next to the published ones: the official judge request byte for byte, the
official ground-truth reading, and `eval --results` scoring any results file (official parity issue).

The expected figures below are worked out by hand from the official script's rules, not computed by our code.
"""

import json

import pytest
from judge_server import JudgeServer

from omnidrive_r1.errors import UserError
from omnidrive_r1.eval.drivelmm_scoring import official_mcq_correct, official_truth_letter, our_mcq_correct
from omnidrive_r1.eval.judge import Judge, JudgeConfig, official_system_prompt

STAND_IN = 'import os\nopenai_api_key = ""\nsystem_prompt = """\nA stand-in evaluator prompt.\n"""\n'

# the request the official script sends for this row, recorded as bytes (our client's serialisation)
RECORDED = (
    b'{"model": "gpt-4o-mini", "messages": [{"role": "system", "content": "\\nA stand-in evaluator prompt.\\n"}, '
    b'{"role": "user", "content": [{"type": "text", "text": "Question: Is the light red?\\nGround Truth: '
    b'**Step-by-Step Reasoning**: Step 1: look. **Final Answer**: B) Yes.\\nLLM Response: The final answer is: B) Yes."'
    b'}]}], "response_format": {"type": "json_schema", "json_schema": {"name": "EvaluationScores", "strict": true, '
    b'"schema": {"type": "object", "properties": {"Faithfulness-Step": {"type": "number"}, "Informativeness-Step": '
    b'{"type": "number"}, "Risk Assessment Accuracy": {"type": "number"}, "Traffic Rule Adherence": {"type": "number"}, '
    b'"Scene Awareness & Object Understanding": {"type": "number"}, "Repetition-Token": {"type": "number"}, '
    b'"Hallucination": {"type": "number"}, "Semantic Coverage-Step": {"type": "number"}, "Commonsense": '
    b'{"type": "number"}, "Missing Step": {"type": "number"}, "Relevance": {"type": "number"}, "Missing Details": '
    b'{"type": "number"}, "Overall Score": {"type": "number"}}, "required": ["Faithfulness-Step", '
    b'"Informativeness-Step", "Risk Assessment Accuracy", "Traffic Rule Adherence", "Scene Awareness & Object '
    b'Understanding", "Repetition-Token", "Hallucination", "Semantic Coverage-Step", "Commonsense", "Missing Step", '
    b'"Relevance", "Missing Details", "Overall Score"], "additionalProperties": false}}}, "max_tokens": 500, '
    b'"temperature": 0.0}'
)


@pytest.fixture()
def server():
    s = JudgeServer()
    yield s
    s.close()


@pytest.fixture()
def stand_in(tmp_path):
    path = tmp_path / "evaluation_script.py"
    path.write_text(STAND_IN)
    return path


@pytest.mark.parametrize("truth, letter", [
    ("B) Slow down.", "B"), ("b) green", None), ("B. Slow down", None), ("B", None),
    ("The correct option is C) Stop", "C"), ("None of the above.", "F"), ("A) stop and B) go", "A"),
])
def test_ground_truth_letters_are_read_as_the_official_script_reads_them(truth, letter):
    assert official_truth_letter(truth) == letter


def test_official_comparison_counts_two_missing_letters_as_a_match_ours_does_not():
    assert official_mcq_correct(None, None) and not our_mcq_correct(None, None)
    assert official_mcq_correct("B", "B") and our_mcq_correct("B", "B")
    assert not official_mcq_correct("B", None) and not our_mcq_correct(None, "B")


def test_the_official_request_is_pinned_byte_for_byte(server, stand_in):
    config = JudgeConfig.official(stand_in, server.url, retries=0)
    judgment = Judge(config).judge_one("x_y_2", "Is the light red?", "Step 1: look.", "B) Yes.",
                                       "The final answer is: B) Yes.")
    assert judgment.scores is not None
    assert server.requests[0]["raw"] == RECORDED
    assert server.requests[0]["path"] == "/v1/chat/completions"


def test_the_official_prompt_is_read_from_the_users_script_and_never_invented(tmp_path):
    assert official_system_prompt_from(tmp_path, STAND_IN) == "\nA stand-in evaluator prompt.\n"
    with pytest.raises(UserError, match="assigns no string to `system_prompt`"):
        official_system_prompt_from(tmp_path, "prompt = 'x'\n")
    with pytest.raises(UserError, match="not found"):
        official_system_prompt(tmp_path / "missing.py")
    with pytest.raises(UserError, match="not a Python file"):
        official_system_prompt_from(tmp_path, "system_prompt = '''unclosed\n")


def official_system_prompt_from(folder, text):
    path = folder / "script.py"
    path.write_text(text)
    return official_system_prompt(path)


# --------------------------------------------------------------------------------- scoring a results file

# idx -> (ground-truth final answer, response). qnums 2, 3, 4, 5, 8 are MCQ.
ROWS = {
    "s_a_2": ("B) Slow down.", "The final answer is: B) Slow down. SCORE=8"),      # B vs B
    "s_b_3": ("b) green", "Final Answer: none SCORE=6"),                           # none vs none: official match
    "s_c_4": ("B. Slow down", "Answer: B) Slow down SCORE=4"),                      # none vs B
    "s_d_5": ("B", "B) without any marker SCORE=5"),                                # none vs none: official match
    "s_e_8": ("The correct option is C) Stop", "**Final Answer:** C) Stop SCORE=9"),  # C vs C
    "s_f_2": ("None of the above.", "Final Answer: none of the options SCORE=3"),   # F vs F
    "s_g_3": ("A) stop and B) go", "Final Answer: B) go SCORE=2"),                  # A vs B
    "s_k_4": ("A) x", "Final Answer: A) x ALWAYS-BAD"),                             # judge fails: official drops it
    "s_l_5": ("C) z", "Final Answer: B) y FENCED SCORE=5"),                         # literal_eval fails: dropped
    "s_h_1": ("The light is red.", "It is red. SCORE=7"),
    "s_i_6": ("They stop.", "They stop. NO-OVERALL SCORE=9"),                       # Overall Score missing: adds 0
    "s_j_7": ("Wait.", "Wait. SCALE-100 SCORE=8"),                                  # Overall Score 80: added as is
    "s_m_1": ("Unanswered.", None),                                                 # no response in the results
}


@pytest.fixture()
def results(tmp_path):
    test = [{"idx": idx, "image": ["x.jpg"] * 6, "question": f"Question {idx}?", "final_answer": truth,
             "steps": "Step 1: look."} for idx, (truth, _) in ROWS.items()]
    answers = [{"idx": idx, "question": f"Question {idx}?", "llm-response": response}
               for idx, (_, response) in ROWS.items() if response is not None]
    answers.append({"idx": "not_in_test_2", "question": "?", "llm-response": "Final Answer: A) x"})
    answers[0]["llm-response"] += " <answer>C) stop</answer>"  # our strict parser reads a results file's text too
    (tmp_path / "test.json").write_text(json.dumps(test))
    (tmp_path / "results.json").write_text(json.dumps(answers))
    return tmp_path


def test_scoring_a_results_file_gives_the_official_figures_and_ours(results, server, stand_in):
    from omnidrive_r1.eval.run import score_results

    config = JudgeConfig.official(stand_in, server.url, retries=1, backoff=0.01)
    summary = score_results(results / "results.json", results / "test.json", judge_config=config,
                            out=results / "scored")
    # official: the MCQ rows it keeps (s_k_4 and s_l_5 dropped): a, b, d, e, f right; c, g wrong -> 5 / 7
    assert summary["mcq_accuracy"] == pytest.approx(100 * 5 / 7)
    # official reasoning, over the 10 rows kept: 8+6+4+5+9+3+2 (MCQ) + 7 + 0 (missing) + 80 (out of 100)
    assert summary["reasoning_score"] == pytest.approx((8 + 6 + 4 + 5 + 9 + 3 + 2 + 7 + 0 + 80) / (10 * 10) * 100)
    assert summary["official_rows_kept"] == 10
    # ours: all 9 MCQ rows, no letter on either side is wrong: a, e, f, k right -> 4 / 9
    assert summary["mcq_accuracy_ours"] == pytest.approx(100 * 4 / 9)
    # ours: only s_k_4 fails; the fenced reply is read (5); a missing or out-of-range Overall Score is replaced by
    # the mean of the twelve metrics (9 and 8) -> 11 rows judged
    assert summary["judge_failures"] == 1 and summary["judged"] == 11
    assert summary["reasoning_score_ours"] == pytest.approx((8 + 6 + 4 + 5 + 9 + 3 + 2 + 5 + 7 + 9 + 8) / 110 * 100)
    assert summary["rows_in_test_set"] == 13 and summary["rows_evaluated"] == 12
    assert summary["rows_skipped"] == {"not in the test set": 1, "no response in the results file": 1}
    rows = {r["idx"]: r for r in map(json.loads, (results / "scored" / "rows.jsonl").read_text().splitlines())}
    assert rows["s_b_3"]["mcq_correct"] is True and rows["s_b_3"]["mcq_correct_ours"] is False
    first = next(iter(ROWS))
    assert rows[first]["strict_letter"] == "C" and all(r.get("strict_letter") is None for k, r in rows.items()
                                                        if k != first)
    assert rows["s_k_4"]["official_scores"] is None and rows["s_l_5"]["official_scores"] is None
    md = (results / "scored" / "summary.md").read_text()
    assert "the official system prompt, read from" in md and "Judge failures: 1 row " in md
    assert "1 no response in the results file" in md and "1 not in the test set" in md
    assert {r["body"]["messages"][0]["content"] for r in server.requests} == {"\nA stand-in evaluator prompt.\n"}


def test_our_reading_of_an_overall_score_out_of_range_is_the_mean_of_the_metrics():
    from omnidrive_r1.eval.drivelmm_scoring import METRICS
    from omnidrive_r1.eval.judge import parse_scores

    assert parse_scores(json.dumps({**{m: 8 for m in METRICS}, "Overall Score": 80}))["Overall Score"] == 8


def test_scoring_needs_a_readable_results_file(results):
    from omnidrive_r1.eval.run import score_results

    (results / "broken.json").write_text("[{")
    with pytest.raises(UserError, match="not a readable JSON results file"):
        score_results(results / "broken.json", results / "test.json", out=results / "x")
    (results / "dup.json").write_text(json.dumps([{"idx": "s_a_2", "llm-response": "a"}] * 2))
    with pytest.raises(UserError, match="appears twice"):
        score_results(results / "dup.json", results / "test.json", out=results / "y")


def test_a_train_shaped_file_keyed_by_idx_scores_as_its_test_shaped_twin(results):
    """DriveLMM-o1 TRAIN rows hold reasoning and final answer in one `answer`; scoring recovers both."""
    from omnidrive_r1.eval.run import score_results

    test = json.loads((results / "test.json").read_text())
    train = {r["idx"]: {"idx": r["idx"], "question": r["question"], "image": r["image"],
                        "answer": f"**Step-by-Step Reasoning**:\n\n{r['steps']}\n\n**Final Answer**: {r['final_answer']}"}
             for r in test}
    (results / "train.json").write_text(json.dumps(train))
    a = score_results(results / "results.json", results / "test.json", out=results / "a")
    b = score_results(results / "results.json", results / "train.json", out=results / "b")
    for key in ("mcq_accuracy", "mcq_accuracy_ours", "rows_evaluated", "rows_skipped", "mcq_rows"):
        assert a[key] == b[key], key
    rows_a, rows_b = ([json.loads(line) for line in (results / d / "rows.jsonl").read_text().splitlines()]
                      for d in "ab")
    assert [(r["final_answer"], r["steps"]) for r in rows_a] == [(r["final_answer"], r["steps"]) for r in rows_b]

    train["s_h_1"]["answer"] = "**Step-by-Step Reasoning**: no final part"  # counted, never dropped silently
    (results / "train.json").write_text(json.dumps(train))
    c = score_results(results / "results.json", results / "train.json", out=results / "c")
    assert c["rows_evaluated"] == a["rows_evaluated"] - 1 and c["rows_in_test_set"] == a["rows_in_test_set"]
    assert c["rows_skipped"]["no usable ground truth in the test set (no final answer)"] == 1
