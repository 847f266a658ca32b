"""Loading a user's plug-in (a reward or a tool) from `package.module:name` or `path/to/file.py:name`."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path


def load_object(target: str, kind: str):
    """The object `name` from `package.module:name` or `file.py:name`; ValueError naming what is wrong."""
    module_name, _, attr = target.partition(":")
    if not attr:
        raise ValueError(f"{kind} path {target!r} must look like 'package.module:name' or 'file.py:name'")
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.exists():
            raise ValueError(f"{kind} file not found: {path}")
        spec = importlib.util.spec_from_file_location(f"omnidrive_user_{kind}_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise ValueError(f"cannot import {kind} module {module_name!r}: {e}") from e
    if not hasattr(module, attr):
        raise ValueError(f"{kind} path {target!r}: {module_name} has no attribute {attr!r}")
    return getattr(module, attr)
