"""The toy preset's models, built offline into one folder: `OUT/policy/` (a plain Hugging Face model directory)
and `OUT/clip/` (an open_clip `local-dir:` checkpoint)."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def ensure_toy_models(out: str | Path, seed: int = 0) -> Path:
    """`out` with the toy policy and CLIP in it, built first if missing (a complete build is never redone)."""
    from omnidrive_r1.toy.tiny import build_tiny_clip, build_tiny_policy

    out = Path(out)
    build_tiny_policy(seed, out / "policy")
    build_tiny_clip(seed, out / "clip")
    return out
