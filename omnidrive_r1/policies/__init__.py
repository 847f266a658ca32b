"""Model families behind one seam (`docs/families.md`): what is specific to Qwen2.5-VL or Qwen3-VL lives in one
file per family in this package, chosen from the model's `model_type` (as transformers' `Auto*` classes pick
theirs). Nothing outside this package names a family, a patch size or a pixel factor.

A family module defines `FAMILY`, an instance of a `Family` subclass: the resize factor and the published pixel
limits, the coordinate convention of `bbox_2d`, the chat template and response parser, LoRA target modules and
published architectures for `--plan` (the toy world builds a tiny model of each: `omnidrive_r1/toy/tiny_families.py`).

The image geometry takes one route. A recipe's `image_min_pixels` / `image_max_pixels` (or, unset, the family's
`image_pixels()` defaults) go into the processor, built here in one place (`build_processor`); `tool_specs`
turns that processor plus the recipe's tool options into the tools' options, for training, for evaluation
rollouts of the saved `final/` (whose processor carries the limits) and for vLLM (`pixel_limits`).

A light module: the command line's parser lists the families before any command runs, so transformers is imported
inside the functions that need it, and `omnidrive-r1 --help` answers at once.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import math
import pkgutil
from pathlib import Path

from omnidrive_r1.config import ToolEntry
from omnidrive_r1.errors import UserError
from omnidrive_r1.prompts import system_prompt
from omnidrive_r1.response_parser import RESPONSE_TEMPLATE

# a recipe that sets no image resolution: 4 to 1280 visual tokens (the paper recipes' resolution), in the family's
# own pixels per token
DEFAULT_IMAGE_TOKENS = (4, 1280)
# the zoom tool's options that come from the processor and the family, never from a recipe's tool entry
GEOMETRY = ("min_pixels", "max_pixels", "factor", "coordinates")


class Family:
    """What differs between model families. A family module subclasses it and sets every attribute."""

    name = ""  # as people write it, e.g. "Qwen2.5-VL"
    model_types: tuple[str, ...] = ()  # config.model_type values it serves
    factor = 0  # resize factor: vision patch size x spatial merge size (a side is a multiple of it)
    min_pixels = 0  # the published processor's limits
    max_pixels = 0
    coordinates = "pixels"  # how the model writes bbox_2d: "pixels" of the image it sees, or "relative" 0..1000
    lora_targets: tuple[str, ...] = ()  # language-model linear layers LoRA adapts by default
    known: dict[str, dict] = {}  # hub id -> published config (for --plan without a download)
    config_class = ""  # transformers config class name
    model_class = ""  # transformers model class name

    def chat_template(self) -> str:
        raise NotImplementedError

    def install_template(self, processor):
        """Our chat template (or the family's own, where it serves tool training) and the response parser."""
        template = self.chat_template()
        processor.chat_template = template
        processor.tokenizer.chat_template = template
        processor.tokenizer.response_template = RESPONSE_TEMPLATE
        return processor

    def system_prompt(self) -> str:
        """The iMCoT system prompt, its words on the box in this family's convention."""
        return system_prompt(self.coordinates)

    def image_tokens(self, pixels: int) -> int:
        """LLM tokens of an image of `pixels` pixels at most (one per factor x factor square)."""
        return math.ceil(pixels / (self.factor * self.factor))

    def image_pixels(self, min_pixels: int | None = None, max_pixels: int | None = None) -> tuple[int, int]:
        """The policy's resize bounds: a recipe's where it sets them, else `DEFAULT_IMAGE_TOKENS` of this family."""
        lo, hi = (tokens * self.factor * self.factor for tokens in DEFAULT_IMAGE_TOKENS)
        return (lo if min_pixels is None else min_pixels), (hi if max_pixels is None else max_pixels)

    def zoom_options(self) -> dict:
        """The zoom tool's geometry for this family (`min_side` a default a recipe may change)."""
        return {"factor": self.factor, "coordinates": self.coordinates, "min_side": self.factor}

    def set_vision_attention(self, model, mode: str) -> int:
        """Switch the vision tower's attention to `mode` (recipe field `vision_attention`); returns the layers
        switched. Only a family whose tower attends within windows has another mode than its own."""
        raise UserError(f"vision_attention: {mode!r} needs a vision tower with windowed attention; {self.name}'s "
                        "has none (leave vision_attention at per_window)")

    def config(self, **kwargs):
        import transformers  # light module (see the docstring)

        return getattr(transformers, self.config_class)(**kwargs)

    def model(self, config):
        import transformers  # light module

        return getattr(transformers, self.model_class)(config)


def _modules() -> list[str]:
    return [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]


@functools.cache  # the package does not change while running; a zoom tool is built per rollout and asks
def families() -> tuple[Family, ...]:
    return tuple(importlib.import_module(f"{__name__}.{name}").FAMILY for name in _modules())


def get(model_type: str) -> Family:
    """The family serving `model_type`; an unknown one is named with what is supported."""
    for family in families():
        if model_type in family.model_types:
            return family
    supported = ", ".join(t for f in families() for t in f.model_types)
    raise UserError(f"model_type {model_type!r} is not supported; supported: {supported} "
                    "(a new family is one file in omnidrive_r1/policies/, docs/families.md)")


DEFAULT = "qwen2_5_vl"  # the family of the built-in default (the toy preset and the paper recipes)


def default() -> Family:
    return get(DEFAULT)


def model_type_of(source: str | Path, revision: str | None = None) -> str:
    """`model_type` of a model directory, of a published hub id we know, or (on a user's machine) of any hub id."""
    path = Path(source)
    if (path / "config.json").is_file():
        return json.loads((path / "config.json").read_text())["model_type"]
    if (path / "processor_config.json").is_file():  # a processor saved alone
        return _model_type_of_class(json.loads((path / "processor_config.json").read_text())["processor_class"])
    for family in families():
        if str(source) in family.known:
            return family.model_types[0]
    if path.exists():
        raise UserError(f"{source}: no config.json; expected a model directory")
    from transformers import AutoConfig  # light module

    try:
        return AutoConfig.from_pretrained(str(source), revision=revision).model_type
    except OSError as error:  # not on disk, not on the hub, or no network: say which model, in one line
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"{source}: cannot read its config.json ({first}); give a model directory or a hub id "
                        "this machine can reach") from error


def family_of(source) -> Family:
    """The family of a model directory or hub id, of a config object, or of a processor."""
    if hasattr(source, "model_type"):
        return get(source.model_type)
    if hasattr(source, "image_processor"):  # a processor: its class names the family
        return get(_model_type_of_class(type(source).__name__))
    return get(model_type_of(source))


def _model_type_of_class(name: str) -> str:
    """The model_type of a processor class name (Qwen2_5_VLProcessor -> qwen2_5_vl)."""
    for family in families():
        if any(t.replace("_", "") in name.lower().replace("_", "") for t in family.model_types):
            return family.model_types[0]
    raise UserError(f"{name}: no supported model family uses this processor")


def build_processor(source: str | Path, *, min_pixels: int | None = None, max_pixels: int | None = None,
                    backend: str | None = None, cache_mb: int | None = None, revision: str | None = None):
    """The policy's processor: the one place one is built. Pixel limits (when given) go to the image processor,
    the image backend and cache (`omnidrive_r1.image_processor_cache`) when asked, and the family's chat template and
    response parser are installed."""
    from transformers import AutoImageProcessor, AutoProcessor  # light module

    family = family_of(source)
    sizes = {}
    if min_pixels is not None or max_pixels is not None:
        sizes["size"] = {"shortest_edge": min_pixels or family.min_pixels,
                         "longest_edge": max_pixels or family.max_pixels}
    extra = {"revision": revision} if revision else {}
    processor = AutoProcessor.from_pretrained(str(source), **sizes, **extra)
    if backend is not None or cache_mb:
        from omnidrive_r1.image_processor_cache import cache_images  # light module (it imports torch)

        kwargs = {"backend": backend} if backend else {}
        image_processor = AutoImageProcessor.from_pretrained(str(source), **sizes, **extra, **kwargs)
        processor.image_processor = cache_images(image_processor, cache_mb) if cache_mb else image_processor
    return family.install_template(processor)


def pixel_limits(processor) -> tuple[int, int]:
    """(min_pixels, max_pixels) a processor resizes to."""
    size = processor.image_processor.size
    return size["shortest_edge"], size["longest_edge"]


def tool_specs(tools: list, family_or_processor, pixels: tuple[int, int] | None = None) -> list[ToolEntry]:
    """The tools' options, from a recipe's (or a saved model's) tool entries: the zoom tool resizes exactly as the
    policy's processor does, in its family's box convention. Give the processor, or, before one is built (the
    recipe's checks), the family and the recipe's `(min_pixels, max_pixels)`; both give the same options.

    A tool entry may not set the geometry itself: the pixel limits are the recipe's `image_min_pixels` /
    `image_max_pixels`, the factor and box convention the family's."""
    if pixels is None:
        family, pixels = family_of(family_or_processor), pixel_limits(family_or_processor)
    else:
        family = family_or_processor
    specs = [ToolEntry.of(spec) for spec in tools]
    filled = []
    for spec in specs:
        if spec.name != "zoom_in":
            filled.append(spec)
            continue
        given = sorted(set(spec.options) & set(GEOMETRY))
        if given:
            raise UserError(f"tools: zoom_in's {', '.join(given)} come from the policy, not the tool entry: set the "
                            "recipe's image_min_pixels / image_max_pixels (the processor's resize, which the zoom "
                            "tool follows); the factor and box convention are the model family's")
        options = {**family.zoom_options(), **spec.options, "min_pixels": pixels[0], "max_pixels": pixels[1]}
        filled.append(dataclasses.replace(spec, options=options))
    return filled


def without_geometry(tools: list) -> list[ToolEntry]:
    """Tool entries with the options `tool_specs` fills in removed (what a saved model keeps: its processor holds
    the pixel limits)."""
    return [dataclasses.replace(entry, options={k: v for k, v in entry.options.items() if k not in GEOMETRY})
            for entry in map(ToolEntry.of, tools)]


def vision_token_ids(config) -> list[int]:
    """The placeholder tokens of images and videos, which only the processor may write."""
    return [t for t in (getattr(config, "image_token_id", None), getattr(config, "video_token_id", None))
            if t is not None]
