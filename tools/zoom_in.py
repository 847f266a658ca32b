"""The zoom-in tool: the policy names a box in an image it sees, and gets that region of the original,
full-resolution image back as a new image (`docs/protocol.md`, `docs/coordinates.md`).

Used as TRL's `environment_factory` (through `omnidrive_r1.tools.environment_factory`): one instance per
rollout, `reset(**row)` before each. Every call is recorded in `calls`, valid or not; a bad call never
raises out of the rollout, it answers with an error text and is counted in `failures` by reason.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from PIL import Image

from omnidrive_r1.coordinates import COORDINATES, MAX_ASPECT, ZoomError, zoom_box
from omnidrive_r1.policies import DEFAULT_IMAGE_TOKENS, default
from omnidrive_r1.protocol import call_function, text_of
from omnidrive_r1.tools import lenient

TOOL_NAME = "image_zoom_in_tool"
# every reason a call can fail with (ZoomError reasons from omnidrive_r1.coordinates, then the tool's own)
FAILURE_REASONS = ("not_a_box", "wrong_arity", "not_a_number", "not_finite", "empty_box", "extreme_aspect",
                   "call_limit", "image_limit", "bad_image_index", "bad_label", "bad_arguments")


@dataclass
class ZoomCall:
    """One call of the tool in a trajectory (the k-th record is the k-th zoom call in the messages)."""

    arguments: dict
    ok: bool
    reason: str | None = None  # failure reason when not ok
    label: str | None = None
    image_index: int | None = None
    box: tuple[int, int, int, int] | None = None  # in pixels of the original image
    crop: Image.Image | None = None
    source_size: tuple[int, int] | None = None  # size of the original image the box refers to
    reasoning: str | None = None  # the text written before the call; filled in by `annotate`


@dataclass
class _Seen:
    root: Image.Image  # the original image this one was cut from (itself for dataset images)
    offset: tuple[int, int]  # top-left of this image inside root
    size: tuple[int, int]  # the region of root it covers
    shown: tuple[int, int]  # the size of the image the policy was given (smaller when a crop was shrunk)


class ZoomInTool:
    """Environment with one tool, `image_zoom_in_tool`.

    Args:
        min_pixels / max_pixels: the policy's image resize bounds (must match the processor's; default: 4 to 1280
            image tokens, as for a recipe that sets none).
        factor: the policy's resize factor (its family's: `omnidrive_r1/policies/`); sides are multiples of it.
        coordinates: how the policy writes `bbox_2d`: "pixels" of the image it sees, or "relative" (0..1000 on
            each axis); an instance for "relative" is a `RelativeZoomInTool`, whose schema says so. Unset: the
            default family's factor and convention.
        min_side: boxes shorter than this (model pixels) are grown around their centre (default: one factor).
        max_tool_calls: calls allowed per trajectory; later calls get an error text.
        max_images: images allowed per trajectory, the dataset's included.
        max_aspect: longest/shortest side allowed for a box.
        max_crop_pixels: a crop larger than this is shrunk (aspect kept) before it goes back: it bounds the image
            tokens a reply costs, so a zoom always fits the completion budget (see `docs/troubleshooting.md`).
    """

    def __new__(cls, *args, coordinates: str | None = None, **kwargs):
        # TRL builds the tool's schema from the class's method docstrings: relative boxes need their own
        coordinates = coordinates or (args[3] if len(args) > 3 else None) or default().coordinates
        if cls is ZoomInTool and coordinates == "relative":
            cls = RelativeZoomInTool
        return super().__new__(cls)

    def __init__(self, min_pixels: int | None = None, max_pixels: int | None = None, factor: int | None = None,
                 coordinates: str | None = None, min_side: int | None = None, max_tool_calls: int = 4,
                 max_images: int | None = None, max_aspect: float = MAX_ASPECT, max_crop_pixels: int | None = None):
        # what is left unset is the default family's (training and rollouts set all of it from the policy's family)
        family = default()
        factor = factor or family.factor
        coordinates = coordinates or family.coordinates
        lo, hi = (tokens * factor * factor for tokens in DEFAULT_IMAGE_TOKENS)  # as a recipe that sets none
        min_pixels = lo if min_pixels is None else min_pixels
        max_pixels = hi if max_pixels is None else max_pixels
        if min_pixels <= 0 or max_pixels < min_pixels:
            raise ValueError(f"need 0 < min_pixels <= max_pixels, got {min_pixels}, {max_pixels}")
        if coordinates not in COORDINATES:
            raise ValueError(f"coordinates must be one of {COORDINATES}, got {coordinates!r}")
        min_side = factor if min_side is None else min_side
        if max_tool_calls < 0 or min_side < 1 or factor < 1:
            raise ValueError("max_tool_calls must be >= 0, and min_side and factor >= 1")
        self.min_pixels, self.max_pixels, self.min_side = min_pixels, max_pixels, min_side
        self.factor, self.coordinates = factor, coordinates
        self.max_tool_calls = max_tool_calls
        self.max_images = max_images if max_images is not None else 1 + max_tool_calls
        self.max_aspect = max_aspect
        if max_crop_pixels is not None and max_crop_pixels < min_pixels:
            raise ValueError(f"max_crop_pixels {max_crop_pixels} is below min_pixels {min_pixels}")
        self.max_crop_pixels = max_crop_pixels
        self.images: list[_Seen] = []
        self.calls: list[ZoomCall] = []
        self.failures: Counter = Counter()
        self.dropped_replies = 0  # replies TRL took back because they did not fit the completion budget

    def reset(self, **row) -> None:
        """Keep the row's original image(s); the prompt needs no extra text."""
        images = row.get("images") or ([row["image"]] if row.get("image") is not None else [])
        self.images = [_Seen(im, (0, 0), im.size, im.size) for im in images]
        self.calls = []
        self.failures = Counter()
        self.dropped_replies = 0
        return None

    @lenient
    def image_zoom_in_tool(self, bbox_2d: list[float], label: str, image_index: int = 0) -> list | str:
        """Zoom in on a region of an image to see it at full resolution.

        Args:
            bbox_2d: The region as [x1, y1, x2, y2], in pixels of the image as you see it.
            label: A short name of the object or detail expected in the region.
            image_index: Which image to zoom into: 0 is the first image, 1 the first zoomed crop, and so on.

        Returns:
            The zoomed crop as a new image, with a short description.
        """
        args = {"bbox_2d": bbox_2d, "label": label, "image_index": image_index}
        if len(self.calls) >= self.max_tool_calls:
            return self._fail("call_limit", f"at most {self.max_tool_calls} zoom calls per answer; answer now", args)
        if len(self.images) >= self.max_images:
            return self._fail("image_limit", f"at most {self.max_images} images per answer; answer now", args)
        if isinstance(image_index, bool) or not isinstance(image_index, int):
            return self._fail("bad_image_index", f"image_index must be an integer, got {image_index!r:.40}", args)
        if not 0 <= image_index < len(self.images):
            return self._fail("bad_image_index",
                              f"image_index {image_index} does not exist; images 0..{len(self.images) - 1} do", args)
        if not isinstance(label, str):
            return self._fail("bad_label", f"label must be a string, got {type(label).__name__}", args)
        seen = self.images[image_index]
        try:
            left, top, right, bottom = zoom_box(seen.shown, bbox_2d, min_pixels=self.min_pixels,
                                                max_pixels=self.max_pixels, factor=self.factor,
                                                coordinates=self.coordinates, min_side=self.min_side,
                                                max_aspect=self.max_aspect)
        except ZoomError as e:
            return self._fail(e.reason, str(e), args)
        (ox, oy), fx, fy = seen.offset, seen.size[0] / seen.shown[0], seen.size[1] / seen.shown[1]
        box = (ox + math.floor(left * fx), oy + math.floor(top * fy),
               ox + min(seen.size[0], math.ceil(right * fx)), oy + min(seen.size[1], math.ceil(bottom * fy)))
        crop = seen.root.crop(box)
        if self.max_crop_pixels and crop.width * crop.height > self.max_crop_pixels:
            scale = (self.max_crop_pixels / (crop.width * crop.height)) ** 0.5
            crop = crop.resize((max(1, int(crop.width * scale)), max(1, int(crop.height * scale))),
                               Image.Resampling.BICUBIC)
        self.images.append(_Seen(seen.root, (box[0], box[1]), (box[2] - box[0], box[3] - box[1]), crop.size))
        self.calls.append(ZoomCall(args, True, label=label, image_index=image_index, box=box, crop=crop,
                                   source_size=seen.root.size))
        new_index = len(self.images) - 1
        return [{"type": "image", "image": crop},
                {"type": "text", "text": f"Zoomed view of image {image_index} ({label[:60]}), now image {new_index}."}]

    def _fail(self, reason: str, message: str, arguments: Any) -> str:
        self.failures[reason] += 1
        self.calls.append(ZoomCall(arguments if isinstance(arguments, dict) else {"raw": arguments}, False,
                                   reason=reason))
        return f"Error: {message}."

    def _bad_arguments(self, message: str, arguments: dict) -> str:
        return self._fail("bad_arguments", f"{message}; call {TOOL_NAME}(bbox_2d, label, image_index=0)", arguments)


class RelativeZoomInTool(ZoomInTool):
    """The zoom tool for policies that write boxes relative to the image, 0 to 1000 on each axis (Qwen3-VL)."""

    @lenient
    def image_zoom_in_tool(self, bbox_2d: list[float], label: str, image_index: int = 0) -> list | str:
        """Zoom in on a region of an image to see it at full resolution.

        Args:
            bbox_2d: The region as [x1, y1, x2, y2], relative to the image: 0 to 1000 on each axis.
            label: A short name of the object or detail expected in the region.
            image_index: Which image to zoom into: 0 is the first image, 1 the first zoomed crop, and so on.

        Returns:
            The zoomed crop as a new image, with a short description.
        """
        return ZoomInTool.image_zoom_in_tool.__wrapped__(self, bbox_2d=bbox_2d, label=label, image_index=image_index)


TOOL = ZoomInTool


def annotate(tool: ZoomInTool, completion: list[dict]) -> None:
    """Record in each call the assistant text written before it (the environment sees only arguments).

    The k-th zoom tool call in the messages whose arguments reached the tool (a dict) is the k-th record.
    Called by the trainer and the rollout loop once a trajectory is complete. Also counts the calls whose reply
    is not in the completion: TRL takes a reply back when it would not fit `max_completion_length`, and the
    rollout then ends without an answer (the tool-use collapse of `docs/troubleshooting.md`).
    """
    replies = sum(1 for m in completion if m.get("role") == "tool" and m.get("name", TOOL_NAME) == TOOL_NAME)
    tool.dropped_replies = max(0, len(tool.calls) - replies)
    texts = []
    for message in completion:
        if message.get("role") != "assistant":
            continue
        content = text_of(message.get("content"))
        for call in message.get("tool_calls") or []:
            fn = call_function(call)
            if fn.get("name") == TOOL_NAME and isinstance(fn.get("arguments"), dict):
                texts.append(content)
    for record, text in zip(tool.calls, texts):
        record.reasoning = text


def metrics(tools: list[ZoomInTool]) -> dict[str, float]:
    """Tool-use metrics of a generation batch (tool-use collapse is the failure peers report most):
    tools/call_rate (share of rollouts that called), calls_per_rollout, failure_rate (failed / all calls),
    failure/<reason> (share of calls), crops_per_rollout, images_per_rollout, crop_area_frac."""
    if not tools:
        return {}
    calls = [c for t in tools for c in t.calls]
    ok = [c for c in calls if c.ok]
    reasons = Counter(c.reason for c in calls if not c.ok)
    n = len(tools)
    out = {
        "tools/call_rate": sum(bool(t.calls) for t in tools) / n,
        "tools/calls_per_rollout": len(calls) / n,
        "tools/crops_per_rollout": len(ok) / n,
        "tools/images_per_rollout": sum(len(t.images) for t in tools) / n,
        "tools/failure_rate": (len(calls) - len(ok)) / len(calls) if calls else 0.0,
        "tools/dropped_replies": sum(t.dropped_replies for t in tools) / len(calls) if calls else 0.0,
        "tools/crop_area_frac": (sum((c.box[2] - c.box[0]) * (c.box[3] - c.box[1])
                                     / (c.source_size[0] * c.source_size[1]) for c in ok) / len(ok)) if ok else 0.0,
    }
    # every known reason every time, so averages over a logging window are not biased towards batches with failures
    out.update({f"tools/failure/{r}": (reasons[r] / len(calls) if calls else 0.0) for r in FAILURE_REASONS})
    return out
