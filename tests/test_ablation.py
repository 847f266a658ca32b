"""The pieces of the grounding-reward ablation (`docs/ablation.md`): the reluctant base's SFT mix, training on one
kind of question, evaluation of open rows and sampled evaluation, and the grid driver's reading rule."""

import json
from pathlib import Path

import pytest

from omnidrive_r1.toy import ablate, base


def test_a_reluctant_mix_keeps_the_box_proportions_and_answers_at_once_otherwise():
    mix = base.box_mix(0.25)
    assert sum(mix.values()) == pytest.approx(1.0)
    assert mix["no_zoom"] == pytest.approx(0.75)
    zoom = {k: v for k, v in base.BOX_MIX.items() if k != "no_zoom"}
    for kind, share in zoom.items():  # same proportions among the boxes as the shipped mix
        assert mix[kind] / 0.25 == pytest.approx(share / sum(zoom.values()))
    assert base.box_mix(None) is base.BOX_MIX
    for bad in (0, -0.1, 1.5):
        with pytest.raises(ValueError, match="zoom_share"):
            base.box_mix(bad)


def test_the_zoom_share_is_part_of_the_cache_key_and_the_shipped_key_is_unchanged():
    shipped = base.toy_base_key(0)
    assert base.toy_base_key(0, zoom_share=None) == shipped
    assert base.toy_base_key(0, zoom_share=0.25) not in (shipped, base.toy_base_key(0, zoom_share=0.5))


def test_a_reluctant_base_sees_mostly_direct_answers_in_its_protocol_phase(tiny_policy_dir):
    from omnidrive_r1.policies import build_processor, default
    from omnidrive_r1.toy.toydrive import toy_pixels

    lo, hi, _ = toy_pixels(default())
    processor = build_processor(tiny_policy_dir, min_pixels=lo, max_pixels=hi)

    def first_turns(share):
        examples = base.protocol_examples(processor, seed=3, frames=60, zoom_share=share)
        first = [ex for ex in examples if len(ex["prompt"]) == 2 and "image_zoom_in_tool" in
                 ex["prompt"][0]["content"][0]["text"]]  # first turns of prompts that offer the tool
        return sum(bool(ex["completion"][0].get("tool_calls")) for ex in first) / len(first)

    shipped, reluctant = first_turns(None), first_turns(0.25)
    assert shipped > 0.8 and 0.1 < reluctant < 0.4, (shipped, reluctant)


def test_recipes_train_on_one_kind_of_question(toydrive_dir, tmp_path):
    from omnidrive_r1.config import RecipeError, parse_recipe, validate
    from omnidrive_r1.train import load_data

    def rows(questions):
        recipe, _, _ = parse_recipe("recipes/toy/stage2.yaml", [
            "lab={}", f"data.path={toydrive_dir / 'drivelmm' / 'train.json'}", "lab.toydrive=null",
            f"data.questions={questions}", f"output_dir={tmp_path}"])
        ds = load_data(recipe, tmp_path / questions)
        return list(ds["is_mcq"]), json.loads((tmp_path / questions / "data_report.json").read_text())

    every, _ = rows("all")
    mcq, _ = rows("mcq")
    open_, report = rows("open")
    assert mcq == [True] * every.count(True) and open_ == [False] * every.count(False) and every.count(False)
    assert report["questions"] == "open" and report["rows_trained_on"] == len(open_)
    with pytest.raises(RecipeError, match="data.questions must be all, mcq or open"):
        validate(*parse_recipe("recipes/toy/stage2.yaml", ["data.questions=some"]))


def test_open_rows_are_scored_by_the_token_f1_of_their_answer_and_sampling_is_recorded(toydrive_dir, tiny_policy_dir,
                                                                                        tmp_path):
    from omnidrive_r1.eval import run as run_mod
    from omnidrive_r1.rewards.answer_accuracy import token_f1
    from omnidrive_r1.rollout import RolloutSettings

    settings = RolloutSettings(max_turns=1, max_completion_length=6)
    data = str(toydrive_dir / "drivelmm" / "test.json")
    summary = run_mod.evaluate(str(tiny_policy_dir), data, out=str(tmp_path / "open"), settings=settings,
                               open_only=True)
    rows = [json.loads(line) for line in (tmp_path / "open" / "rows.jsonl").read_text().splitlines()]
    assert summary["rows_evaluated"] == summary["open_rows"] == len(rows) == 3 and not any(r["is_mcq"] for r in rows)
    assert summary["rows_skipped"] == {"multiple-choice questions, left out by --open-only": 5}
    expected = [token_f1(r["answer"], r["final_answer"]) if r["answer"] else 0.0 for r in rows]
    assert [r["answer_f1"] for r in rows] == expected
    assert summary["open_answer_f1"] == pytest.approx(100 * sum(expected) / 3)
    sampled = run_mod.evaluate(str(tiny_policy_dir), data, out=str(tmp_path / "sampled"), settings=settings,
                               mcq_only=True, sample=True)
    produced = json.loads((tmp_path / "sampled" / "run.json").read_text())
    assert produced["sample"] == {"temperature": settings.temperature, "seed": run_mod.SAMPLE_SEED}
    assert sampled["rows_evaluated"] == 5


def test_eval_refuses_both_row_filters_at_once(capsys):
    from omnidrive_r1.cli import main

    assert main(["eval", "--model", "x", "--mcq-only", "--open-only"]) == 2
    assert "leave no row" in capsys.readouterr().err


def test_the_reading_rule_calls_a_difference_only_beyond_the_seed_spread():
    assert ablate.compare([0.6, 0.7, 0.8], [0.3, 0.35, 0.4]).startswith("higher")
    assert ablate.compare([0.3, 0.35, 0.4], [0.6, 0.7, 0.8]).startswith("lower")
    assert ablate.compare([0.5, 0.6, 0.9], [0.4, 0.45, 0.5]).startswith("no difference")  # 0.23 < spread 0.4


def test_the_grid_writes_its_figures_below_the_committed_plan_only(tmp_path):
    doc = tmp_path / "ablation.md"
    doc.write_text(f"# plan\nkeep me\n{ablate.START}\nold\n{ablate.END}\nafter\n")
    ablate.write_results(doc, "new figures")
    assert doc.read_text() == f"# plan\nkeep me\n{ablate.START}\nnew figures\n{ablate.END}\nafter\n"
    plain = tmp_path / "plain.md"
    plain.write_text("# a plan without the marker\n")
    with pytest.raises(SystemExit, match="results marker"):
        ablate.write_results(plain, "x")


def test_every_cell_trains_with_its_own_base_and_reward(tmp_path):
    from omnidrive_r1.config import load_recipe_dict

    out = Path("outputs/ablate")
    for reward, names in (("plain", ["answer_accuracy", "format"]), ("bonus", ["answer_accuracy", "format", "tool_bonus"]),
                          ("clip", ["answer_accuracy", "format", "clip_grounding"])):
        raw = load_recipe_dict("recipes/toy/stage1.yaml", [*ablate.toy_overrides(out, "reluctant"),
                                                           *ablate.reward_overrides(out, "reluctant", reward)])
        assert [r["name"] for r in raw["rewards"]] == names
        # the weights are the toy recipe's (answer 1.0, format 0.2), the bonus at the CLIP term's (0.5)
        assert [r["weight"] for r in raw["rewards"]] == [1.0, 0.2, 0.5][:len(names)]
        if reward == "bonus":
            assert raw["rewards"][2] == {"name": "tool_bonus", "weight": 0.5, "threshold": 0.5}
        assert raw["lab"]["toy_base"] == {"out": str(out / "reluctant-base"), "seed": 0, "zoom_share": 0.25}
        assert raw["model_name_or_path"] == str(out / "reluctant-base" / "policy")
        if reward == "clip":
            assert raw["rewards"][2]["model_name"] == f"local-dir:{out / 'reluctant-base' / 'clip'}"
            assert raw["rewards"][2]["margin"] == 0.5
    raw = load_recipe_dict("recipes/toy/stage1.yaml", ablate.toy_overrides(out, "shipped"))
    assert "zoom_share" not in raw["lab"]["toy_base"]


def test_a_seed_without_a_figure_is_named_not_averaged_away():
    assert ablate._fmt([0.61, None, None], ".3f") == "0.610, 1 of 3 seeds"
    assert ablate._fmt([0.5, 0.6, 0.7], ".2f") == "0.60 (0.50 to 0.70)"
    assert ablate._fmt([None, None], ".2f") == "-"


def test_writing_the_page_again_keeps_the_wall_time_of_the_run_that_did_the_work(tmp_path):
    record = tmp_path / "wall.json"
    first = ablate.wall_time(record, 79.2, 7.8, runs=61)
    assert first == {"minutes": 79.2, "bases_minutes": 7.8, "runs": 61}
    assert ablate.wall_time(record, 0.4, 0.1, runs=0) == first  # every run reused: the recorded time stands
    assert ablate.wall_time(record, 12.0, 0.1, runs=3)["minutes"] == 12.0  # a resumed grid reports its own time
