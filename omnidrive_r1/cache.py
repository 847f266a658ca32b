"""The on-disk cache of built models and stitched frames: `$OMNIDRIVE_CACHE`, default ~/.cache/omnidrive-r1."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


def cache_root() -> Path:
    return Path(os.environ.get("OMNIDRIVE_CACHE", Path.home() / ".cache" / "omnidrive-r1"))


def content_key(*parts) -> str:
    """A short digest of everything a build depends on (config, seed, build version): its cache key."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def build_atomically(target: Path, build, key: str | None = None) -> Path:
    """Run `build(tmp_dir)` and move the result to `target`, so a killed build never leaves half a directory.

    `target` counts as built once it holds `.complete` (which records `key`, the recipe's content key, when one
    is given: a target built by another recipe is rebuilt rather than silently reused). An existing `target` is
    replaced only when it holds `.complete` or is empty: never a folder of the user's."""
    target = Path(target)
    marker = target / ".complete"
    stamp = f"{key or 'ok'}\n"
    if marker.exists():
        if key is None or marker.read_text() == stamp:
            return target
        log.warning(f"{target} was built by another recipe (an older version?); rebuilding it")
        shutil.rmtree(target)
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"{target} exists and holds files this command did not write; "
                              "choose an empty or new folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        build(tmp)
        (tmp / ".complete").write_text(stamp)
        if target.exists():
            target.rmdir()
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
