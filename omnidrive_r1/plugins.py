"""One plug-in mechanism for rewards (`rewards/`) and tools (`tools/`).

A recipe entry is `{name: <a built-in>, ...options}` or `{path: "package.module:obj" | "file.py:obj", ...}`,
typed by `omnidrive_r1.config` (`PluginEntry`: `ToolEntry`, `RewardEntry`). `resolve` finds the object, `bind` applies the options: a class is instantiated with them, a function gets
them bound with `functools.partial`. Either way an unknown option fails at start-up, naming the options the
plug-in takes.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import pkgutil
from pathlib import Path

from omnidrive_r1.config import PluginEntry
from omnidrive_r1.errors import UserError

# parameters every reward receives from TRL: not options a recipe may set
_CALL_PARAMETERS = {"self", "prompts", "completions", "completion_ids", "kwargs", "args"}


class PluginError(UserError):
    """A plug-in entry of a recipe that cannot be used; the message names it and what would work."""


def load_object(target: str, kind: str):
    """The object `name` from `package.module:name` or `file.py:name`."""
    module_name, _, attr = target.partition(":")
    if not attr:
        raise PluginError(f"{kind} path {target!r} must look like 'package.module:name' or 'file.py:name'")
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.exists():
            raise PluginError(f"{kind} file not found: {path}")
        spec = importlib.util.spec_from_file_location(f"omnidrive_user_{kind}_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # the user's file: any error in it is theirs to fix
            raise PluginError(f"{kind} file {path} fails to load: {type(e).__name__}: {e}") from e
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise PluginError(f"cannot import {kind} module {module_name!r}: {e}") from e
    if not hasattr(module, attr):
        raise PluginError(f"{kind} path {target!r}: {module_name} has no attribute {attr!r}")
    return getattr(module, attr)


def builtins(package: str, exclude: frozenset = frozenset()) -> list[str]:
    """Names of the plug-ins shipped in `package` (one module each, defining the `attr` `resolve` asks for)."""
    module = importlib.import_module(package)
    return sorted(m.name for m in pkgutil.iter_modules(module.__path__)
                  if not m.name.startswith("_") and m.name not in exclude)


def resolve(entry: PluginEntry, kind: str, package: str, attr: str, exclude: frozenset = frozenset()):
    """(name, object, options) for one typed recipe entry; `attr` is what a built-in module exports (REWARD,
    TOOL)."""
    if entry.path:
        obj = load_object(entry.path, kind)
        name = entry.name or getattr(obj, "__name__", entry.label)
        return name, obj, dict(entry.options)
    known = builtins(package, exclude)
    if entry.name not in known:
        raise PluginError(f"unknown {kind} {entry.name!r}; known {kind}s: {known} "
                          f"(or give a path: '{kind}s/my_{kind}.py:obj' / 'my_pkg.module:obj')")
    module = importlib.import_module(f"{package}.{entry.name}")
    if not hasattr(module, attr):
        raise PluginError(f"{package}.{entry.name} must define {attr} = <the {kind}>")
    return entry.name, getattr(module, attr), dict(entry.options)


def options_of(obj) -> list[str]:
    """The named options a plug-in takes (constructor parameters of a class, keyword parameters of a function)."""
    # a class: its __init__'s parameters (a __new__ that picks a subclass would hide them from inspect.signature)
    params = list(inspect.signature(obj.__init__).parameters.values())[1:] if inspect.isclass(obj) else \
        list(inspect.signature(obj).parameters.values())
    return [p.name for p in params
            if p.name not in _CALL_PARAMETERS and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]


def check_options(name: str, kind: str, obj, options: dict) -> None:
    """Refuse options the plug-in does not name: every reward takes **kwargs (the dataset columns), which would
    otherwise swallow a misspelt option silently."""
    known = options_of(obj)
    unknown = sorted(k for k in options if k not in known)
    if unknown:
        raise PluginError(f"{kind} {name!r} takes no option(s) {unknown}; its options: {known}")


def bind(name: str, kind: str, obj, options: dict):
    """A class instantiated with `options`, or a function with `options` bound."""
    if not callable(obj):
        raise PluginError(f"{kind} {name!r} is not callable")
    check_options(name, kind, obj, options)
    if inspect.isclass(obj):
        try:
            return obj(**options)
        except (TypeError, ValueError) as e:
            raise PluginError(f"{kind} {name!r}: bad options {options}: {e}") from e
    return functools.partial(obj, **options) if options else obj
