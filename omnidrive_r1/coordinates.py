"""The coordinate contract (`docs/coordinates.md`), in one place.

The policy sees an image of size (w, h) after `smart_resize` -> (w', h') (sides multiples of its family's
`factor`, `omnidrive_r1/policies/`) and writes `bbox_2d` in the family's convention: absolute pixels of that
resized image (`coordinates="pixels"`, Qwen2.5-VL), or relative, 0 to 1000 on each axis
(`coordinates="relative"`, Qwen3-VL), which is first mapped onto (w', h'). `zoom_box` turns such a box into a box
of the original image:

1. validate: four finite real numbers, else `ZoomError`;
2. swap reversed corners, (relative: scale x by w'/1000 and y by h'/1000,) clamp into [0, w'] x [0, h'], refuse a
   box with no area left;
3. grow a side shorter than `min_side` (model pixels) around the box centre, shifted back inside;
4. refuse an extreme aspect ratio (the processor cannot embed it);
5. scale to original pixels, x * w / w' and y * h / h', rounded outwards.

`zoom_crop` crops the original, full-resolution image with that box, which is where the extra detail
comes from. Everything is pure and deterministic.
"""

from __future__ import annotations

import math
from numbers import Real

from PIL import Image
from qwen_vl_utils import smart_resize

COORDINATES = ("pixels", "relative")
RELATIVE_SCALE = 1000.0  # relative boxes run 0..1000 on each axis
MAX_ASPECT = 100.0  # the processor refuses images past 200:1; crops that thin carry no useful detail anyway


class ZoomError(ValueError):
    """A zoom request that cannot be served; `reason` is a short, countable failure name."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def model_size(width: int, height: int, *, min_pixels: int, max_pixels: int, factor: int) -> tuple[int, int]:
    """(w', h'): the size at which the policy sees a `width` x `height` image (`factor`: its family's resize factor).

    qwen-vl-utils can round a very thin side down to 0 where transformers' image processor (what the model
    really gets) keeps one patch row; the floor of one factor makes the two agree.
    """
    h, w = smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    return max(factor, w), max(factor, h)


def _parse_box(bbox_2d) -> tuple[float, float, float, float]:
    if isinstance(bbox_2d, (str, bytes, dict)) or not hasattr(bbox_2d, "__len__"):
        raise ZoomError("not_a_box", f"bbox_2d must be a list of four numbers [x1, y1, x2, y2], got {bbox_2d!r:.80}")
    if len(bbox_2d) != 4:
        raise ZoomError("wrong_arity", f"bbox_2d must have 4 numbers [x1, y1, x2, y2], got {len(bbox_2d)}")
    values = []
    for v in bbox_2d:
        if isinstance(v, bool) or not isinstance(v, Real):
            raise ZoomError("not_a_number", f"bbox_2d values must be numbers, got {v!r:.40}")
        v = float(v)
        if not math.isfinite(v):
            raise ZoomError("not_finite", f"bbox_2d values must be finite, got {v}")
        values.append(v)
    return tuple(values)


def _grow(lo: float, hi: float, min_len: float, limit: float) -> tuple[float, float]:
    """Grow [lo, hi] to at least `min_len` around its centre, then shift it back inside [0, limit]."""
    if hi - lo >= min_len:
        return lo, hi
    min_len = min(min_len, limit)
    centre = (lo + hi) / 2
    lo, hi = centre - min_len / 2, centre + min_len / 2
    if lo < 0:
        lo, hi = 0.0, min_len
    elif hi > limit:
        lo, hi = limit - min_len, limit
    return lo, hi


def zoom_box(image_size: tuple[int, int], bbox_2d, *, min_pixels: int, max_pixels: int, factor: int,
             coordinates: str = "pixels", min_side: int | None = None,
             max_aspect: float = MAX_ASPECT) -> tuple[int, int, int, int]:
    """Map a policy box (in `coordinates`) to an integer box (left, top, right, bottom) of the original image.
    `min_side` (model pixels) defaults to one `factor`."""
    if coordinates not in COORDINATES:
        raise ValueError(f"coordinates must be one of {COORDINATES}, got {coordinates!r}")
    min_side = factor if min_side is None else min_side
    w, h = image_size
    mw, mh = model_size(w, h, min_pixels=min_pixels, max_pixels=max_pixels, factor=factor)
    x1, y1, x2, y2 = _parse_box(bbox_2d)
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))
    if coordinates == "relative":
        x1, x2 = x1 * mw / RELATIVE_SCALE, x2 * mw / RELATIVE_SCALE
        y1, y2 = y1 * mh / RELATIVE_SCALE, y2 * mh / RELATIVE_SCALE
    x1, x2 = min(max(x1, 0.0), mw), min(max(x2, 0.0), mw)
    y1, y2 = min(max(y1, 0.0), mh), min(max(y2, 0.0), mh)
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        raise ZoomError("empty_box", f"bbox_2d has no area inside the {mw}x{mh} image you see")
    x1, x2 = _grow(x1, x2, min_side, mw)
    y1, y2 = _grow(y1, y2, min_side, mh)
    aspect = max(x2 - x1, y2 - y1) / min(x2 - x1, y2 - y1)
    if aspect > max_aspect:
        raise ZoomError("extreme_aspect", f"bbox_2d is {aspect:.0f} times longer than wide; at most {max_aspect:.0f}")
    sx, sy = w / mw, h / mh
    # relative boxes went through two scalings: forgive the float noise (1440.0000000002 is pixel 1440)
    eps = 1e-6 if coordinates == "relative" else 0.0
    left, top = max(0, math.floor(x1 * sx + eps)), max(0, math.floor(y1 * sy + eps))
    right, bottom = min(w, math.ceil(x2 * sx - eps)), min(h, math.ceil(y2 * sy - eps))
    return left, top, right, bottom


def zoom_crop(image: Image.Image, bbox_2d, *, min_pixels: int, max_pixels: int, factor: int,
              coordinates: str = "pixels", min_side: int | None = None, max_aspect: float = MAX_ASPECT) -> Image.Image:
    """Crop `image` (original resolution) at a box the policy wrote in the coordinates of the image it sees.

    >>> img = Image.new("RGB", (2400, 900))
    >>> zoom_crop(img, [280, 98, 308, 126], min_pixels=6272, max_pixels=125440, factor=14 * 2).size  # 560x196
    (120, 129)
    >>> zoom_crop(img, [500, 400, 600, 700], min_pixels=6272, max_pixels=125440, factor=16 * 2,
    ...           coordinates="relative").size  # thousandths of each side: x 1200..1440, y 360..630
    (240, 270)

    Raises `ZoomError` (a `ValueError`) with a `reason` for boxes that cannot be served.
    """
    box = zoom_box(image.size, bbox_2d, min_pixels=min_pixels, max_pixels=max_pixels, factor=factor,
                   coordinates=coordinates, min_side=min_side, max_aspect=max_aspect)
    return image.crop(box)
