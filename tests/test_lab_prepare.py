"""The lab prepares what a toy recipe names, then hands the product a recipe without its `lab` section."""

from pathlib import Path

import pytest

from omnidrive_r1.config import RecipeError, parse_recipe
from omnidrive_r1.errors import UserError
from omnidrive_r1.toy.prepare import default_data, prepare

ROOT = Path(__file__).resolve().parents[1]
TOY1 = ROOT / "recipes/toy/stage1.yaml"


def test_a_toy_recipes_data_is_generated_once_and_its_lab_section_removed(tmp_path):
    out = tmp_path / "toydrive"
    overrides = ["lab.toy_base=null", f"lab.toydrive.out={out}", "lab.toydrive.frames=2",
                 f"data.path={out / 'deepeyes' / 'train.parquet'}"]
    config, rest = prepare(TOY1, overrides)
    assert rest == [] and "lab" not in config
    assert config["data"]["path"] == str(out / "deepeyes" / "train.parquet")
    data = Path(config["data"]["path"])
    assert data.is_file()
    before = data.stat().st_mtime_ns
    config2, _ = prepare(TOY1, overrides)  # already there: not generated again
    assert data.stat().st_mtime_ns == before and config2 == config
    # what the product receives parses as a recipe of its own, with no lab in it
    recipe, grpo, _ = parse_recipe(config)
    assert recipe.lab == {} and grpo.learning_rate > 0


def test_a_recipe_without_a_lab_section_passes_through_untouched(tmp_path):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("model_name_or_path: someone/model\ndata: {kind: deepeyes, path: x.parquet}\n")
    assert prepare(recipe, ["learning_rate=1e-5"]) == (recipe, ["learning_rate=1e-5"])


def test_an_unknown_lab_key_is_named():
    with pytest.raises(RecipeError, match=r"lab: a section with \['toy_base', 'toydrive'\]"):
        prepare(TOY1, ["lab.toy_basis={out: x}"])


@pytest.mark.parametrize("override, message", [
    ("lab.toydrive.frames=0", r"lab.toydrive.frames: a positive whole number, got 0"),
    ("lab.toy_base.colour=red", r"lab.toy_base: unknown key\(s\) \['colour'\]"),
    ("lab.toy_base.seed=-1", r"lab.toy_base.seed: a non-negative whole number, got -1"),
    ("lab.toydrive={frames: 4}", r"lab.toydrive.out: the folder to build into is needed"),
])
def test_a_bad_lab_field_is_named_before_anything_is_built(override, message):
    with pytest.raises(RecipeError, match=message):
        prepare(TOY1, [override])


def test_a_benchmark_without_a_toydrive_set_asks_for_data():
    with pytest.raises(UserError, match="--data is needed: the mmstar benchmark has no toydrive set"):
        default_data("mmstar")
