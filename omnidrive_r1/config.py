"""Recipes: one YAML per run, TRL / open-r1 style.

GRPOConfig and ModelConfig fields sit flat at the top level of the file; our own sections are the fields
of `RecipeArguments` (data, tools, rewards, image resolution, where to start from). `parse_recipe` applies
`key=value` overrides (dotted keys reach into sections: `data.limit=8`, `rewards.2.weight=0.3`) and parses
the result with TRL's `TrlParser`, so every field is type-checked the way TRL scripts do.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass
class RecipeArguments:
    """The omnidrive-r1 sections of a recipe (everything else is GRPOConfig / ModelConfig)."""

    preset: str = field(default="toy", metadata={"help": "recipe family: names outputs/<preset>/<stage>"})
    stage: str = field(default="stage1", metadata={"help": "stage1 (tool learning) or stage2 (driving)"})
    data: dict = field(default_factory=dict, metadata={
        "help": "kind (drivelmm | deepeyes), path, images_root, sources, limit, skip_bad, "
                "toydrive ({out, frames, seed}: generate toydrive there first if path is missing)"})
    tools: list[dict] = field(default_factory=lambda: [{"name": "zoom_in"}], metadata={"help": "tool plug-ins"})
    rewards: list[dict] = field(default_factory=list, metadata={"help": "reward plug-ins with weights"})
    image_min_pixels: int = field(default=3136, metadata={"help": "policy input resize: min pixels"})
    image_max_pixels: int = field(default=1003520, metadata={"help": "policy input resize: max pixels"})
    init_from: str | None = field(default=None, metadata={
        "help": "start from this local model directory (stage 2: stage 1's final/); must exist"})
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "replace the outputs of an earlier run in output_dir (otherwise such a run is refused)"})
    require_gpu: bool = field(default=False, metadata={"help": "refuse to start without a CUDA GPU"})
    wandb_project: str = field(default="omnidrive-r1", metadata={"help": "Weights & Biases project"})


class RecipeError(ValueError):
    """A recipe that cannot work; the message names the field."""


def _set_dotted(config: dict, key: str, value):
    parts = key.split(".")
    node = config
    for i, part in enumerate(parts[:-1]):
        nxt = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if not isinstance(nxt, (dict, list)):
            raise RecipeError(f"override {key}: {'.'.join(parts[:i + 1])} is not a section")
        node = nxt
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def load_recipe_dict(path: str | Path, overrides: list[str] = ()) -> dict:
    path = Path(path)
    if not path.exists():
        raise RecipeError(f"recipe not found: {path}")
    config = yaml.safe_load(path.read_text()) or {}
    if not isinstance(config, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping of fields")
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise RecipeError(f"override {item!r} must look like key=value")
        value = yaml.safe_load(raw)
        if isinstance(value, bool) and raw.strip().lower() not in ("true", "false"):
            value = raw.strip()  # YAML 1.1 reads no/yes/on/off as booleans: save_strategy=no means "no"
        try:
            _set_dotted(config, key.strip(), value)
        except (IndexError, ValueError) as e:
            raise RecipeError(f"override {item!r}: {e}") from e
    return config


def parse_recipe(path: str | Path, overrides: list[str] = ()):
    """(RecipeArguments, GRPOConfig, ModelConfig) from a recipe file plus `key=value` overrides."""
    from trl import GRPOConfig, ModelConfig, TrlParser

    config = load_recipe_dict(path, overrides)
    if config.get("require_gpu"):
        import torch

        if not torch.cuda.is_available():
            raise RecipeError(f"{path}: preset {config.get('preset')!r} needs a CUDA GPU (require_gpu: true) and none "
                              "is visible; on a CPU machine run the toy preset (make stage1)")
    config.setdefault("output_dir", f"outputs/{config.get('preset', 'toy')}/{config.get('stage', 'stage1')}")
    parser = TrlParser((RecipeArguments, GRPOConfig, ModelConfig))
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(config, f)
    try:
        recipe, grpo, model = parser.parse_args_and_config(["--config", f.name])
    except ValueError as e:
        raise RecipeError(f"{path}: {e}") from e
    except SystemExit as e:  # argparse's way of rejecting a bad value
        raise RecipeError(f"{path}: a field has a value of the wrong type (see the message above)") from e
    finally:
        os.unlink(f.name)
    return recipe, grpo, model
