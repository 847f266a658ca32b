"""The toy preset's models in one folder: `OUT/policy/` (a plain Hugging Face model directory) and `OUT/clip/`
(an open_clip `local-dir:` checkpoint), built offline (`omnidrive_r1.toy.base`) and cached by content."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from omnidrive_r1.policies import default, get
from omnidrive_r1.rollout import SETTINGS_FILE, RolloutSettings
from omnidrive_r1.toy.base import build_toy_base, toy_base_key
from omnidrive_r1.toy.toydrive import toy_pixels

log = logging.getLogger(__name__)


def ensure_toy_models(out: str | Path, seed: int = 0, family: str | None = None,
                      zoom_share: float | None = None, size: dict | None = None) -> Path:
    """`out` holding the toy base policy (of `family`, a model_type; default: the default family's) and the toy
    CLIP; built (minutes, once per machine) or copied from the cache when missing. A folder that holds other
    files is never written into. `zoom_share`: a reluctant base (`omnidrive_r1.toy.base.box_mix`). `size`: a
    smaller build (`build_toy_base`'s `steps`, `clip_steps`, `attempts`), for checking the machinery only."""
    size = size or {}

    out = Path(out)
    marker = out / ".complete"  # copied from the cache with the build's content key
    if marker.exists() and marker.read_text().strip() != toy_base_key(seed, family=family, zoom_share=zoom_share, **size):
        log.warning(f"{out} holds a toy base built by another version of the recipe; replacing it")
        shutil.rmtree(out)
    if (out / "policy" / "config.json").exists() and (out / "clip" / "open_clip_config.json").exists():
        _save_rollout_settings(out / "policy", family)  # ours, or a folder of the user's (no marker): used as it is
        return out
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} holds files that are not a toy base; choose an empty or new folder")
    built = build_toy_base(seed=seed, family=family, zoom_share=zoom_share, **size)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(built, tmp)
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    _save_rollout_settings(out / "policy", family)
    log.info(f"toy base: {out / 'policy'} and {out / 'clip'}")
    return out


def _save_rollout_settings(policy: Path, family: str | None = None) -> None:
    """The base was fine-tuned on the toy recipes' rollouts: evaluating it rolls out the same way (the zoom tool
    with the recipes' crop bound, two tool turns, 192 tokens), as a trained stage's `final/` does."""
    if not (policy / SETTINGS_FILE).exists():
        crop = toy_pixels(get(family) if family else default())[2]
        RolloutSettings(tools=[{"name": "zoom_in", "max_tool_calls": 2, "max_crop_pixels": crop}],
                        max_turns=2, max_completion_length=192, temperature=1.0).save(policy)
