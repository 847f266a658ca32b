"""metrics.jsonl (one line per logging step) and curves.png for every training stage."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

from transformers import TrainerCallback

from omnidrive_r1.jsonl import read_jsonl

# (panel title, [(label, metrics key or key prefix)]) - what people look at first in a Clip-GRPO run
PANELS = [
    ("reward (total and per term)", [("total", "reward"), ("*", "rewards/")]),
    ("answer accuracy", [("accuracy", "rewards/answer_accuracy/mean")]),
    ("tool use", [("call rate", "tools/call_rate"), ("failure rate", "tools/failure_rate"),
                  ("replies dropped (budget)", "tools/dropped_replies"), ("crops / rollout", "tools/crops_per_rollout")]),
    ("crop area (fraction of image)", [("crop area", "tools/crop_area_frac")]),
    ("KL and entropy", [("kl", "kl"), ("entropy", "entropy")]),
    ("step time (s)", [("step time", "step_time")]),
]


class CurvesCallback(TrainerCallback):
    """Appends every log to `metrics.jsonl` (with seconds per optimizer step) and draws `curves.png` at the end."""

    def __init__(self, output_dir: str | Path):
        self.dir = Path(output_dir)
        self._last = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._last = (time.perf_counter(), state.global_step)
        path = self.dir / "metrics.jsonl"
        if state.is_world_process_zero and state.global_step and path.exists():
            # resumed: the killed run may have logged steps after its last checkpoint; they are trained again
            kept = [line for line in path.read_text().splitlines()
                    if _step_of(line) is not None and _step_of(line) <= state.global_step]
            tmp = path.with_suffix(".tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        now = time.perf_counter()
        record = {"step": state.global_step, "epoch": state.epoch, **logs}
        if self._last and state.global_step > self._last[1]:
            record["step_time"] = (now - self._last[0]) / (state.global_step - self._last[1])
            self._last = (now, state.global_step)
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record, default=float) + "\n")

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero and (self.dir / "metrics.jsonl").exists():
            plot_curves(self.dir / "metrics.jsonl", self.dir / "curves.png",
                        title=f"{args.run_name} ({state.global_step} steps)")


def _step_of(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None  # a line cut short by a killed run


def read_metrics(path: str | Path) -> list[dict]:
    return [r for r in read_jsonl(path) if "train_runtime" not in r and "step" in r]


def _series(rows, key):
    pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return list(zip(*pts)) if pts else ([], [])


def plot_curves(metrics_path: str | Path, out: str | Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    fig, axes = plt.subplots(2, 3, figsize=(15, 7.5))
    for ax, (panel, curves) in zip(axes.flat, PANELS):
        drawn = 0
        for label, key in curves:
            keys = ([k for k in dict.fromkeys(k for r in rows for k in r)
                     if k.startswith(key) and k.endswith("/mean")] if label == "*" else [key])
            for k in keys:
                xs, ys = _series(rows, k)
                if xs:
                    ax.plot(xs, ys, marker="o", ms=3, label=k.split("/")[1] if label == "*" else label)
                    drawn += 1
        ax.set_title(panel)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="grey")
    fig.suptitle(title or str(metrics_path))
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return Path(out)
