"""curves.png: raw per-step points under a rolling mean a person can read, and panel titles that say what is there."""

import json
import random

from omnidrive_r1.training_curves import curve_panels, plot_curves, rolling_mean, smoothing_window


def _metrics(path, steps=40, kl=False):
    rng = random.Random(0)
    with open(path, "w") as f:
        for step in range(1, steps + 1):
            row = {"step": step, "reward": 0.5 + 0.01 * step + rng.uniform(-0.3, 0.3),
                   "rewards/answer_accuracy/mean": min(1.0, 0.3 + 0.01 * step + rng.uniform(-0.35, 0.35)),
                   "tools/call_rate": 1.0, "entropy": 0.8 - 0.005 * step}
            if kl:
                row["kl"] = 0.001 * step
            f.write(json.dumps(row) + "\n")
        f.write(json.dumps({"train_runtime": 12.0}) + "\n")
    return path


def test_rolling_mean_and_window():
    assert rolling_mean([1, 2, 3, 4], 1) == [1, 2, 3, 4]
    assert rolling_mean([2, 4, 6, 8], 3) == [3, 4, 6, 7]  # centred: no lag behind the points
    assert rolling_mean([2, 4, 6, 8], 2) == [2, 3, 5, 7]
    assert [smoothing_window(n) for n in (1, 8, 16, 40, 400)] == [1, 1, 2, 5, 10]


def test_panels_carry_raw_points_their_trailing_mean_and_honest_titles(tmp_path):
    rows = [json.loads(line) for line in _metrics(tmp_path / "m.jsonl").read_text().splitlines()][:-1]
    panels = {p["title"]: p for p in curve_panels(rows)}
    acc = panels["answer accuracy"]["curves"][0]
    assert acc["window"] == 5 and len(acc["raw"]) == len(acc["smooth"]) == 40
    assert abs(acc["smooth"][20] - sum(acc["raw"][18:23]) / 5) < 1e-12
    assert abs(acc["smooth"][-1] - sum(acc["raw"][-3:]) / 3) < 1e-12
    # the rolling mean jumps far less than the raw points do
    jumps = lambda v: max(abs(a - b) for a, b in zip(v, v[1:]))  # noqa: E731
    assert jumps(acc["smooth"]) < jumps(acc["raw"]) / 2
    assert "entropy (KL not logged: beta = 0)" in panels
    rows_kl = [json.loads(line) for line in _metrics(tmp_path / "k.jsonl", kl=True).read_text().splitlines()][:-1]
    assert "kl and entropy" in {p["title"] for p in curve_panels(rows_kl)}
    out = plot_curves(tmp_path / "m.jsonl", tmp_path / "curves.png", title="toy-stage1 (40 steps)")
    assert out.stat().st_size > 10_000
