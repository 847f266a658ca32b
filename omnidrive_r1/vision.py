"""The coordinate contract (`docs/coordinates.md`), in one place.

The policy sees an image of size (w, h) after `smart_resize` -> (w', h') and writes `bbox_2d` in absolute
pixels of that resized image. `zoom_box` turns such a box into a box of the original image:

1. validate: four finite real numbers, else `ZoomError`;
2. swap reversed corners, clamp into [0, w'] x [0, h'], refuse a box with no area left;
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

PATCH_FACTOR = 28  # Qwen2.5-VL: 14-px patches merged 2x2
MAX_ASPECT = 100.0  # the processor refuses images past 200:1; crops that thin carry no useful detail anyway


class ZoomError(ValueError):
    """A zoom request that cannot be served; `reason` is a short, countable failure name."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def model_size(width: int, height: int, *, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """(w', h'): the size at which the policy sees a `width` x `height` image.

    qwen-vl-utils can round a very thin side down to 0 where transformers' image processor (what the model
    really gets) keeps one patch row; the floor of one factor makes the two agree.
    """
    h, w = smart_resize(height, width, factor=PATCH_FACTOR, min_pixels=min_pixels, max_pixels=max_pixels)
    return max(PATCH_FACTOR, w), max(PATCH_FACTOR, h)


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


def zoom_box(image_size: tuple[int, int], bbox_2d, *, min_pixels: int, max_pixels: int, min_side: int = 28,
             max_aspect: float = MAX_ASPECT) -> tuple[int, int, int, int]:
    """Map a policy box (model pixels) to an integer box (left, top, right, bottom) of the original image."""
    w, h = image_size
    mw, mh = model_size(w, h, min_pixels=min_pixels, max_pixels=max_pixels)
    x1, y1, x2, y2 = _parse_box(bbox_2d)
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))
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
    left, top = max(0, math.floor(x1 * sx)), max(0, math.floor(y1 * sy))
    right, bottom = min(w, math.ceil(x2 * sx)), min(h, math.ceil(y2 * sy))
    return left, top, right, bottom


def zoom_crop(image: Image.Image, bbox_2d, *, min_pixels: int, max_pixels: int, min_side: int = 28,
              max_aspect: float = MAX_ASPECT) -> Image.Image:
    """Crop `image` (original resolution) at a box the policy wrote in the coordinates of the image it sees.

    >>> img = Image.new("RGB", (2400, 900))
    >>> zoom_crop(img, [280, 98, 308, 126], min_pixels=6272, max_pixels=125440).size  # 560x196 seen
    (120, 129)

    Raises `ZoomError` (a `ValueError`) with a `reason` for boxes that cannot be served.
    """
    box = zoom_box(image.size, bbox_2d, min_pixels=min_pixels, max_pixels=max_pixels, min_side=min_side,
                   max_aspect=max_aspect)
    return image.crop(box)


def vision_token_ids(config) -> list[int]:
    """The placeholder tokens of images and videos, which only the processor may write."""
    return [t for t in (getattr(config, "image_token_id", None), getattr(config, "video_token_id", None))
            if t is not None]


def thumbnail(image, side: int):
    """`image` shrunk to fit `side` x `side` (a PIL image; anything else, or a small one, is returned as is)."""
    from PIL import ImageOps

    if not isinstance(image, Image.Image) or max(image.size) <= side:
        return image  # ImageOps.contain would enlarge a small one
    return ImageOps.contain(image, (side, side), Image.Resampling.BILINEAR)
