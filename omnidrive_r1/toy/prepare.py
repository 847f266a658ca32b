"""What the toy world builds before a toy recipe trains, and the data its evaluations default to.

A toy recipe carries a `lab` section that training never reads:

    lab:
      toy_base: {out: outputs/toy/base, seed: 0}          # the toy base policy and toy CLIP, built once
      toydrive: {out: outputs/toydrive, frames: 48, seed: 0}  # the training rows, generated once

`prepare` builds what it names (when missing) and returns the recipe without it, ready for the product's
`omnidrive_r1.train.train`; `omnidrive-r1 train` calls it, so `make stage1` builds the toy base and toydrive on first
use. `default_data` gives each benchmark's toydrive set for `omnidrive-r1 eval` without `--data`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omnidrive_r1.config import RecipeError, load_recipe_dict
from omnidrive_r1.errors import UserError
from omnidrive_r1.toy.benchmarks import ensure_hrbench, ensure_vstar
from omnidrive_r1.toy.models import ensure_toy_models
from omnidrive_r1.toy.toydrive import ensure_heldout, generate, stale

log = logging.getLogger(__name__)

LAB_KEYS = {"toy_base", "toydrive"}


def prepare(recipe: str | Path | dict, overrides: list[str] = ()) -> tuple[str | Path | dict, list[str]]:
    """What to hand to `omnidrive_r1.train.train`: the recipe (a file plus `key=value` overrides, or a loaded dict)
    with its `lab` section carried out and removed (the toy models built into `lab.toy_base.out`, toydrive
    generated into `lab.toydrive.out`, when they are missing), as (dict, no overrides); a recipe without one as it
    came. Under several processes the main one builds first, the others then find the result.

    The models are built before the product creates its training arguments: under ZeRO-3 every model created
    after them is partitioned as it is built, which a from-scratch build cannot survive."""
    config = load_recipe_dict(recipe, list(overrides))
    if "lab" not in config:
        return recipe, list(overrides)
    lab = config.pop("lab") or {}
    if not isinstance(lab, dict) or set(lab) - LAB_KEYS:
        raise RecipeError(f"lab: a section with {sorted(LAB_KEYS)} (the toy world's models and data), got {lab!r}")
    base, data = lab.get("toy_base"), lab.get("toydrive")
    if not base and not data:
        return config, []
    from accelerate import PartialState

    with PartialState().main_process_first():
        if base:
            ensure_toy_models(**base)
        if data and (not Path(config.get("data", {}).get("path", "")).exists() or stale(data["out"])):
            # none yet, or one an older version of the world wrote
            log.info(f"generating toydrive into {data['out']} (frames={data.get('frames', 16)}, seed={data.get('seed', 0)})")
            generate(data["out"], frames=data.get("frames", 16), seed=data.get("seed", 0))
    return config, []


DEFAULT_DATA = {"drivelmm": ensure_heldout, "vstar": ensure_vstar, "hrbench": ensure_hrbench}


def default_data(benchmark: str) -> str:
    """The toydrive set in `benchmark`'s published format (generated on first use, from seeds no training run uses)."""
    if benchmark not in DEFAULT_DATA:
        raise UserError(f"--data is needed: the {benchmark} benchmark has no toydrive set")
    return str(DEFAULT_DATA[benchmark]())
