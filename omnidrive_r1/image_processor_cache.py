"""Process each distinct image once per training run, however often TRL hands it to the processor.

In one GRPO step TRL runs the image processor on every completion's prompt (the same frame `num_generations`
times), again when it builds the next turn after a tool call, and again for the loss: a toy step resized 16
copies of 4 frames three times, 18% of the step (`make bench`, docs/performance.md). `cache_images` makes the
policy's image processor remember its output per image, keyed by the image's pixels (a 128-bit xxHash of
its bytes, its size and mode) and the call's options, so a repeat costs a hash instead of a resize. The
output is the processor's own, patch for patch; the memory it may hold is bounded.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import xxhash
from PIL import Image
from transformers import BatchFeature


def _key(image, options: tuple) -> tuple | None:
    if not isinstance(image, Image.Image):
        return None  # tensors, arrays, paths: processed as they come

    return image.size, image.mode, xxhash.xxh3_128_hexdigest(image.tobytes()), options


def cache_images(image_processor, max_mb: float):
    """Make `image_processor` (a Qwen2-VL image processor instance) reuse its output for images it has seen.
    Returns it; `max_mb <= 0` leaves it untouched. Saved processor configs still name the original class."""
    if max_mb <= 0 or getattr(image_processor, "_omnidrive_cache", None) is not None:
        return image_processor
    base = type(image_processor)

    class Cached(base):
        _omnidrive_cache = _Cache(int(max_mb * 1024**2))  # on the class: never written into a saved config

        def preprocess(self, images, *args, **kwargs):
            return _cached_preprocess(self, super().preprocess, images, args, kwargs)

    Cached.__name__ = Cached.__qualname__ = base.__name__  # what save_pretrained writes as image_processor_type
    image_processor.__class__ = Cached
    return image_processor


class _Cache:
    def __init__(self, max_bytes: int):
        self.max_bytes, self.bytes = max_bytes, 0
        self.items: OrderedDict = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key):
        value = self.items.get(key)
        if value is not None:
            self.items.move_to_end(key)
            self.hits += 1
        return value

    def put(self, key, value) -> None:
        self.misses += 1  # processed, whether or not it fits
        size = value[0].numel() * value[0].element_size()
        if size > self.max_bytes:
            return
        self.items[key] = value
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (old, _) = self.items.popitem(last=False)
            self.bytes -= old.numel() * old.element_size()


def _cached_preprocess(processor, preprocess, images, args, kwargs):
    cache: _Cache = processor._omnidrive_cache
    flat = images if isinstance(images, (list, tuple)) else [images]
    if args or kwargs.get("return_tensors") != "pt" or any(isinstance(im, (list, tuple)) for im in flat):
        return preprocess(images, *args, **kwargs)  # nested or non-tensor outputs: not cached
    options = tuple(sorted((k, repr(v)) for k, v in kwargs.items()))
    keys = [_key(im, options) for im in flat]
    found = [cache.get(k) if k is not None else None for k in keys]
    missing: dict = {}  # first position of each image to process -> every position it fills
    first_of: dict = {}  # key -> that first position, so a repeat within the call is processed once
    for i, f in enumerate(found):
        if f is None:
            first = first_of.setdefault(keys[i], i) if keys[i] is not None else i
            missing.setdefault(first, []).append(i)
    if missing:
        out = preprocess([flat[i] for i in missing], **kwargs)
        if set(out.keys()) != {"pixel_values", "image_grid_thw"}:
            return preprocess(images, **kwargs)  # another processor's layout: leave it alone
        sizes = out["image_grid_thw"].prod(dim=1).tolist()
        for (first, positions), pixels, grid in zip(missing.items(), out["pixel_values"].split(sizes),
                                                    out["image_grid_thw"]):
            for i in positions:
                found[i] = (pixels, grid)
            if keys[first] is not None:
                cache.put(keys[first], (pixels, grid))
    return BatchFeature(data={"pixel_values": torch.cat([p for p, _ in found]),
                              "image_grid_thw": torch.stack([g for _, g in found])}, tensor_type="pt")
