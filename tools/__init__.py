"""Tool plug-ins (installed as `omnidrive_r1.tools`) and the registry that turns a recipe's tool list into
the `environment_factory` TRL's `GRPOTrainer` takes.

A tool is one file in this folder that defines `TOOL = SomeClass`, where the class has `reset(**row)`
(called with the dataset row before each rollout) and one or more public methods with type hints and a
Google-style docstring: those methods are what the policy can call. A recipe then names it in one line:

    tools:
      - {name: zoom_in, max_tool_calls: 4}
      - {name: depth_probe}                       # tools/depth_probe.py
      - {path: "my_pkg.my_tools:Compass"}         # a class of your own

Extra keys are passed to the tool's constructor (a misspelt one fails at start-up, naming the options). TRL
calls the factory without arguments, so the options are bound here. A tool module may also define
`metrics(instances) -> dict` (logged every step) and `annotate(instance, completion)` (called once a
trajectory is complete, before the rewards).
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable

from omnidrive_r1.config import RecipeError, ToolEntry, entries
from omnidrive_r1.plugins import PluginError, bind, builtins, resolve


def available() -> list[str]:
    """Names of the tools shipped in this folder."""
    return builtins(__name__)


def tool_methods(cls: type) -> dict[str, Callable]:
    """The public methods of a tool class that the policy may call."""
    return {n: f for n, f in inspect.getmembers(cls, predicate=inspect.isfunction)
            if not n.startswith("_") and n not in ("reset", "get_reward")}


def environment_factory(specs: list[ToolEntry | dict | str]) -> Callable[[], object]:
    """A zero-argument factory of environments exposing every listed tool (typed entries, or their recipe form).

    One tool: instances of its class. Several: instances of a class generated here whose methods forward
    to one instance of each tool (`env.parts[name]`), so TRL sees all the tools of every tool class.
    """
    try:
        typed = entries(list(specs), ToolEntry)
    except RecipeError as e:
        raise PluginError(str(e)) from e
    resolved = [resolve(entry, "tool", __name__, "TOOL") for entry in typed]
    for name, cls, options in resolved:
        bind(name, "tool", cls, options)  # one instance now: a misspelt or bad option fails before any model loads
    if len(resolved) == 1:
        _, cls, options = resolved[0]
        return functools.partial(cls, **options)
    names = [n for n, _, _ in resolved]
    if len(set(names)) != len(names):
        raise PluginError(f"tool names must be unique, got {names}")
    namespace = {}
    for name, cls, _ in resolved:
        for method_name, fn in tool_methods(cls).items():
            if method_name in namespace:
                raise PluginError(f"two tools define the method {method_name!r}")
            namespace[method_name] = _forward(name, method_name, fn)

    def __init__(self):
        self.parts = {name: cls(**options) for name, cls, options in resolved}

    def reset(self, **row):
        for part in self.parts.values():
            part.reset(**row)

    namespace.update(__init__=__init__, reset=reset, __doc__="Tools: " + ", ".join(names))
    return type("ToolEnvironment", (), namespace)


def _forward(part: str, method_name: str, fn: Callable) -> Callable:
    @functools.wraps(fn)  # keeps the signature and docstring TRL builds the tool schema from
    def call(self, *args, **kwargs):
        return getattr(self.parts[part], method_name)(*args, **kwargs)

    return call


def parts(environment) -> list:
    """The tool instances inside an environment built by `environment_factory`."""
    return list(getattr(environment, "parts", {}).values()) or [environment]


def batch_metrics(environments) -> dict[str, float]:
    """Tool-use metrics of a generation batch: each tool module may define `metrics(instances) -> dict`."""
    by_class: dict[type, list] = {}
    for env in environments or []:
        for part in parts(env):
            by_class.setdefault(type(part), []).append(part)
    out = {}
    for cls, instances in by_class.items():
        metrics = getattr(sys.modules.get(cls.__module__), "metrics", None)
        if callable(metrics):
            out.update(metrics(instances))
    return out


def annotate(environment, completion: list[dict]) -> None:
    """Let each tool record what it needs from the finished trajectory: a tool module may define
    `annotate(instance, completion)` (the zoom tool keeps the text written before each call)."""
    for part in parts(environment):
        hook = getattr(sys.modules.get(type(part).__module__), "annotate", None)
        if callable(hook):
            hook(part, completion)


def find_part(environment, cls: type):
    """The instance of tool class `cls` inside an environment built by `environment_factory` (or None)."""
    if isinstance(environment, cls):
        return environment
    for part in getattr(environment, "parts", {}).values():
        if isinstance(part, cls):
            return part
    return None


def lenient(method: Callable) -> Callable:
    """Let a tool method receive any keyword arguments the policy writes.

    TRL calls `method(**arguments)`; a missing or unexpected key would raise `TypeError` in TRL before the
    tool sees the call. Wrapped, the call reaches the tool, which answers with an error text and counts
    the failure through its `_bad_arguments(message, arguments)` method. The schema TRL builds still comes
    from the original signature and docstring.
    """
    signature = inspect.signature(method)

    @functools.wraps(method)
    def call(self, /, **arguments):
        try:
            signature.bind(self, **arguments)
        except TypeError as e:
            return self._bad_arguments(str(e), arguments)
        return method(self, **arguments)

    return call
