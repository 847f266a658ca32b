"""Tool-use metrics of a generation batch, logged next to the rewards (tool-use collapse is the failure
peers report most). Not a reward: `omnidrive_r1.rewards.build_rewards` calls it once per batch."""

from __future__ import annotations

from collections import Counter

from omnidrive_r1.tools import find_part
from omnidrive_r1.tools.zoom_in import FAILURE_REASONS, ZoomInTool


def tool_use_metrics(environments) -> dict[str, float]:
    """tools/call_rate (share of rollouts that called), calls_per_rollout, failure_rate (failed / all calls),
    failure/<reason> (share of calls), crops_per_rollout, images_per_rollout, crop_area_frac."""
    parts = [find_part(env, ZoomInTool) for env in environments or []]
    parts = [p for p in parts if p is not None]
    if not parts:
        return {}
    calls = [c for p in parts for c in p.calls]
    ok = [c for c in calls if c.ok]
    reasons = Counter(c.reason for c in calls if not c.ok)
    n = len(parts)
    out = {
        "tools/call_rate": sum(bool(p.calls) for p in parts) / n,
        "tools/calls_per_rollout": len(calls) / n,
        "tools/crops_per_rollout": len(ok) / n,
        "tools/images_per_rollout": sum(len(p.images) for p in parts) / n,
        "tools/failure_rate": (len(calls) - len(ok)) / len(calls) if calls else 0.0,
        "tools/crop_area_frac": (sum((c.box[2] - c.box[0]) * (c.box[3] - c.box[1])
                                     / (c.source_size[0] * c.source_size[1]) for c in ok) / len(ok)) if ok else 0.0,
    }
    # every known reason every time, so averages over a logging window are not biased towards batches with failures
    out.update({f"tools/failure/{r}": (reasons[r] / len(calls) if calls else 0.0) for r in FAILURE_REASONS})
    return out
