"""Six nuScenes cameras -> one 2x3 frame (`docs/data.md`), cached on disk.

Top row: FRONT_LEFT, FRONT, FRONT_RIGHT; bottom row: BACK_RIGHT, BACK, BACK_LEFT. This is also the order
of the `image` list in DriveLMM-o1 rows, so camera k lands in cell (k // 3, k % 3).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from PIL import Image

CAMERAS = ["CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT"]
_STITCH_VERSION = "1"


def cell_origin(camera: str, cell_size: tuple[int, int]) -> tuple[int, int]:
    """Top-left pixel of `camera`'s cell in the stitched frame."""
    k = CAMERAS.index(camera)
    return (k % 3) * cell_size[0], (k // 3) * cell_size[1]


def stitch(images: list[Image.Image]) -> Image.Image:
    """Paste six camera images into the 2x3 grid. Cells take the size of CAM_FRONT (index 1); a camera of
    another size is resized into its cell."""
    if len(images) != len(CAMERAS):
        raise ValueError(f"expected {len(CAMERAS)} camera images, got {len(images)}")
    w, h = images[1].size
    frame = Image.new("RGB", (3 * w, 2 * h))
    for cam, img in zip(CAMERAS, images):
        img = img.convert("RGB")
        if img.size != (w, h):
            img = img.resize((w, h), Image.Resampling.BICUBIC)
        frame.paste(img, cell_origin(cam, (w, h)))
    return frame


def stitch_cache_key(paths: list[Path]) -> str:
    h = hashlib.sha1(_STITCH_VERSION.encode())
    for p in paths:
        st = os.stat(p)
        h.update(f"{os.path.abspath(p)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def stitched_path(paths: list[Path], cache_dir: Path, open_image) -> Path:
    """Path of the cached stitched frame for these six files, stitching it first if it is not there.

    The key covers each file's path, size and mtime, so an edited camera image is re-stitched.
    `open_image(path)` opens one camera image (the loader passes one that names the file on errors).
    """
    target = Path(cache_dir) / f"{stitch_cache_key(paths)}.jpg"
    if not target.exists():
        frame = stitch([open_image(p) for p in paths])
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        frame.save(tmp, format="JPEG", quality=95, subsampling=0)
        os.replace(tmp, target)
    return target
