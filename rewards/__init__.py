"""Reward plug-ins (installed as `omnidrive_r1.rewards`) and the registry that turns a recipe's reward list
into TRL's `reward_funcs` and `reward_weights` (definitions: `docs/rewards.md`).

A reward is TRL's signature, `fn(prompts, completions, completion_ids, **kwargs) -> list[float | None]`:
dataset columns (`answer`, `is_mcq`, `source`, `idx`, ...) and `environments` (the tool instances of each
rollout) arrive in kwargs; `None` means "not applicable". In a recipe:

    rewards:
      - {name: answer_accuracy, weight: 1.0}
      - {name: format, weight: 0.2}
      - {name: clip_grounding, weight: 0.5, margin: 0.1, model_name: ViT-B-32, pretrained: openai}
      - {path: "rewards/my_reward.py:brevity", weight: 0.1}     # a file of your own
      - {path: "my_pkg.rewards:judge", weight: 1.0}             # or an importable module

Extra keys are options: a class is instantiated with them (for rewards that hold state, such as a CLIP
model); a function gets them bound. Every reward is wrapped in `CheckedReward`, which refuses values that are
not numbers and records non-finite ones for the trainer's `on_bad_reward` policy.
"""

from __future__ import annotations

import logging
import math
from numbers import Real

from omnidrive_r1.config import RecipeError, RewardEntry, entries
from omnidrive_r1.plugins import PluginError, bind, builtins, resolve

log = logging.getLogger(__name__)


def available() -> list[str]:
    """Names of the built-in rewards."""
    return builtins(__name__)


class RewardError(PluginError):
    """A reward returned something that is not a number (a bug in the reward); names the reward and sample."""


class CheckedReward:
    """A reward function whose every value is checked: a finite number or None passes; a non-finite number
    is replaced by 0.0 and its sample recorded in `bad` (the trainer then leaves that sample's group out of the
    update, or stops); anything else raises `RewardError`."""

    def __init__(self, fn, name: str):
        self.fn, self.__name__ = fn, name
        self.bad: list[tuple[int, float]] = []  # (sample index in the batch, offending value), last call

    def __call__(self, prompts, completions, *args, **kwargs):
        values = self.fn(prompts, completions, *args, **kwargs)
        self.bad = []
        try:
            values = list(values)
        except TypeError:
            raise RewardError(f"reward {self.__name__!r} returned {type(values).__name__}, not a list with one "
                              "number per completion") from None
        idx = kwargs.get("idx")
        for i, value in enumerate(values):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, Real):
                where = f" (idx {idx[i]!r})" if idx is not None and i < len(idx) else ""
                raise RewardError(f"reward {self.__name__!r} returned {value!r:.60} ({type(value).__name__}) for "
                                  f"sample {i}{where}; a reward returns a number or None per completion")
            if not math.isfinite(value):
                self.bad.append((i, float(value)))
                values[i] = 0.0
        return values


def build_rewards(specs: list[RewardEntry | dict | str]):
    """(reward_funcs, reward_weights, names) for TRL from a recipe's `rewards` list (typed, or its recipe form)."""
    if not specs:
        raise PluginError("the recipe lists no rewards; known rewards: " + ", ".join(available()))
    try:
        typed = entries(list(specs), RewardEntry)
    except RecipeError as e:
        raise PluginError(str(e)) from e
    funcs, weights, names = [], [], []
    for entry in typed:
        name, target, options = resolve(entry, "reward", __name__, "REWARD")
        funcs.append(CheckedReward(bind(name, "reward", target, options), name))
        weights.append(entry.weight)
        names.append(name)
    if len(set(names)) != len(names):
        raise PluginError(f"reward names must be unique, got {names}")
    return funcs, weights, names
