"""The on-disk cache of built models and stitched frames: `$OMNIDRIVE_CACHE`, default ~/.cache/omnidrive-r1."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


def cache_root() -> Path:
    return Path(os.environ.get("OMNIDRIVE_CACHE", Path.home() / ".cache" / "omnidrive-r1"))


# what decides which CPU kernels torch picks and compiles for (the instruction set, and the variables that
# limit it); vLLM's compile cache does not key on them
_ISA_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR")


def cpu_isa_key() -> str:
    """A short digest of this CPU's instruction-set flags and the variables that limit what torch uses of them."""
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1] for line in f if line.startswith("flags")), "")
    except OSError:
        flags = platform.processor()
    return content_key(sorted(flags.split()), {v: os.environ.get(v) for v in _ISA_VARIABLES})


def isolate_vllm_compile_cache() -> str | None:
    """Point vLLM's compile cache at a folder of this CPU's own, unless the user chose one (`VLLM_CACHE_ROOT`).

    vLLM on CPU loads the kernels it compiled earlier from `~/.cache/vllm` without checking which instruction set
    they were compiled for: kernels built under `ATEN_CPU_CAPABILITY=avx2` (or on another machine sharing the home
    folder) abort the process ('Fatal Python error: Aborted' in inductor code; seen here). Returns the folder."""
    if os.environ.get("VLLM_CACHE_ROOT"):
        return os.environ["VLLM_CACHE_ROOT"]
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vllm" / f"cpu-{cpu_isa_key()}"
    os.environ["VLLM_CACHE_ROOT"] = str(root)
    return str(root)


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
