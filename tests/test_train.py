"""`omnidrive-r1 train`: recipes, early errors, the two toy stages, DeepSpeed ZeRO-2/3 and resume."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from omnidrive_r1.config import (
    DataSection,
    RecipeError,
    RewardEntry,
    ToolEntry,
    load_recipe_dict,
    parse_recipe,
)
from omnidrive_r1.train import check_recipe, train

ROOT = Path(__file__).resolve().parents[1]
TOY1, TOY2 = ROOT / "recipes/toy/stage1.yaml", ROOT / "recipes/toy/stage2.yaml"
PAPER1, PAPER2 = ROOT / "recipes/omnidrive_r1/stage1.yaml", ROOT / "recipes/omnidrive_r1/stage2.yaml"


def _data_overrides(toydrive_dir, kind="deepeyes"):
    path = toydrive_dir / ("deepeyes/train.parquet" if kind == "deepeyes" else "drivelmm/train.json")
    return [f"data.path={path}"]


@pytest.fixture()
def tiny(tiny_models, toydrive_dir):
    """The tiny models, and the session's small toydrive as the data (`lab={}` builds none)."""
    return [*tiny_models, *_data_overrides(toydrive_dir)]


# ------------------------------------------------------------------------------------------------- recipes

def test_overrides_win_over_the_file_and_reach_into_sections(toydrive_dir, tmp_path):
    recipe, grpo, model = parse_recipe(TOY1, ["learning_rate=3e-4", "data.limit=5", "rewards.clip_grounding.margin=0.2",
                                              "save_strategy=no", f"output_dir={tmp_path}"])
    assert grpo.learning_rate == 3e-4 and DataSection.of(recipe.data).limit == 5 and recipe.rewards[2].options["margin"] == 0.2
    assert grpo.save_strategy == "no" and model.model_name_or_path == "outputs/toy/base/policy"
    assert recipe.preset == "toy" and recipe.stage == "stage1" and grpo.num_generations == 4


def test_tools_and_rewards_are_addressed_by_name_in_overrides():
    base = load_recipe_dict(TOY1)
    names = [r["name"] for r in base["rewards"]]
    assert names == ["answer_accuracy", "format", "clip_grounding"]
    raw = load_recipe_dict(TOY1, ["rewards.clip_grounding.weight=0", "tools.zoom_in.max_crop_pixels=12544",
                                  "rewards.brevity={path: rewards/brevity.py:brevity, weight: 0.1}",
                                  "rewards.brevity.max_chars=300", "rewards.format=null"])
    assert [r.get("name") or r["path"] for r in raw["rewards"]] == [
        "answer_accuracy", "clip_grounding", "rewards/brevity.py:brevity"]
    assert raw["rewards"][1]["weight"] == 0 and raw["rewards"][1]["margin"] == base["rewards"][2]["margin"]
    assert raw["rewards"][2] == {"path": "rewards/brevity.py:brevity", "weight": 0.1, "max_chars": 300}
    assert raw["tools"][0]["max_crop_pixels"] == 12544 and raw["tools"][0]["max_tool_calls"] == 2
    # a whole entry under a new name appends it, named; an index still works; a bare name takes options
    raw = load_recipe_dict(TOY1, ["rewards.tool_bonus={weight: 0.5}", "rewards.0.weight=2", "tools=[zoom_in]",
                                  "tools.zoom_in.max_tool_calls=1"])
    assert raw["rewards"][3] == {"name": "tool_bonus", "weight": 0.5} and raw["rewards"][0]["weight"] == 2
    assert raw["tools"] == [{"name": "zoom_in", "max_tool_calls": 1}]


@pytest.mark.parametrize("overrides, message", [
    (["rewards.clip_grounding_x.weight=0"], "rewards has no entry named 'clip_grounding_x' "
                                            r"\(its entries: answer_accuracy, format, clip_grounding\)"),
    (["rewards.7.weight=0"], "rewards has 3 entries; use an index from 0 to 2"),
    (["rewards.format2={name: format}", "rewards.format.weight=1"], "2 entries named 'format'"),
    (["learning_rate.x=1"], "learning_rate is not a section"),
])
def test_an_override_that_names_no_entry_says_which_there_are(overrides, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe_dict(TOY1, overrides)


@pytest.mark.parametrize("field", ["reward_weights", "reward_funcs"])
def test_a_recipe_that_sets_trls_reward_fields_is_told_where_weights_go(field):
    with pytest.raises(RecipeError, match=rf"{field}: the recipe's `rewards` section decides .*rewards.format.weight"):
        parse_recipe(TOY1, [f"{field}=[1.0, 0.2, 0.5]"])


def test_tools_and_rewards_are_typed_entries_and_round_trip_to_the_recipe_form():
    recipe, _, _ = parse_recipe(TOY1, ["rewards.brevity={path: rewards/brevity.py:brevity, weight: 0.1}"])
    assert [type(e) for e in recipe.tools] == [ToolEntry] and all(isinstance(e, RewardEntry) for e in recipe.rewards)
    clip, brevity = recipe.rewards[2], recipe.rewards[3]
    assert (clip.name, clip.weight, brevity.label, brevity.weight) == ("clip_grounding", 0.5, "brevity", 0.1)
    assert "weight" not in clip.options and clip.options["margin"] == load_recipe_dict(TOY1)["rewards"][2]["margin"]
    raw = load_recipe_dict(TOY1)
    assert [e.as_recipe() for e in recipe.tools] == raw["tools"]
    assert [e.as_recipe() for e in recipe.rewards[:3]] == [{**r, "weight": float(r["weight"])} for r in raw["rewards"]]


@pytest.mark.parametrize("overrides, message", [
    (["rewards.format.weight=heavy"], r"rewards\.format\.weight: must be a number, got 'heavy'"),
    (["rewards.format.weight=.nan"], r"rewards\.format\.weight: must be a number"),
    (["tools=[{max_tool_calls: 2}]"], r"tools\.0: .* must be a name or"),
    (["rewards.1={name: 3}"], r"rewards\.3\.name: 3 must be a string"),
    (["rewards.again={name: format}"], "rewards: names must be unique"),
])
def test_a_bad_tool_or_reward_entry_is_named_by_its_name_or_place(overrides, message):
    with pytest.raises(RecipeError, match=message):
        parse_recipe(TOY1, overrides)


def test_paper_recipes_parse_with_every_knob_set():
    for path in (PAPER1, PAPER2):
        raw = load_recipe_dict(path)
        for knob in ("num_generations", "loss_type", "beta", "epsilon", "learning_rate", "max_completion_length",
                     "max_tool_calling_iterations", "use_vllm", "vllm_mode", "bf16"):
            assert knob in raw, (path.name, knob)
        # the fields exist in GRPOConfig / ModelConfig / RecipeArguments (parsed as on a CPU machine)
        recipe, grpo, _ = parse_recipe(path, ["require_gpu=false", "bf16=false", "use_cpu=true"])
        assert grpo.use_vllm and grpo.vllm_mode == "colocate" and recipe.tools[0].options["max_tool_calls"] == 4


@pytest.mark.parametrize("overrides, message", [
    (["nonsense_field=1"], "nonsense_field"),
    (["per_device_train_batch_size=3", "num_generations=2"], "num_generations"),
    (["learning_rate=fast"], "wrong type|learning_rate|could not convert"),
    (["oops"], "key=value"),
])
def test_bad_fields_are_named(overrides, message):
    with pytest.raises(RecipeError, match=message):
        parse_recipe(TOY1, overrides)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU refusal")
def test_paper_preset_without_gpu_fails_before_anything_heavy():
    with pytest.raises(RecipeError, match="needs a CUDA GPU.*require_gpu"):
        parse_recipe(PAPER1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU refusal")
def test_vllm_server_mode_without_cuda_is_refused_before_anything_heavy(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else real(name, *a))
    recipe, grpo, model_args = parse_recipe(TOY1, ["use_vllm=true", "vllm_mode=server"])
    with pytest.raises(RecipeError, match="vllm_mode: server .* needs a CUDA GPU.*docs/multinode.md"):
        check_recipe(recipe, grpo, model_args)


def test_server_mode_checks_the_image_token_counts_the_server_expanded_to():
    from omnidrive_r1.trainer import check_server_features

    pad, prompt = 9, [1, 9, 9, 9, 9, 2, 9, 9, 3]  # a frame of 4 image tokens, then a crop of 2
    placed = []
    served = {"mm_placeholders": {"image": [{"offset": 1, "length": 4}, {"offset": 6, "length": 2}]}}
    check_server_features(lambda f, p: placed.append(p) or "placed", pad, served, prompt)
    assert placed == [prompt]
    other = {"mm_placeholders": {"image": [{"offset": 1, "length": 6}, {"offset": 8, "length": 2}]}}
    with pytest.raises(RuntimeError, match=r"expands the images to \[6, 2\] image tokens where the trainer has \[4, 2\]"):
        check_server_features(lambda f, p: None, pad, other, prompt)


@pytest.mark.parametrize("overrides, message", [
    (["data.path=/nope/train.parquet"], "data.path: /nope/train.parquet not found"),
    (["use_vllm=true"], "use_vllm: true, but vllm is not installed"),
    (["init_from=/nope/final"], "init_from: /nope/final holds no model.*make stage1"),
    (["data.kind=coco"], "data.kind must be"),
    (["data.sources=vstar"], "data.sources: a list of data_source names, got 'vstar'"),
    (["data.shuffle=true"], r"data: unknown key\(s\) \['shuffle'\]"),
    (["rewards=[]"], "rewards"),
])
def test_configurations_that_cannot_work_fail_naming_the_field(overrides, message, tiny):
    recipe, grpo, model = parse_recipe(TOY1, [*tiny, *overrides])
    if overrides == ["use_vllm=true"] and __import__("importlib").util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    with pytest.raises(RecipeError, match=message):
        check_recipe(recipe, grpo, model)


def test_unknown_reward_fails_before_the_model_is_loaded(toydrive_dir, tmp_path, monkeypatch, tiny):
    import omnidrive_r1.train as train_mod

    monkeypatch.setattr(train_mod, "load_policy", lambda *a, **k: pytest.fail("model loaded before the check"))
    with pytest.raises(ValueError, match="unknown reward 'nope'"):
        train(TOY1, [*_data_overrides(toydrive_dir), *tiny, "rewards=[{name: nope}]", f"output_dir={tmp_path}"])


# ------------------------------------------------------------------------------------------- toy stages

@pytest.mark.slow
def test_toy_stage1_then_stage2_leave_the_promised_outputs(toydrive_dir, tiny_policy_dir, tmp_path, tiny):
    s1, s2 = tmp_path / "stage1", tmp_path / "stage2"
    common = ["max_steps=2", "per_device_train_batch_size=4", "save_steps=1", "save_total_limit=1", *tiny]
    final1 = train(TOY1, [*common, *_data_overrides(toydrive_dir), f"output_dir={s1}"])
    final2 = train(TOY2, [*common, *_data_overrides(toydrive_dir, "drivelmm"), f"output_dir={s2}",
                          f"init_from={final1}", f"model_name_or_path={final1}"])
    for out, final in ((s1, final1), (s2, final2)):
        assert final == out / "final" and (final / "model.safetensors").exists()
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        steps = [r for r in rows if "reward" in r]
        assert [r["step"] for r in steps] == [1, 2]
        for key in ("rewards/answer_accuracy/mean", "rewards/format/mean", "rewards/clip_grounding/mean",
                    "tools/call_rate", "tools/failure_rate", "tools/crop_area_frac", "step_time", "entropy"):
            assert key in steps[-1], key
        assert (out / "curves.png").stat().st_size > 10_000
        assert list((out / "wandb").glob("offline-run-*")), "no offline wandb run"
        assert list(out.glob("checkpoint-*"))
        rollouts = [json.loads(line) for line in (out / "rollouts" / "rollouts.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rollouts] == [1] * 4 + [2] * 4  # rollouts_every: 2 -> step 1 and step 2
        assert all((out / "rollouts" / r["frame"]).exists() and "answer_accuracy" in r["rewards"] for r in rollouts)
    from omnidrive_r1.view import write_view

    assert write_view(s1)["rows"] == 8

    # stage 2's model directory loads in plain transformers and generates with the zoom tool
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from omnidrive_r1.data.loaders import load_drivelmm
    from omnidrive_r1.rollout import HFEngine, RolloutSettings, rollout
    from omnidrive_r1.toy.tiny import TINY_MAX_PIXELS

    processor = AutoProcessor.from_pretrained(final2)
    model = AutoModelForImageTextToText.from_pretrained(final2).eval()
    assert processor.image_processor.size["longest_edge"] == TINY_MAX_PIXELS
    real_generate = model.generate
    turns = []

    def first_turn_zooms(**inputs):
        """Turn 1 is scripted to call the tool (the 2-step policy rarely does); turn 2 is the model's own,
        generated with the crop in its context."""
        turns.append(inputs["image_grid_thw"].shape[0])
        if len(turns) > 1:
            return real_generate(**inputs)
        call = ('<think>Too small.</think>\n<tool_call>\n{"name": "image_zoom_in_tool", "arguments": '
                '{"bbox_2d": [270, 60, 300, 100], "label": "traffic light"}}\n</tool_call><|im_end|>')
        ids = processor.tokenizer([call] * len(inputs["input_ids"]), return_tensors="pt")["input_ids"]
        return torch.cat([inputs["input_ids"], ids], dim=1)

    model.generate = first_turn_zooms
    ds, _ = load_drivelmm(toydrive_dir / "drivelmm" / "test.json", progress=False, limit=2)
    settings = RolloutSettings.of_model(final2)  # as the stage-2 recipe trained it
    recipe2 = yaml.safe_load(TOY2.read_text())
    assert settings.max_turns == recipe2["max_tool_calling_iterations"]
    assert settings.max_completion_length == recipe2["max_completion_length"]
    assert settings.tools[0].options["max_tool_calls"] == 2
    assert settings.tool_specs(processor)[0].options["max_pixels"] == TINY_MAX_PIXELS  # the saved processor's resize
    settings.max_turns = 1
    rollouts = rollout(HFEngine(model, processor), processor, [ds[0], ds[1]], settings)
    assert turns == [2, 4]  # 2 frames, then 2 frames + 2 crops
    for r in rollouts:
        assert r.zoom_calls[0].ok and r.zoom_calls[0].crop.size[0] > 0
        assert [m["role"] for m in r.completion] == ["assistant", "tool", "assistant"]


# -------------------------------------------------------------------------------------------- DeepSpeed

def _launch(args, **kw):
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1",
           "TRL_EXPERIMENTAL_SILENCE": "1"}
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, **kw)


@pytest.mark.slow
# ZeRO-3 with Qwen2.5-VL runs in tests/test_rehearse.py (two ranks, LoRA, vLLM colocated, stage 1 then stage 2)
@pytest.mark.parametrize("zero, family", [("zero2", "qwen2_5_vl"), ("zero3", "qwen3_vl")])
def test_two_grpo_steps_under_deepspeed_on_two_cpu_processes(zero, family, toydrive_dir, tmp_path, tiny, request):
    accelerate = Path(sys.executable).parent / "accelerate"
    out = tmp_path / zero
    tiny_policy_dir = request.getfixturevalue("tiny_qwen3_vl_dir" if family == "qwen3_vl" else "tiny_policy_dir")
    tiny = [*tiny, f"model_name_or_path={tiny_policy_dir}"]
    proc = _launch([str(accelerate), "launch", "--config_file", f"recipes/accelerate/{zero}.yaml",
                    "--num_processes", "2", "--mixed_precision", "no", "-m", "omnidrive_r1.cli", "train",
                    str(TOY1), *_data_overrides(toydrive_dir), *tiny, "max_steps=2", "save_strategy=no",
                    "per_device_train_batch_size=4",
                    f"output_dir={out}"], timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"DEEPSPEED ZeRO-{zero[-1]}, 2 processes" in proc.stdout
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward" in r] == [1, 2]
    assert {"rewards/answer_accuracy/mean", "rewards/format/mean", "rewards/clip_grounding/mean",
            "tools/call_rate"} <= set(rows[-2])
    from transformers import AutoModelForImageTextToText

    model, info = AutoModelForImageTextToText.from_pretrained(out / "final", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    trained = model.state_dict()
    start = AutoModelForImageTextToText.from_pretrained(tiny_policy_dir).state_dict()
    assert all(trained[k].shape == start[k].shape for k in start)  # ZeRO-3 gathered full weights
    assert any(not torch.equal(trained[k], start[k]) for k in start)


def test_the_private_api_our_patches_use_is_there_and_its_absence_is_named(monkeypatch):
    import transformers

    from omnidrive_r1.trainer import check_private_api

    check_private_api()
    monkeypatch.delattr(transformers.Trainer, "_run_epoch")
    with pytest.raises(RuntimeError, match=r"transformers.Trainer._run_epoch \(needed by: a run resumed at max_steps"):
        check_private_api()


@pytest.mark.parametrize("override, message", [
    ("per_device_train_batch_size=-4", "per_device_train_batch_size: -4 is out of range"),
    ("learning_rate=-1e-4", "learning_rate: -0.0001 is out of range"),
    ("max_completion_length=-5", "max_completion_length: -5 is out of range"),
    ("max_steps=0", "max_steps: 0 trains nothing"),
    ("data.limit=-2", "data.limit: -2 is out of range"),
    ("data.limt=5", r"data: unknown key\(s\) \['limt'\]"),
    ("on_bad_reward=ignore", "on_bad_reward: 'ignore'"),
    ("temperature=0", "temperature: 0 is out of range"),
    ("max_completion_length=9000", "max_completion_length: 9000 does not fit the model's 8192 positions"),
])
def test_bad_numbers_are_refused_before_any_model_loads(override, message, tiny, toydrive_dir, tmp_path, monkeypatch):
    import omnidrive_r1.train as train_mod

    monkeypatch.setattr(train_mod, "load_policy", lambda *a, **k: pytest.fail("model loaded before the check"))
    with pytest.raises(RecipeError, match=message):
        train(TOY1, [*_data_overrides(toydrive_dir), *tiny, override, f"output_dir={tmp_path}"])


def test_a_misspelt_tool_option_fails_before_the_model_loads(tiny, toydrive_dir, tmp_path, monkeypatch):
    import omnidrive_r1.train as train_mod
    from omnidrive_r1.plugins import PluginError

    monkeypatch.setattr(train_mod, "load_policy", lambda *a, **k: pytest.fail("model loaded before the check"))
    with pytest.raises(PluginError, match="takes no option"):
        train(TOY1, [*_data_overrides(toydrive_dir), *tiny, "tools=[{name: zoom_in, max_tool_call: 2}]",
                     f"output_dir={tmp_path}"])


NAN_REWARD = "def nan_for_first(prompts, completions, **kwargs):\n    return [float('nan')] + [1.0] * (len(completions) - 1)\n"


@pytest.mark.slow
def test_a_nan_reward_never_reaches_the_weights(tiny, toydrive_dir, tmp_path, caplog):
    plugin = tmp_path / "bad.py"
    plugin.write_text(NAN_REWARD)
    common = [*_data_overrides(toydrive_dir), *tiny, "max_steps=2", "per_device_train_batch_size=4",
              "save_strategy=no", "report_to=[]",
              f"rewards=[{{path: '{plugin}:nan_for_first', weight: 1.0}}, {{name: format, weight: 0.5}}]"]
    with caplog.at_level("WARNING", logger="omnidrive_r1.trainer"):
        final = train(TOY1, [*common, f"output_dir={tmp_path / 'skip'}"])
    assert "reward 'nan_for_first' returned nan for sample 0" in caplog.text
    rows = [json.loads(line) for line in (tmp_path / "skip" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert all(r["rewards/skipped_groups"] == 1.0 for r in steps)  # one group per step (4 completions = 1 prompt)
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in steps)
    from transformers import AutoModelForImageTextToText

    weights = AutoModelForImageTextToText.from_pretrained(final).state_dict()
    assert all(torch.isfinite(w).all() for w in weights.values())
    from omnidrive_r1.rewards import RewardError

    with pytest.raises(RewardError, match="on_bad_reward is 'stop'"):
        train(TOY1, [*common, "on_bad_reward=stop", f"output_dir={tmp_path / 'stop'}"])


def test_a_budget_that_cannot_hold_one_zoom_is_refused(tiny):
    """The cause of the tool-use collapse measured on the old toy recipe: 128 tokens, crops up to 160 tokens."""
    recipe, grpo, model = parse_recipe(TOY1, [*tiny, "max_completion_length=128", "tools=[{name: zoom_in}]"])
    with pytest.raises(RecipeError, match="cannot hold one zoom: a crop may take 160 image tokens"):
        check_recipe(recipe, grpo, model)
    recipe, grpo, model = parse_recipe(TOY1, [*tiny, "max_completion_length=128",
                                              "tools=[{name: zoom_in, max_crop_pixels: 12544}]"])
    check_recipe(recipe, grpo, model)  # a crop of at most 16 tokens fits


def test_use_peft_alone_adapts_the_language_model_projections_and_not_the_vision_tower(tiny_policy_dir):
    # PEFT has no default target modules for Qwen2.5-VL: `use_peft=true` without lora_target_modules stopped
    # with "Please specify `target_modules`"
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForImageTextToText
    from trl import ModelConfig

    from omnidrive_r1.policies import family_of
    from omnidrive_r1.train import lora_config

    family = family_of(tiny_policy_dir)
    LORA_TARGETS = family.lora_targets
    model = AutoModelForImageTextToText.from_pretrained(tiny_policy_dir, dtype=torch.float32)
    peft_model = get_peft_model(model, lora_config(ModelConfig(use_peft=True, lora_r=4), family))
    adapted = {name.rsplit(".lora_A", 1)[0] for name, _ in peft_model.named_parameters() if ".lora_A." in name}
    layers = model.config.text_config.num_hidden_layers
    assert len(adapted) == layers * len(LORA_TARGETS)
    assert not [n for n in adapted if "visual" in n]
    assert all(n.rsplit(".", 1)[-1] in LORA_TARGETS for n in adapted)
    # an explicit choice is kept
    chosen = lora_config(ModelConfig(use_peft=True, lora_target_modules=["q_proj", "v_proj"]), family)
    assert chosen.target_modules == {"q_proj", "v_proj"}
    assert lora_config(ModelConfig(use_peft=False), family) is None


def test_final_of_a_lora_run_is_the_starting_weights_with_the_saved_adapter_merged_in(tiny_policy_dir, tmp_path):
    # under ZeRO-3 the in-place merge saved empty embedding and output tensors; the merge now reads the
    # adapter the trainer saved and the starting weights from disk
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForImageTextToText
    from trl import ModelConfig

    from omnidrive_r1.policies import family_of
    from omnidrive_r1.train import lora_config, merge_adapter

    model_args = ModelConfig(use_peft=True, lora_r=4, dtype="float32")
    torch.manual_seed(0)
    peft_model = get_peft_model(AutoModelForImageTextToText.from_pretrained(tiny_policy_dir, dtype=torch.float32),
                                lora_config(model_args, family_of(tiny_policy_dir)))
    with torch.no_grad():  # a trained adapter: B is no longer zero
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    peft_model.save_pretrained(tmp_path / "adapter")
    expected = {k: v.clone() for k, v in peft_model.merge_and_unload().state_dict().items()}

    merge_adapter(tiny_policy_dir, tmp_path / "adapter", tmp_path / "final", model_args)
    merged, info = AutoModelForImageTextToText.from_pretrained(tmp_path / "final", dtype=torch.float32,
                                                               output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    got = merged.state_dict()
    assert got.keys() == expected.keys()
    base = AutoModelForImageTextToText.from_pretrained(tiny_policy_dir, dtype=torch.float32).state_dict()
    assert [k for k in got if "q_proj" in k and not torch.equal(got[k], base[k])]  # the adapter is in
    for k in expected:
        torch.testing.assert_close(got[k], expected[k])


def test_the_adapter_merge_builds_its_model_outside_zero3_and_zero3_stays_on_after():
    # under ZeRO-3 a model the main process builds alone is partitioned across ranks that never join: the
    # merge at the end of a LoRA run hung
    from transformers.integrations.deepspeed import (
        HfDeepSpeedConfig,
        is_deepspeed_zero3_enabled,
        unset_hf_deepspeed_config,
    )

    from omnidrive_r1.train import zero3_init_off

    config = HfDeepSpeedConfig({"zero_optimization": {"stage": 3}, "train_batch_size": 1})
    try:
        assert is_deepspeed_zero3_enabled()
        with zero3_init_off():
            assert not is_deepspeed_zero3_enabled()
        assert is_deepspeed_zero3_enabled()
    finally:
        unset_hf_deepspeed_config()
    del config
    with zero3_init_off():  # and without DeepSpeed it changes nothing
        assert not is_deepspeed_zero3_enabled()
    assert not is_deepspeed_zero3_enabled()
