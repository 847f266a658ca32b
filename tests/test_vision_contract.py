"""Property tests of the coordinate contract (`docs/coordinates.md`), for every model family: Qwen2.5-VL writes
boxes in pixels of the image it sees (resize factor 28), Qwen3-VL relative to it, 0..1000 (factor 32)."""

import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from omnidrive_r1 import policies
from omnidrive_r1.coordinates import ZoomError, model_size, zoom_box, zoom_crop

MARK = (255, 0, 255)
# ZOOM_PROPERTY_EXAMPLES=600 for a deeper search than CI's default
SETTINGS = settings(max_examples=int(os.environ.get("ZOOM_PROPERTY_EXAMPLES", 60)), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
FAMILIES = pytest.mark.parametrize("family", policies.families(), ids=lambda f: f.name)


def _geometry(family) -> dict:
    return {"factor": family.factor, "coordinates": family.coordinates}


def _seen(size, min_pixels, max_pixels, family):
    return model_size(*size, min_pixels=min_pixels, max_pixels=max_pixels, factor=family.factor)


def _written(family, size, box, min_pixels, max_pixels):
    """A box given in pixels of the image the policy sees, as the family writes it."""
    if family.coordinates == "pixels":
        return list(box)
    mw, mh = _seen(size, min_pixels, max_pixels, family)
    return [box[0] * 1000 / mw, box[1] * 1000 / mh, box[2] * 1000 / mw, box[3] * 1000 / mh]


@st.composite
def scenes(draw, family):
    """An image size (stitched frames, camera frames, tiny images, odd aspects), resize bounds that
    change the size, and a marker rectangle."""
    f = family.factor
    w, h = draw(st.one_of(
        st.just((4800, 1800)), st.just((2400, 900)), st.just((1600, 900)),
        st.tuples(st.integers(12, 120), st.integers(12, 120)),            # tiny: upscaled by the processor
        st.tuples(st.integers(200, 3000), st.integers(150, 2000)),
    ))
    min_pixels = draw(st.sampled_from([f * f, 4 * f * f, 4 * f * f + f, 64 * f * f]))
    max_pixels = draw(st.integers(max(min_pixels, 16 * f * f), 1280 * f * f))
    mw, mh = _seen((w, h), min_pixels, max_pixels, family)
    sx, sy = w / mw, h / mh
    assume(abs(sx - 1) > 0.15 and abs(sy - 1) > 0.15)  # the resize really moves things
    mark_w = draw(st.integers(max(2, w // 60), max(2, w // 12)))
    mark_h = draw(st.integers(max(2, h // 60), max(2, h // 12)))
    x = draw(st.integers(0, w - mark_w))
    y = draw(st.integers(0, h - mark_h))
    return (w, h), min_pixels, max_pixels, (x, y, x + mark_w, y + mark_h)


def _image_with_marker(size, mark):
    a = np.zeros((size[1], size[0], 3), np.uint8)
    x1, y1, x2, y2 = mark
    a[y1:y2, x1:x2] = MARK
    return Image.fromarray(a)


def _marker_pixels(img):
    return int((np.asarray(img) == MARK).all(-1).sum())


def _policy_box(size, mark, min_pixels, max_pixels, family, margin=1.0):
    """The box a perfect policy writes: around the marker, one pixel of the image it sees wider on each side,
    in its family's convention."""
    mw, mh = _seen(size, min_pixels, max_pixels, family)
    sx, sy = mw / size[0], mh / size[1]
    x1, y1, x2, y2 = mark
    box = [x1 * sx - margin, y1 * sy - margin, x2 * sx + margin, y2 * sy + margin]
    return _written(family, size, box, min_pixels, max_pixels)


@FAMILIES
@SETTINGS
@given(data=st.data())
def test_a_box_around_the_marker_crops_the_marker_and_little_else(family, data):
    size, min_pixels, max_pixels, mark = data.draw(scenes(family))
    img = _image_with_marker(size, mark)
    box = _policy_box(size, mark, min_pixels, max_pixels, family)
    crop = zoom_crop(img, box, min_pixels=min_pixels, max_pixels=max_pixels, **_geometry(family))
    assert _marker_pixels(crop) == (mark[2] - mark[0]) * (mark[3] - mark[1])

    mw, mh = _seen(size, min_pixels, max_pixels, family)
    sx, sy = size[0] / mw, size[1] / mh
    f = family.factor
    max_w = max(mark[2] - mark[0] + 2 * sx, min(f, mw) * sx) + 2
    max_h = max(mark[3] - mark[1] + 2 * sy, min(f, mh) * sy) + 2
    assert crop.width <= math.ceil(max_w) and crop.height <= math.ceil(max_h)


@FAMILIES
@SETTINGS
@given(data=st.data())
def test_the_test_catches_a_mapping_that_ignores_the_resize(family, data):
    """Cropping the original with the numbers the policy wrote (DeepEyes issue #141) misses the marker."""
    size, min_pixels, max_pixels, mark = data.draw(scenes(family))
    img = _image_with_marker(size, mark)
    box = _policy_box(size, mark, min_pixels, max_pixels, family)
    x1, y1, x2, y2 = (max(0, int(v)) for v in box)
    # only where the naive box really leaves part of the marker out: a marker at the image's edge can stay
    # inside it (a box that starts left of 0 is clamped to 0), and then the naive crop still shows it whole
    assume(not (x1 <= mark[0] and y1 <= mark[1] and max(x1 + 1, x2) >= mark[2] and max(y1 + 1, y2) >= mark[3]))
    naive = img.crop((x1, y1, max(x1 + 1, x2), max(y1 + 1, y2)))
    assert _marker_pixels(naive) < (mark[2] - mark[0]) * (mark[3] - mark[1])


@FAMILIES
@SETTINGS
@given(data=st.data(), flip_x=st.booleans(), flip_y=st.booleans())
def test_reversed_corners_are_swapped_and_outside_parts_clamped(family, data, flip_x, flip_y):
    size, min_pixels, max_pixels, mark = data.draw(scenes(family))
    geometry = _geometry(family)
    box = _policy_box(size, mark, min_pixels, max_pixels, family)
    ref = zoom_box(size, box, min_pixels=min_pixels, max_pixels=max_pixels, **geometry)
    if flip_x:
        box[0], box[2] = box[2], box[0]
    if flip_y:
        box[1], box[3] = box[3], box[1]
    assert zoom_box(size, box, min_pixels=min_pixels, max_pixels=max_pixels, **geometry) == ref
    mw, mh = _seen(size, min_pixels, max_pixels, family)
    beyond = _written(family, size, [-50, -50, mw + 50, mh + 50], min_pixels, max_pixels)
    assert zoom_box(size, beyond, min_pixels=min_pixels, max_pixels=max_pixels, **geometry) == (0, 0, *size)


@FAMILIES
@SETTINGS
@given(data=st.data(), fx=st.floats(0, 1), fy=st.floats(0, 1))
def test_small_boxes_grow_to_the_minimum_side_inside_the_image(family, data, fx, fy):
    size, min_pixels, max_pixels, _ = data.draw(scenes(family))
    mw, mh = _seen(size, min_pixels, max_pixels, family)
    cx, cy = fx * mw, fy * mh
    box = [cx - 0.5, cy - 0.5, cx + 0.5, cy + 0.5]
    assume(0 < box[0] and box[2] < mw and 0 < box[1] and box[3] < mh)
    written = _written(family, size, box, min_pixels, max_pixels)
    left, top, right, bottom = zoom_box(size, written, min_pixels=min_pixels, max_pixels=max_pixels,
                                        **_geometry(family))  # min_side: one factor
    f = family.factor
    assert 0 <= left < right <= size[0] and 0 <= top < bottom <= size[1]
    assert right - left >= math.floor(min(f, mw) * size[0] / mw)
    assert bottom - top >= math.floor(min(f, mh) * size[1] / mh)


@FAMILIES
def test_nested_zoom_composes_back_to_original_pixels(family):
    from omnidrive_r1.tools.zoom_in import ZoomInTool

    f = family.factor
    lo, hi = 4 * f * f, 256 * f * f
    size, mark = (4800, 1800), (3000, 700, 3012, 716)
    img = _image_with_marker(size, mark)
    env = ZoomInTool(min_pixels=lo, max_pixels=hi, **_geometry(family))
    env.reset(image=img)
    first = env.image_zoom_in_tool(bbox_2d=_policy_box(size, (2800, 500, 3300, 900), lo, hi, family), label="area")
    crop = first[0]["image"]
    first_box = env.calls[0].box
    local = (mark[0] - first_box[0], mark[1] - first_box[1], mark[2] - first_box[0], mark[3] - first_box[1])
    second = env.image_zoom_in_tool(bbox_2d=_policy_box(crop.size, local, lo, hi, family), label="marker",
                                    image_index=1)
    assert isinstance(second, list), second
    x1, y1, x2, y2 = env.calls[1].box
    assert x1 <= mark[0] and y1 <= mark[1] and x2 >= mark[2] and y2 >= mark[3]
    assert _marker_pixels(second[0]["image"]) == 12 * 16
    assert env.calls[1].crop.size == (x2 - x1, y2 - y1)


@FAMILIES
@pytest.mark.parametrize("bad, reason", [
    ("10, 20, 30, 40", "not_a_box"), ([1, 2, 3], "wrong_arity"), ([1, 2, 3, 4, 5], "wrong_arity"),
    ([1, "2", 3, 4], "not_a_number"), ([1, None, 3, 4], "not_a_number"), ([True, 2, 3, 4], "not_a_number"),
    ([float("nan"), 2, 3, 4], "not_finite"), ([1, 2, float("inf"), 4], "not_finite"),
    ([5000, 5000, 6000, 6000], "empty_box"), ([-10, -10, -1, -1], "empty_box"), ([10, 10, 10, 40], "empty_box"),
    ([0, 0, 2400, 1], "extreme_aspect"), ([[1, 2], 3, 4, 5], "not_a_number"), (None, "not_a_box"),
])
def test_bad_boxes_raise_zoom_error_with_a_reason(family, bad, reason):
    with pytest.raises(ZoomError) as err:
        zoom_crop(Image.new("RGB", (2400, 900)), bad, min_pixels=3136, max_pixels=2400 * 900, min_side=1,
                  **_geometry(family))
    assert err.value.reason == reason and isinstance(err.value, ValueError)


@FAMILIES
@pytest.mark.parametrize("size, tokens", [
    ((3000, 150), (1, 16)), ((150, 3000), (1, 16)), ((2400, 900), (8, 160)), ((4800, 1800), (4, 1280)),
    ((13, 97), (4, 64)), ((1600, 900), (256, 1280)),
])
def test_model_size_is_what_the_image_processor_produces(family, size, tokens):
    from transformers import Qwen2VLImageProcessor

    f = family.factor
    min_pixels, max_pixels = tokens[0] * f * f, tokens[1] * f * f
    grid = Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels, patch_size=f // 2, merge_size=2)(
        Image.new("RGB", size), return_tensors="pt")["image_grid_thw"][0]
    patch = f // 2
    assert _seen(size, min_pixels, max_pixels, family) == (int(grid[2]) * patch, int(grid[1]) * patch)
