"""The toy base build checks the skill RL cannot teach (reading a crop deep in the conversation) and reruns its
protocol phase when it was lost (`omnidrive_r1/toy/base.py`, `docs/toy.md`)."""

import pytest
import torch

from omnidrive_r1.toy import base


class _Weights(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(3))


def _fake_phase(monkeypatch, readings: list[float]):
    """`_sft` adds its attempt's number to the weights; `reading_check` answers from `readings` in turn."""
    sft_calls, checks = [], iter(readings)

    def sft(model, processor, dataset, seed, steps, batch, lr):
        sft_calls.append((seed, float(model.w.sum())))
        with torch.no_grad():
            model.w += len(sft_calls)
        return 0.1 * len(sft_calls)

    monkeypatch.setattr(base, "_sft", sft)
    monkeypatch.setattr(base, "protocol_examples", lambda processor, seed, n, family=None, zoom_share=None: [{"seed": seed}] * n)
    monkeypatch.setattr(base, "reading_check", lambda model, processor, seed, family=None: {"accuracy": next(checks),
                                                                                "confusion": {}})
    return sft_calls


def test_a_protocol_phase_that_reads_is_kept_at_the_first_attempt(monkeypatch):
    calls = _fake_phase(monkeypatch, [1.0])
    model = _Weights()
    record = base._protocol_phase(model, None, seed=0, steps=8, batch_size=4, lr=1e-3, attempts=4)
    assert record["attempts"] == 1 and record["kept"] == 1
    assert calls == [(0, 0.0)]  # the build as it always was: the build's own seed
    assert torch.equal(model.w, torch.ones(3))


def test_a_lost_reading_reruns_the_phase_from_the_state_before_it_on_other_frames(monkeypatch):
    calls = _fake_phase(monkeypatch, [0.37, 0.53, 0.95])
    model = _Weights()
    record = base._protocol_phase(model, None, seed=5, steps=8, batch_size=4, lr=1e-3, attempts=4)
    assert record["attempts"] == 3 and record["kept"] == 3
    # every attempt starts from the weights before the phase (0), each with a seed of its own
    assert [w for _, w in calls] == [0.0, 0.0, 0.0]
    assert len({s for s, _ in calls}) == 3 and calls[0][0] == 5
    assert torch.equal(model.w, torch.full((3,), 3.0))
    assert [t["reading_check"]["accuracy"] for t in record["tries"]] == [0.37, 0.53, 0.95]


def test_when_no_attempt_passes_the_best_is_kept_and_said(monkeypatch, caplog):
    _fake_phase(monkeypatch, [0.5, 0.8, 0.6])
    model = _Weights()
    with caplog.at_level("WARNING"):
        record = base._protocol_phase(model, None, seed=0, steps=8, batch_size=4, lr=1e-3, attempts=3)
    assert record["attempts"] == 3 and record["kept"] == 2
    assert torch.equal(model.w, torch.full((3,), 2.0))  # the second attempt's weights, not the last
    assert "best 0.80" in caplog.text


def test_the_gate_and_its_attempts_are_part_of_the_cache_key():
    assert base.toy_base_key(0) != base.toy_base_key(0, attempts=1)
    assert base.toy_base_key(0) == base.toy_base_key(0, attempts=base.PROTOCOL_ATTEMPTS)


@pytest.mark.slow
def test_the_reading_check_scores_every_held_out_conversation_of_a_real_base(small_toy_base):
    from transformers import AutoModelForImageTextToText

    from omnidrive_r1.policies import build_processor
    from omnidrive_r1.toy.toydrive import TOY_MAX_PIXELS, TOY_MIN_PIXELS

    policy = small_toy_base / "policy"
    processor = build_processor(policy, min_pixels=TOY_MIN_PIXELS, max_pixels=TOY_MAX_PIXELS)
    model = AutoModelForImageTextToText.from_pretrained(policy, dtype=torch.float32)
    model.train()
    check = base.reading_check(model, processor, seed=0, frames=6)
    assert check["conversations"] >= 6 and sum(check["confusion"].values()) == check["conversations"]
    assert all(k.split("->")[0] in base.MEANINGS and k.split("->")[1] in base.MEANINGS for k in check["confusion"])
    assert 0.0 <= check["accuracy"] <= 1.0 and model.training  # the model's mode is given back
