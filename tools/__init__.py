"""Tool plug-ins (installed as `omnidrive_r1.tools`) and the registry that turns a recipe's tool list into
the `environment_factory` TRL's `GRPOTrainer` takes.

A tool is one file in this folder that defines `TOOL = SomeClass`, where the class has `reset(**row)`
(called with the dataset row before each rollout) and one or more public methods with type hints and a
Google-style docstring: those methods are what the policy can call. A recipe then names it in one line:

    tools:
      - {name: zoom_in, max_tool_calls: 4}
      - {name: depth_probe}                       # tools/depth_probe.py
      - {path: "my_pkg.my_tools:Compass"}         # a class of your own

Extra keys are passed to the tool's constructor. TRL calls the factory without arguments, so the options
are bound here.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
from collections.abc import Callable

from omnidrive_r1.plugins import load_object


def available() -> list[str]:
    """Names of the tools shipped in this folder."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def resolve(spec: dict | str) -> tuple[str, type, dict]:
    """(name, class, options) for one recipe entry: `{name: ...}` or `{path: "module:Class"}` plus options."""
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    options = {k: v for k, v in spec.items() if k not in ("name", "path")}
    if "path" in spec:
        target = spec["path"]
        return spec.get("name", target.rpartition(":")[2]), load_object(target, "tool"), options
    name = spec.get("name")
    if name not in available():
        raise ValueError(f"unknown tool {name!r}; known tools: {available()} (or give a path: 'module:Class')")
    module = importlib.import_module(f"{__name__}.{name}")
    if not hasattr(module, "TOOL"):
        raise ValueError(f"tools/{name}.py must define TOOL = <its class>")
    return name, module.TOOL, options


def tool_methods(cls: type) -> dict[str, Callable]:
    """The public methods of a tool class that the policy may call."""
    return {n: f for n, f in inspect.getmembers(cls, predicate=inspect.isfunction)
            if not n.startswith("_") and n not in ("reset", "get_reward")}


def environment_factory(specs: list[dict | str]) -> Callable[[], object]:
    """A zero-argument factory of environments exposing every listed tool.

    One tool: instances of its class. Several: instances of a class generated here whose methods forward
    to one instance of each tool (`env.parts[name]`), so TRL sees all the tools of every tool class.
    """
    resolved = [resolve(s) for s in specs]
    if not resolved:
        raise ValueError("the recipe lists no tools")
    if len(resolved) == 1:
        _, cls, options = resolved[0]
        return functools.partial(cls, **options)
    names = [n for n, _, _ in resolved]
    if len(set(names)) != len(names):
        raise ValueError(f"tool names must be unique, got {names}")
    namespace = {}
    for name, cls, _ in resolved:
        for method_name, fn in tool_methods(cls).items():
            if method_name in namespace:
                raise ValueError(f"two tools define the method {method_name!r}")
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
