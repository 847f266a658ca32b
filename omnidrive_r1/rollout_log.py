"""A training run's rollouts on disk, for `omnidrive-r1 view` (recipe field `rollouts_every`).

OUT/rollouts/rollouts.jsonl   one line per completion of every N-th step (the main process's share): the text,
                              the answer, every reward term, each zoom call with its box in original pixels
OUT/rollouts/frames/*.jpg     each prompt's image once, shrunk to `frame_side` pixels a side
OUT/rollouts/crops/*.jpg      each crop the policy was handed, shrunk to `crop_side`
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from PIL import Image, ImageOps

from omnidrive_r1.disk_cache import content_key
from omnidrive_r1.protocol import final_answer, messages_text

log = logging.getLogger(__name__)


class RolloutLog:
    def __init__(self, out_dir: str | Path, every: int, frame_side: int = 960, crop_side: int = 320):
        if every < 0:
            raise ValueError(f"rollouts_every must be 0 (off) or a number of steps, got {every}")
        self.dir = Path(out_dir) / "rollouts"
        self.every, self.frame_side, self.crop_side = every, frame_side, crop_side
        self.failed = False

    def due(self, step: int) -> bool:
        return self.every > 0 and not self.failed and (step == 1 or step % self.every == 0)

    def write(self, step: int, inputs: list[dict], completions: list, environments: list | None, rewards,
              names: list[str]) -> None:
        """Append `step`'s rollouts. A failure to write is logged once and never stops training."""
        try:
            self._write(step, inputs, completions, environments or [None] * len(completions), rewards, names)
        except Exception as e:  # noqa: BLE001 - a view is not worth a run
            self.failed = True
            log.warning(f"rollouts: could not write step {step} to {self.dir} ({e}); no more rollouts are written")

    def _write(self, step, inputs, completions, environments, rewards, names) -> None:
        (self.dir / "frames").mkdir(parents=True, exist_ok=True)
        (self.dir / "crops").mkdir(exist_ok=True)
        lines = []
        for i, (row, completion, env) in enumerate(zip(inputs, completions, environments)):
            idx = str(row.get("idx", i))
            record = {"step": step, "idx": idx, "sample": i, "question": row.get("question"),
                      "truth": row.get("answer"), "gt_box": row.get("gt_box"),
                      "response": messages_text(completion), "answer": final_answer(completion),
                      "rewards": {n: (None if math.isnan(v) else v) for n, v in zip(names, rewards[i].tolist())},
                      "tool_calls": []}
            images = getattr(env, "images", None)
            if images:
                frame = images[0].root
                name = f"frames/{content_key(idx)}.jpg"
                if not (self.dir / name).exists():
                    thumbnail(frame, self.frame_side).convert("RGB").save(self.dir / name, quality=85)
                record.update(frame=name, frame_size=list(frame.size))
            for k, call in enumerate(getattr(env, "calls", [])):
                entry = {"ok": call.ok, "reason": call.reason, "label": call.label,
                         "bbox_2d": call.arguments.get("bbox_2d"), "image_index": call.image_index,
                         "box": list(call.box) if call.box else None}
                if call.crop is not None:
                    crop = f"crops/{step}-{i}-{k}.jpg"
                    thumbnail(call.crop, self.crop_side).convert("RGB").save(self.dir / crop, quality=85)
                    entry.update(crop=crop, crop_size=list(call.crop.size))
                record["tool_calls"].append(entry)
            lines.append(json.dumps(record, default=float))
        with open(self.dir / "rollouts.jsonl", "a") as f:
            f.write("".join(line + "\n" for line in lines))


def thumbnail(image, side: int):
    """`image` shrunk to fit `side` x `side` (a PIL image; anything else, or a small one, is returned as is)."""
    if not isinstance(image, Image.Image) or max(image.size) <= side:
        return image  # ImageOps.contain would enlarge a small one
    return ImageOps.contain(image, (side, side), Image.Resampling.BILINEAR)
