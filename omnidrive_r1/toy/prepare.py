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
from dataclasses import dataclass, fields
from pathlib import Path

from accelerate import PartialState

from omnidrive_r1.config import RecipeError, load_recipe_dict
from omnidrive_r1.errors import UserError
from omnidrive_r1.toy.base import PHASE_STEPS
from omnidrive_r1.toy.benchmarks import ensure_hrbench, ensure_vstar
from omnidrive_r1.toy.models import ensure_toy_models
from omnidrive_r1.toy.toydrive import ensure_heldout, generate, stale

log = logging.getLogger(__name__)

LAB_KEYS = {"toy_base", "toydrive"}


@dataclass
class ToyBase:
    """`lab.toy_base`: the toy base policy and toy CLIP (`omnidrive_r1.toy.models.ensure_toy_models`)."""

    out: str
    seed: int = 0
    family: str | None = None  # a model_type; default: the default family
    zoom_share: float | None = None  # a reluctant base: the share of its trajectories that zoom (docs/ablation.md)
    # a smaller build, to check the machinery only (the learning claim needs the full one): SFT steps per phase
    # ({reading: N, context: N, pointing: N, protocol: N}), the toy CLIP's steps, the protocol phase's tries
    steps: dict | None = None
    clip_steps: int | None = None
    attempts: int | None = None

    def size(self) -> dict:
        """`build_toy_base`'s size arguments this section sets."""
        return {k: v for k, v in (("steps", self.steps), ("clip_steps", self.clip_steps), ("attempts", self.attempts))
                if v is not None}


@dataclass
class Toydrive:
    """`lab.toydrive`: the training rows (`omnidrive_r1.toy.toydrive.generate`)."""

    out: str
    frames: int = 16
    seed: int = 0


def _section(cls, name: str, raw):
    """`raw` (a mapping, or null for none) as `cls`, a bad field named as `lab.<name>.<field>`."""
    if raw is None or raw == {}:
        return None
    if not isinstance(raw, dict):
        raise RecipeError(f"lab.{name}: a section {{{', '.join(f.name for f in fields(cls))}}}, got {raw!r}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise RecipeError(f"lab.{name}: unknown key(s) {unknown}; known: {sorted(known)}")
    if "out" not in raw:
        raise RecipeError(f"lab.{name}.out: the folder to build into is needed")
    for key in ("seed", "frames", "clip_steps", "attempts"):
        value, positive = raw.get(key), key != "seed"
        if key in known and value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                                   or value < int(positive)):
            raise RecipeError(f"lab.{name}.{key}: a {'positive' if positive else 'non-negative'} whole "
                              f"number, got {value!r}")
    steps = raw.get("steps")
    if "steps" in known and steps is not None and (
            not isinstance(steps, dict) or set(steps) - set(PHASE_STEPS)
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in steps.values())):
        raise RecipeError(f"lab.{name}.steps: SFT steps per phase, {{{', '.join(f'{k}: N' for k in PHASE_STEPS)}}} "
                          f"(each a whole number, 0 skips the phase), got {steps!r}")
    return cls(**raw)


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
    base, data = _section(ToyBase, "toy_base", lab.get("toy_base")), _section(Toydrive, "toydrive", lab.get("toydrive"))
    if not base and not data:
        return config, []

    with PartialState().main_process_first():
        if base:
            ensure_toy_models(base.out, seed=base.seed, family=base.family, zoom_share=base.zoom_share,
                              size=base.size())
        if data and (not Path(config.get("data", {}).get("path", "")).exists() or stale(data.out)):
            # none yet, or one an older version of the world wrote
            log.info(f"generating toydrive into {data.out} (frames={data.frames}, seed={data.seed})")
            generate(data.out, frames=data.frames, seed=data.seed)
    return config, []


DEFAULT_DATA = {"drivelmm": ensure_heldout, "vstar": ensure_vstar, "hrbench": ensure_hrbench}


def default_data(benchmark: str) -> str:
    """The toydrive set in `benchmark`'s published format (generated on first use, from seeds no training run uses)."""
    if benchmark not in DEFAULT_DATA:
        raise UserError(f"--data is needed: the {benchmark} benchmark has no toydrive set")
    return str(DEFAULT_DATA[benchmark]())
