"""`make bench`: speed figures, printed. Targets are checked by reading them, never by timed unit tests.

    python -m omnidrive_r1.bench [--only NAME ...] [--repeats N]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

TARGETS_MS = {"tool_call": 20.0}


def bench_tool_call(repeats: int = 200) -> dict:
    """One zoom tool call on a 4800x1800 stitched frame: parse the policy's text, map the box, crop the
    original, and run the image processor on the crop (what TRL does before the next turn)."""
    from PIL import Image
    from transformers import AutoProcessor, Qwen2VLImageProcessor
    from trl.chat_template_utils import parse_response

    from omnidrive_r1 import templates
    from omnidrive_r1.tiny import build_tiny_policy
    from omnidrive_r1.tools.zoom_in import ZoomInTool
    from omnidrive_r1.vision import model_size

    processor = templates.install(AutoProcessor.from_pretrained(build_tiny_policy()))
    tok = processor.tokenizer
    # the paper preset's resolution: 1280 visual tokens at most
    min_pixels, max_pixels = 3136, 1280 * 28 * 28
    image_processor = Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels)
    frame = Image.effect_noise((4800, 1800), 64).convert("RGB")
    env = ZoomInTool(min_pixels=min_pixels, max_pixels=max_pixels, max_tool_calls=10**9, max_images=10**9)
    env.reset(image=frame)
    mw, mh = model_size(*frame.size, min_pixels=min_pixels, max_pixels=max_pixels)
    rng = random.Random(0)
    texts = []
    for _ in range(repeats):
        w, h = rng.randint(28, mw // 3), rng.randint(28, mh // 2)
        x, y = rng.randint(0, mw - w), rng.randint(0, mh - h)
        texts.append(tok(f'<think>zoom</think>\n<tool_call>\n{{"name": "image_zoom_in_tool", "arguments": '
                         f'{{"bbox_2d": [{x}, {y}, {x + w}, {y + h}], "label": "car"}}}}\n</tool_call><|im_end|>')
                     ["input_ids"])
    prefix = tok("<|im_start|>assistant\n")["input_ids"]
    times, crop_pixels = [], []
    for ids in texts:
        t0 = time.perf_counter()
        call = parse_response(tok, ids, prefix=prefix)["tool_calls"][0]["function"]
        out = env.image_zoom_in_tool(**call["arguments"])
        image_processor(images=[out[0]["image"]], return_tensors="pt")
        times.append((time.perf_counter() - t0) * 1000)
        crop_pixels.append(out[0]["image"].width * out[0]["image"].height)
    return {"name": "tool_call", "median_ms": statistics.median(times),
            "p90_ms": round(sorted(times)[int(0.9 * len(times))], 2),
            "calls": repeats, "median_crop_px": int(statistics.median(crop_pixels)), "frame": "4800x1800"}


BENCHES = {"tool_call": bench_tool_call}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m omnidrive_r1.bench", description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", choices=sorted(BENCHES), help="run only these benchmarks")
    p.add_argument("--repeats", type=int, default=200, help="calls per benchmark (default 200)")
    args = p.parse_args(argv)
    for name in args.only or BENCHES:
        result = BENCHES[name](args.repeats)
        target = TARGETS_MS.get(name)
        verdict = "" if target is None else f" (target < {target:.0f} ms: {'met' if result['median_ms'] < target else 'MISSED'})"
        extras = ", ".join(f"{k}={v}" for k, v in result.items() if k not in ("name", "median_ms"))
        print(f"{name}: median {result['median_ms']:.2f} ms{verdict}; {extras}")


if __name__ == "__main__":
    main()
