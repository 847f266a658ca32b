"""Reward plug-ins (installed as `omnidrive_r1.rewards`) and the registry that turns a recipe's reward list
into TRL's `reward_funcs` and `reward_weights`.

A reward is TRL's signature, `fn(prompts, completions, completion_ids, **kwargs) -> list[float | None]`:
dataset columns (`answer`, `is_mcq`, `source`, `idx`, ...) and `environments` (the tool instances of each
rollout) arrive in kwargs; `None` means "not applicable". In a recipe:

    rewards:
      - {name: answer_accuracy, weight: 1.0}
      - {name: format, weight: 0.2}
      - {name: clip_grounding, weight: 0.5, margin: 0.1, model_name: ViT-B-32, pretrained: openai}
      - {path: "rewards/my_reward.py:brevity", weight: 0.1}     # a file of your own
      - {path: "my_pkg.rewards:judge", weight: 1.0}             # or an importable module

Extra keys are keyword arguments: a class is instantiated with them (for rewards that hold state, such as
a CLIP model); a function gets them bound with `functools.partial`.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil

from omnidrive_r1.plugins import load_object

_NOT_REWARDS = {"tool_metrics"}


def available() -> list[str]:
    """Names of the built-in rewards."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__)
                  if not m.name.startswith("_") and m.name not in _NOT_REWARDS)


def resolve(spec: dict | str):
    """(name, callable target, weight, kwargs) for one recipe entry."""
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    weight = float(spec.pop("weight", 1.0))
    if "path" in spec:
        path = spec.pop("path")
        target = load_object(path, "reward")
        name = spec.pop("name", getattr(target, "__name__", path))
    else:
        name = spec.pop("name", None)
        if name not in available():
            raise ValueError(f"unknown reward {name!r}; known rewards: {available()} "
                             "(or give a path: 'rewards/my_reward.py:fn' / 'my_pkg.module:fn')")
        target = importlib.import_module(f"{__name__}.{name}").REWARD
    if not callable(target):
        raise ValueError(f"reward {name!r} is not callable")
    return name, target, weight, spec


def instantiate(name: str, target, kwargs: dict):
    if inspect.isclass(target):
        try:
            fn = target(**kwargs)
        except TypeError as e:
            raise ValueError(f"reward {name!r}: bad options {sorted(kwargs)}: {e}") from e
    elif kwargs:
        # options must be named parameters: reward functions all take **kwargs (the dataset columns), which
        # would otherwise swallow a misspelt option silently
        params = inspect.signature(target).parameters
        unknown = [k for k in kwargs if k not in params or params[k].kind is inspect.Parameter.VAR_KEYWORD]
        if unknown:
            raise ValueError(f"reward {name!r} takes no option(s) {unknown}; its options: "
                             f"{[p for p in params if p not in ('prompts', 'completions', 'completion_ids', 'kwargs')]}")
        fn = functools.partial(target, **kwargs)
    else:
        fn = target
    return fn


class LogToolUse:
    """Wraps one reward so that, once per generation batch, the tool-use metrics go to the trainer's logs."""

    def __init__(self, fn):
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", "reward")

    def __call__(self, *args, environments=None, log_metric=None, **kwargs):
        from omnidrive_r1.rewards.tool_metrics import tool_use_metrics

        if log_metric is not None:
            for key, value in tool_use_metrics(environments).items():
                log_metric(key, value)
        return self.fn(*args, environments=environments, log_metric=log_metric, **kwargs)


def build_rewards(specs: list[dict | str], log_tool_use: bool = True):
    """(reward_funcs, reward_weights, names) for TRL from a recipe's `rewards` list."""
    if not specs:
        raise ValueError("the recipe lists no rewards; known rewards: " + ", ".join(available()))
    funcs, weights, names = [], [], []
    for spec in specs:
        name, target, weight, kwargs = resolve(spec)
        funcs.append(instantiate(name, target, kwargs))
        weights.append(weight)
        names.append(name)
    if len(set(names)) != len(names):
        raise ValueError(f"reward names must be unique, got {names}")
    if log_tool_use:
        funcs[0] = LogToolUse(funcs[0])
    return funcs, weights, names
