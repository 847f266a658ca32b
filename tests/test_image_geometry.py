"""One route for the image geometry: the recipe's pixel limits (or the family's defaults) go into the processor,
and the zoom tool's options come from that processor, in training, in evaluation rollouts of a saved model and
for vLLM (`omnidrive_r1.policies.tool_specs`)."""

import json
import shutil
from pathlib import Path

import pytest

from omnidrive_r1 import policies
from omnidrive_r1.config import ToolEntry, parse_recipe
from omnidrive_r1.errors import UserError
from omnidrive_r1.policies import build_processor, family_of, pixel_limits, tool_specs
from omnidrive_r1.rollout import SETTINGS_FILE, RolloutSettings
from omnidrive_r1.tools import environment_factory
from omnidrive_r1.train import check_recipe, image_pixels, load_processor

ROOT = Path(__file__).resolve().parents[1]
TOY1 = ROOT / "recipes/toy/stage1.yaml"
TOOLS = [{"name": "zoom_in", "max_tool_calls": 2, "max_crop_pixels": 50176}]


@pytest.mark.parametrize("fixture", ["tiny_policy_dir", "tiny_qwen3_vl_dir"])
def test_a_recipe_without_a_resolution_gets_its_familys_4_to_1280_tokens(fixture, request, toydrive_dir):
    source = request.getfixturevalue(fixture)
    family = family_of(source)
    raw = parse_recipe(TOY1, [f"model_name_or_path={source}", "image_min_pixels=null", "image_max_pixels=null",
                              f"data.path={toydrive_dir / 'deepeyes' / 'train.parquet'}", "lab={}"])
    recipe, _, model_args = raw
    assert (recipe.image_min_pixels, recipe.image_max_pixels) == (None, None)
    side = family.factor * family.factor
    assert image_pixels(recipe, family) == (4 * side, 1280 * side)
    assert pixel_limits(load_processor(recipe, model_args)) == (4 * side, 1280 * side)


@pytest.mark.parametrize("fixture", ["tiny_policy_dir", "tiny_qwen3_vl_dir"])
def test_the_tools_options_from_a_processor_equal_those_from_the_recipes_limits(fixture, request):
    source = request.getfixturevalue(fixture)
    family = family_of(source)
    processor = build_processor(source, min_pixels=12544, max_pixels=163840)
    from_processor = tool_specs(TOOLS, processor)
    assert from_processor == tool_specs(TOOLS, family, (12544, 163840))
    spec = from_processor[0].options
    assert (spec["min_pixels"], spec["max_pixels"], spec["factor"], spec["coordinates"]) == (
        12544, 163840, family.factor, family.coordinates)
    assert spec["max_crop_pixels"] == 50176 and spec["max_tool_calls"] == 2  # the entry's own options kept
    env = environment_factory(from_processor)()
    assert (env.min_pixels, env.max_pixels, env.factor) == (12544, 163840, family.factor)


@pytest.mark.parametrize("key", ["min_pixels", "max_pixels", "factor", "coordinates"])
def test_a_tool_entry_that_sets_the_geometry_is_refused_naming_the_recipe_fields(key, tiny_policy_dir, toydrive_dir):
    with pytest.raises(UserError, match="set the recipe's image_min_pixels / image_max_pixels"):
        tool_specs([{"name": "zoom_in", key: 1}], policies.default(), (3136, 50176))
    recipe, grpo, model_args = parse_recipe(TOY1, [
        f"model_name_or_path={tiny_policy_dir}", f"data.path={toydrive_dir / 'deepeyes' / 'train.parquet'}", "lab={}",
        f"tools=[{{name: zoom_in, {key}: 1}}]"])
    with pytest.raises(UserError, match=f"zoom_in's {key} come from the policy"):
        check_recipe(recipe, grpo, model_args)


def test_a_saved_model_rolls_out_at_its_processors_resolution_not_an_old_settings_file(tiny_policy_dir, tmp_path):
    """Models saved by earlier versions wrote the zoom tool's pixel limits into their rollout settings; the
    processor saved beside them is what the policy was trained with, and the tool follows it."""
    model = tmp_path / "final"
    shutil.copytree(tiny_policy_dir, model)
    build_processor(tiny_policy_dir, min_pixels=12544, max_pixels=125440).save_pretrained(model)
    (model / SETTINGS_FILE).write_text(json.dumps(
        {"tools": [{"name": "zoom_in", "min_pixels": 3136, "max_pixels": 1003520, "factor": 28,
                    "coordinates": "pixels", "max_crop_pixels": 50176}], "max_turns": 2}))
    settings = RolloutSettings.of_model(model)
    assert settings.tools == [ToolEntry("zoom_in", options={"max_crop_pixels": 50176})] and settings.max_turns == 2
    spec = settings.tool_specs(build_processor(model))[0].options
    assert (spec["min_pixels"], spec["max_pixels"], spec["max_crop_pixels"]) == (12544, 125440, 50176)
