"""Recipes: one YAML per run, TRL / open-r1 style.

GRPOConfig and ModelConfig fields sit flat at the top level of the file; our own sections are the fields
of `RecipeArguments` (data, tools, rewards, image resolution, where to start from). `parse_recipe` applies
`key=value` overrides (dotted keys reach into sections: `data.limit=8`; tools and rewards by name,
`rewards.clip_grounding.weight=0.3`, a new name appends: `rewards.mine={path: my_reward.py:fn}`) and parses
the result with TRL's `TrlParser`, so every field is type-checked the way TRL scripts do.

A light module: the command line's parser reads it (through `omnidrive_r1.policies`) before any command runs, so
it imports TRL and torch inside the functions that need them, and `omnidrive-r1 --help` answers at once.
"""

from __future__ import annotations

import copy
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import yaml

from omnidrive_r1.errors import UserError


@dataclass
class RecipeArguments:
    """The omnidrive-r1 sections of a recipe (everything else is GRPOConfig / ModelConfig)."""

    preset: str = field(default="custom", metadata={"help": "recipe family: names outputs/<preset>/<stage>"})
    stage: str = field(default="stage1", metadata={"help": "stage1 (tool learning) or stage2 (driving)"})
    data: dict = field(default_factory=dict, metadata={  # a DataSection once validated (`validate`)
        "help": "kind (drivelmm | deepeyes), path, images_root, stitched_dir, sources, limit, skip_bad, "
                "questions (all | mcq | open: train on every row, the multiple-choice rows or the open ones)"})
    # ToolEntry / RewardEntry lists once validated (`validate`)
    tools: list[dict] = field(default_factory=lambda: [{"name": "zoom_in"}], metadata={
        "help": "tool plug-ins: {name: <tools/ module>, option: value} or {path: 'module:Class'}"})
    rewards: list[dict] = field(default_factory=list, metadata={
        "help": "reward plug-ins: {name: <rewards/ module>, weight: w, option: value} or {path: 'module:fn', weight: w}"})
    image_min_pixels: int | None = field(default=None, metadata={
        "help": "policy input resize: min pixels (default: 4 visual tokens of the policy's family)"})
    image_max_pixels: int | None = field(default=None, metadata={
        "help": "policy input resize: max pixels (default: 1280 visual tokens of the policy's family); the zoom "
                "tool follows the same resize"})
    image_processor_backend: str = field(default="torchvision", metadata={
        "help": "how the policy's images are resized and normalised: 'torchvision' (the processors' own default; 2x "
                "faster on CPU, docs/performance.md) or 'pil'"})
    image_cache_mb: float = field(default=1024, metadata={
        "help": "memory (MB) for the policy's processed images, so that each distinct image is resized once per "
                "run however often TRL processes it (docs/performance.md); 0 turns it off"})
    log_image_side: int = field(default=384, metadata={
        "help": "log_completions: images in the completions table are shrunk to fit this many pixels a side; full "
                "frames cost 2.2 s of a 5.5 s toy step to encode (docs/performance.md); 0 logs them as they are"})
    vision_attention: str = field(default="per_window", metadata={
        "help": "the vision tower's windowed attention under sdpa/eager: 'per_window' (transformers' own: one "
                "attention call per window) or 'batched' (one padded call per layer, omnidrive_r1/policies/_qwen2_5_vl_attention.py;"
                " docs/performance.md); flash_attention_2 is left as it is"})
    rollouts_every: int = field(default=10, metadata={
        "help": "write the rollouts of step 1 and every N-th step (text, rewards, boxes, frames and crops as small "
                "JPEGs) to output_dir/rollouts/ for `omnidrive-r1 view`; 0 turns it off"})
    init_from: str | None = field(default=None, metadata={
        "help": "start from this local model directory (stage 2: stage 1's final/); must exist"})
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "replace the outputs of an earlier run in output_dir (otherwise such a run is refused)"})
    on_bad_reward: str = field(default="skip", metadata={
        "help": "a reward that returns NaN or inf: 'skip' leaves its group out of the update, 'stop' ends the run"})
    lab: dict = field(default_factory=dict, metadata={
        "help": "what the launcher prepares before training (the toy world's models and data: omnidrive_r1/toy/"
                "prepare.py); training never reads it"})
    require_gpu: bool = field(default=False, metadata={"help": "refuse to start without a CUDA GPU"})
    wandb_project: str = field(default="omnidrive-r1", metadata={"help": "Weights & Biases project"})


@dataclass
class DataSection:
    """The recipe's `data` section, typed (built from the YAML mapping by `DataSection.of`, which names a bad
    field)."""

    kind: str  # drivelmm | deepeyes
    path: str
    images_root: str | None = None  # DriveLMM-o1: the folder its camera paths are relative to
    stitched_dir: str | None = None  # DriveLMM-o1: frames stitched beforehand, <idx without its question>.png
    sources: list[str] | None = None  # DeepEyes: the data_source values to keep
    limit: int | None = None  # the first rows only
    skip_bad: bool = False  # skip malformed rows (counted and reported) instead of stopping
    questions: str = "all"  # all | mcq | open: every row, the multiple-choice ones, or the open ones

    @classmethod
    def of(cls, raw) -> DataSection:
        if isinstance(raw, DataSection):
            return raw
        if not isinstance(raw, dict):
            raise RecipeError(f"data: a section (kind, path, ...) is needed, got {raw!r}")
        unknown = sorted(set(raw) - set(cls.__dataclass_fields__))
        if unknown:
            raise RecipeError(f"data: unknown key(s) {unknown}; known: {sorted(cls.__dataclass_fields__)}")
        if raw.get("kind") not in ("drivelmm", "deepeyes"):
            raise RecipeError(f"data.kind must be 'drivelmm' or 'deepeyes', got {raw.get('kind')!r}")
        if not raw.get("path"):
            raise RecipeError("data.path: the recipe names no data file")
        _number("data.limit", raw.get("limit"), minimum=1, integer=True, optional=True)
        if not isinstance(raw.get("skip_bad", False), bool):
            raise RecipeError(f"data.skip_bad must be true or false, got {raw.get('skip_bad')!r}")
        if raw.get("questions", "all") not in ("all", "mcq", "open"):
            raise RecipeError(f"data.questions must be all, mcq or open, got {raw.get('questions')!r}")
        sources = raw.get("sources")
        if sources is not None and (not isinstance(sources, list) or not all(isinstance(s, str) for s in sources)):
            raise RecipeError(f"data.sources: a list of data_source names, got {sources!r}")
        section = cls(**raw)
        section.path = str(section.path)
        return section


class RecipeError(UserError):
    """A recipe that cannot work; the message names the field."""


@dataclass
class PluginEntry:
    """One entry of a plug-in list: a built-in by `name` or an object of one's own by `path`
    (`package.module:obj` / `file.py:obj`), with the plug-in's own options (checked against the plug-in's
    signature when it is built, `omnidrive_r1.plugins`)."""

    name: str | None = None
    path: str | None = None
    options: dict = field(default_factory=dict)

    SECTION: ClassVar[str] = "plugins"
    FIELDS: ClassVar[tuple[str, ...]] = ("name", "path")

    @classmethod
    def of(cls, raw, where: str | None = None):
        """The typed entry from its recipe form: `name`, or `{name: ..., option: value}`, or `{path: ...}`."""
        if isinstance(raw, cls):
            return raw
        where = where or cls.SECTION
        if isinstance(raw, str):
            raw = {"name": raw}
        if not isinstance(raw, dict) or not (raw.get("name") or raw.get("path")):
            raise RecipeError(f"{where}: {raw!r} must be a name or {{name: ...}} / {{path: ...}} with options "
                              "(see recipes/toy/stage1.yaml)")
        for key in ("name", "path"):
            if raw.get(key) is not None and not isinstance(raw[key], str):
                raise RecipeError(f"{where}.{key}: {raw[key]!r} must be a string")
        fields = {k: raw[k] for k in cls.FIELDS if k in raw}
        return cls(**fields, options={k: v for k, v in raw.items() if k not in cls.FIELDS}).checked(where)

    def checked(self, where: str):
        return self

    @property
    def label(self) -> str:
        """The name the entry is known by (its `name`, else its path's object)."""
        return self.name or str(self.path).rpartition(":")[2]

    def as_recipe(self) -> dict:
        """The entry as a recipe writes it (what a saved model's settings keep)."""
        fields = {k: getattr(self, k) for k in self.FIELDS if getattr(self, k) is not None}
        return {**fields, **self.options}


@dataclass
class ToolEntry(PluginEntry):
    """One entry of the recipe's `tools`: a module of `tools/` by name, or a class by path."""

    SECTION: ClassVar[str] = "tools"


@dataclass
class RewardEntry(PluginEntry):
    """One entry of the recipe's `rewards`: a module of `rewards/` by name, or a function or class by path, and its
    `weight` in the sum TRL's GRPO optimises."""

    weight: float = 1.0

    SECTION: ClassVar[str] = "rewards"
    FIELDS: ClassVar[tuple[str, ...]] = ("name", "path", "weight")

    def checked(self, where: str):
        weight = self.weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise RecipeError(f"{where}.weight: must be a number, got {weight!r}")
        self.weight = float(weight)
        return self


def entries(specs, kind: type[PluginEntry], allow_empty: bool = False) -> list:
    """A recipe's `tools` or `rewards` list, typed; a bad entry is named by its name or place (`rewards.2`)."""
    if not isinstance(specs, list) or not (specs or allow_empty):
        raise RecipeError(f"{kind.SECTION}: a list of {kind.SECTION} is needed (see recipes/toy/stage1.yaml)")
    typed = [kind.of(spec, f"{kind.SECTION}.{entry_name(spec) or i}") for i, spec in enumerate(specs)]
    labels = [e.label for e in typed]
    if len(set(labels)) != len(labels):
        raise RecipeError(f"{kind.SECTION}: names must be unique, got {labels}")
    return typed


def entry_name(spec) -> str | None:
    """The name a tool or reward entry is addressed by in overrides: its `name`, or the function of its `path`
    (`rewards/brevity.py:brevity` -> `brevity`)."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, dict):
        if spec.get("name"):
            return str(spec["name"])
        if spec.get("path"):
            return str(spec["path"]).rpartition(":")[2] or None
    return None


def _list_index(node: list, part: str, key: str, where: str, last: bool) -> int:
    """The index `part` names in a list section: a number, or the name of an entry (len(node) to append)."""
    if part.isdigit():
        index = int(part)
        if not 0 <= index <= len(node) or (index == len(node) and not last):
            raise RecipeError(f"override {key}: {where} has {len(node)} entries; use an index from 0 to "
                              f"{len(node) - (0 if last else 1)}{f' ({len(node)} appends)' if last else ''}, or an "
                              "entry's name")
        return index
    named = [i for i, spec in enumerate(node) if entry_name(spec) == part]
    if len(named) > 1:
        raise RecipeError(f"override {key}: {where} has {len(named)} entries named {part!r}; address one by its index")
    if named:
        return named[0]
    if last:
        return len(node)  # a name not in the list appends it
    names = ", ".join(n for n in map(entry_name, node) if n) or "none"
    raise RecipeError(f"override {key}: {where} has no entry named {part!r} (its entries: {names})")


def _set_dotted(config: dict, key: str, value):
    """Set `key` (dotted) to `value`. In a list section (`tools`, `rewards`) a part is an entry's name or index:
    `rewards.clip_grounding.weight=0`; setting a whole entry replaces it, `null` removes it, and a name or an
    index not in the list appends (`rewards.brevity={path: rewards/brevity.py:brevity, weight: 0.1}`)."""
    parts = key.split(".")
    node = config
    for i, part in enumerate(parts):
        where, last = ".".join(parts[:i]) or "the recipe", i == len(parts) - 1
        if isinstance(node, list):
            index = _list_index(node, part, key, where, last)
            if last:
                if value is None and index < len(node):
                    del node[index]
                elif value is not None:
                    if isinstance(value, dict) and not part.isdigit() and not value.get("name") and not value.get("path"):
                        value = {"name": part, **value}  # rewards.format={weight: 0.3}
                    node[index:index + 1] = [value]
                return
            if isinstance(node[index], str):  # a bare name gets options: rewards.format.weight=0.3
                node[index] = {"name": node[index]}
            nxt = node[index]
        elif last:
            node[part] = value
            return
        else:
            nxt = node.setdefault(part, {})
        if not isinstance(nxt, (dict, list)):
            raise RecipeError(f"override {key}: {'.'.join(parts[:i + 1])} is not a section")
        node = nxt


# TRL's fields that the recipe's `rewards` section decides
REWARD_FIELDS = ("reward_weights", "reward_funcs")


def packaged_recipes_dir() -> Path:
    """The recipes that ship with the package: `omnidrive_r1/recipes/` in an installed wheel, the repository's
    `recipes/` folder in a checkout (an editable install)."""
    here = Path(__file__).resolve().parent
    installed = here / "recipes"
    return installed if installed.is_dir() else here.parent / "recipes"


def packaged_recipes() -> list[str]:
    """Names of the packaged recipes, such as `toy/stage1.yaml` (the accelerate launch configs excluded)."""
    root = packaged_recipes_dir()
    return sorted(str(p.relative_to(root)) for p in root.glob("*/*.yaml") if p.parent.name != "accelerate")


def find_recipe(path: str | Path) -> Path:
    """`path` if it is a file, else the packaged recipe of that name (`toy/stage1.yaml` from any folder)."""
    path = Path(path)
    if path.is_file():
        return path
    names = [path]
    if path.parts[:1] == ("recipes",) and len(path.parts) > 1:  # the README's spelling, outside a checkout too
        names.append(Path(*path.parts[1:]))
    for name in names:
        if not name.is_absolute() and (packaged_recipes_dir() / name).is_file():
            return packaged_recipes_dir() / name
    raise RecipeError(f"recipe not found: {path} is not a file, nor one of the packaged recipes "
                      f"({', '.join(packaged_recipes())}); `omnidrive-r1 recipes` lists them")


def load_recipe_dict(path: str | Path | dict, overrides: list[str] = ()) -> dict:
    """A recipe file (or an already loaded recipe, copied) as a dict, with `key=value` overrides applied."""
    if isinstance(path, dict):
        config = copy.deepcopy(path)
    else:
        path = find_recipe(path)
        try:
            config = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise RecipeError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(config, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping of fields")
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise RecipeError(f"override {item!r} must look like key=value")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise RecipeError(f"override {item!r}: the value is not valid YAML ({' '.join(str(e).split())})") from None
        if isinstance(value, bool) and raw.strip().lower() not in ("true", "false"):
            value = raw.strip()  # YAML 1.1 reads no/yes/on/off as booleans: save_strategy=no means "no"
        try:
            _set_dotted(config, key.strip(), value)
        except (IndexError, ValueError) as e:
            raise RecipeError(f"override {item!r}: {e}") from e
    return config


def parse_recipe(path: str | Path | dict, overrides: list[str] = (), plan_only: bool = False):
    """(RecipeArguments, GRPOConfig, ModelConfig) from a recipe file (or a loaded recipe) plus `key=value` overrides.

    `plan_only` reads a GPU recipe on any machine (for `--plan`): no GPU check, precision flags parsed as on a CPU.
    """
    from trl import GRPOConfig, ModelConfig, TrlParser  # light module: see the module's docstring

    config = load_recipe_dict(path, overrides)
    if isinstance(path, dict):
        path = "the recipe"
    for name in REWARD_FIELDS:
        if name in config:
            raise RecipeError(f"{name}: the recipe's `rewards` section decides the rewards and their weights; set a "
                              "weight on a reward's entry ({name: format, weight: 0.2}) or override it by name "
                              f"(rewards.format.weight=0.2), and leave {name} out")
    if plan_only:
        config.update(require_gpu=False, bf16=False, fp16=False, use_cpu=True)
    if config.get("require_gpu"):
        import torch  # light module

        if not torch.cuda.is_available():
            raise RecipeError(f"{path}: preset {config.get('preset')!r} needs a CUDA GPU (require_gpu: true) and none "
                              "is visible; on a CPU machine run the default preset (make stage1)")
    config.setdefault("output_dir", f"outputs/{config.get('preset', 'custom')}/{config.get('stage', 'stage1')}")
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
    recipe.tools = entries(recipe.tools, ToolEntry, allow_empty=True)  # emptiness is `validate`'s to refuse
    recipe.rewards = entries(recipe.rewards, RewardEntry, allow_empty=True)
    return recipe, grpo, model


def _number(name: str, value, *, minimum=None, above=None, maximum=None, integer=False, optional=False):
    if value is None and optional:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if integer:
        ok = ok and float(value).is_integer()
    bounds = []
    if minimum is not None:
        ok, bounds = ok and value >= minimum, [*bounds, f">= {minimum}"]
    if above is not None:
        ok, bounds = ok and value > above, [*bounds, f"> {above}"]
    if maximum is not None:
        ok, bounds = ok and value <= maximum, [*bounds, f"<= {maximum}"]
    if not ok:
        kind = "a whole number" if integer else "a number"
        raise RecipeError(f"{name}: {value!r} is out of range; it must be {kind} {' and '.join(bounds)}".rstrip())


def validate(recipe: RecipeArguments, grpo, model_args) -> None:
    """Every numeric field in its range and every section well-formed, named on failure, before anything loads."""
    _number("per_device_train_batch_size", grpo.per_device_train_batch_size, minimum=1, integer=True)
    _number("gradient_accumulation_steps", grpo.gradient_accumulation_steps, minimum=1, integer=True)
    _number("num_generations", grpo.num_generations, minimum=2, integer=True)
    _number("learning_rate", grpo.learning_rate, above=0)
    _number("max_completion_length", grpo.max_completion_length, minimum=1, integer=True)
    _number("temperature", grpo.temperature, above=0)
    _number("top_p", grpo.top_p, above=0, maximum=1)
    _number("beta", grpo.beta, minimum=0)
    _number("epsilon", grpo.epsilon, above=0)
    _number("warmup_steps", grpo.warmup_steps, minimum=0)
    _number("weight_decay", grpo.weight_decay, minimum=0)
    _number("max_grad_norm", grpo.max_grad_norm, minimum=0)
    _number("logging_steps", grpo.logging_steps, above=0)
    _number("max_tool_calling_iterations", grpo.max_tool_calling_iterations, minimum=0, integer=True, optional=True)
    _number("save_total_limit", grpo.save_total_limit, minimum=1, integer=True, optional=True)
    if grpo.max_steps == 0 or grpo.max_steps < -1:
        raise RecipeError(f"max_steps: {grpo.max_steps} trains nothing; give a positive number of steps, or -1 to "
                          "train num_train_epochs")
    if grpo.max_steps == -1:
        _number("num_train_epochs", grpo.num_train_epochs, above=0)
    if str(grpo.save_strategy).endswith("STEPS") or str(grpo.save_strategy) == "steps":
        _number("save_steps", grpo.save_steps, above=0)
    _number("image_min_pixels", recipe.image_min_pixels, minimum=1, integer=True, optional=True)
    _number("image_max_pixels", recipe.image_max_pixels, minimum=recipe.image_min_pixels or 1, integer=True,
            optional=True)
    _number("image_cache_mb", recipe.image_cache_mb, minimum=0)
    _number("log_image_side", recipe.log_image_side, minimum=0, integer=True)
    _number("rollouts_every", recipe.rollouts_every, minimum=0, integer=True)
    if recipe.image_processor_backend not in ("torchvision", "pil"):
        raise RecipeError(f"image_processor_backend: {recipe.image_processor_backend!r}; it is 'torchvision' or 'pil'")
    if recipe.vision_attention not in ("per_window", "batched"):
        raise RecipeError(f"vision_attention: {recipe.vision_attention!r}; it is 'per_window' (transformers' own) or "
                          "'batched' (one attention call per layer)")
    if recipe.on_bad_reward not in ("skip", "stop"):
        raise RecipeError(f"on_bad_reward: {recipe.on_bad_reward!r}; it is 'skip' (leave the group out of the "
                          "update) or 'stop'")
    recipe.data = DataSection.of(recipe.data)
    recipe.tools = entries(recipe.tools, ToolEntry)
    recipe.rewards = entries(recipe.rewards, RewardEntry)
