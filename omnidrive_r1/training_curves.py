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


def smoothing_window(points: int) -> int:
    """Steps in the rolling mean drawn over the raw points: about an eighth of the run, 1 to 10 steps."""
    return max(1, min(10, points // 8))


def rolling_mean(values, window: int) -> list[float]:
    """Mean over `window` points centred on each point (fewer at the ends), so the line does not lag the dots.

    >>> rolling_mean([0, 1, 0, 1, 1], 3)
    [0.5, 0.3333333333333333, 0.6666666666666666, 0.6666666666666666, 1.0]
    """
    before, after = window // 2, (window - 1) // 2
    out = []
    for i in range(len(values)):
        part = values[max(0, i - before):i + after + 1]
        out.append(sum(part) / len(part))
    return out


def curve_panels(rows: list[dict]) -> list[dict]:
    """What curves.png draws: per panel its title and curves, each with raw points, the rolling mean and its
    window. A panel's title names only what was logged (TRL logs no KL when beta is 0)."""
    panels = []
    for panel, curves in PANELS:
        drawn = []
        for label, key in curves:
            keys = ([k for k in dict.fromkeys(k for r in rows for k in r)
                     if k.startswith(key) and k.endswith("/mean")] if label == "*" else [key])
            for k in keys:
                xs, ys = _series(rows, k)
                if xs:
                    window = smoothing_window(len(xs))
                    drawn.append({"label": k.split("/")[1] if label == "*" else label, "key": k, "steps": list(xs),
                                  "raw": list(ys), "window": window, "smooth": rolling_mean(list(ys), window)})
        if panel == "KL and entropy":
            logged = [c["label"] for c in drawn]
            panel = " and ".join(logged) if logged else panel
            if "kl" not in logged and logged:
                panel += " (KL not logged: beta = 0)"
        panels.append({"title": panel, "curves": drawn})
    return panels


def plot_curves(metrics_path: str | Path, out: str | Path, title: str = "") -> Path:
    """Six panels; faint dots are the per-step means (each over one step's completions, so they jump), the line
    is their rolling mean over the window named in the legend."""
    import matplotlib  # only plots need it, and the backend is chosen before pyplot loads

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    fig, axes = plt.subplots(2, 3, figsize=(15, 7.5))
    for ax, panel in zip(axes.flat, curve_panels(rows)):
        for curve in panel["curves"]:
            smooth = f" (mean of {curve['window']} steps)" if curve["window"] > 1 else ""
            line, = ax.plot(curve["steps"], curve["smooth"], lw=2, label=curve["label"] + smooth)
            ax.plot(curve["steps"], curve["raw"], "o", ms=2.5, alpha=0.3, color=line.get_color())
        ax.set_title(panel["title"])
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if panel["curves"]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="grey")
    fig.suptitle((title or str(metrics_path)) + "  (dots: each step; lines: rolling mean)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return Path(out)
