"""`make bench`'s machinery: the scripted policy writes exactly its script, and the step profiler accounts for a
real GRPO step (phases that are leaves, generated tokens counted, overhead computed from them)."""

import pytest

from omnidrive_r1.bench.profiler import summarize
from omnidrive_r1.bench.steps import ScriptedPolicy, run, toy_models


def _step(seconds, tokens=10, **phases):
    return {"seconds": seconds, "phases": phases, "generated_tokens": tokens, "turns": [
        {"seconds": phases.get("generate", 0.0), "rows": 2, "tokens": tokens}]}


def test_summary_splits_model_work_from_overhead_and_skips_warmup():
    steps = [_step(100.0, generate=99.0),  # warm-up: ignored
             _step(10.0, generate=4.0, loss_forward=1.0, backward=2.0, optimizer=1.0, image_processing=1.0),
             _step(12.0, generate=5.0, loss_forward=1.0, backward=2.0, optimizer=1.0, image_processing=2.0)]
    s = summarize(steps, warmup=1)
    assert s["steps_timed"] == 2 and s["step_seconds"] == pytest.approx(11.0)
    assert s["phases"]["other"] == pytest.approx(11.0 - 4.5 - 1 - 2 - 1 - 1.5)
    assert s["overhead_fraction"] == pytest.approx((11.0 - 8.5) / 11.0)
    assert s["rollout_tokens_per_s"] == pytest.approx(10 / 4.5)
    with pytest.raises(ValueError, match="warm-up"):
        summarize(steps, warmup=3)


def test_the_scripted_policy_writes_its_call_first_and_its_answer_once_the_crops_are_in():
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    policy, _ = toy_models()
    processor = AutoProcessor.from_pretrained(policy)
    model = AutoModelForImageTextToText.from_pretrained(policy).eval()
    tok = processor.tokenizer
    script = ScriptedPolicy(tok, calls=2)
    script.attach(model)
    image = Image.new("RGB", (112, 112), "gray")
    texts = ["<|vision_start|><|image_pad|><|vision_end|>what?",  # the frame only: first call
             "<|vision_start|><|image_pad|><|vision_end|>" * 3 + "and now?"]  # frame + 2 crops: answer
    inputs = processor(text=texts, images=[image] * 4, return_tensors="pt", padding=True, padding_side="left")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=80, do_sample=True, temperature=1.0)
    new = [tok.decode(row[inputs["input_ids"].shape[1]:], skip_special_tokens=False) for row in out]
    assert new[0].startswith("<think>") and '"bbox_2d": [20, 30, 76, 86]' in new[0]
    assert new[0].split("<|im_end|>")[0].endswith("</tool_call>")
    assert new[1].startswith("<think>Now I can read it.</think>\n<answer>A</answer><|im_end|>")


@pytest.mark.slow
def test_a_profiled_toy_step_counts_the_scripted_tokens_and_times_every_phase(tmp_path, monkeypatch):
    import omnidrive_r1.bench.steps as steps_mod

    monkeypatch.setattr(steps_mod, "OUT", tmp_path)
    result = run("t", calls=1, steps=1, warmup=1, overrides=["report_to=[]", "num_generations=2",
                                                             "per_device_train_batch_size=4"])
    call, answer = result["scripted_tokens_per_turn"]
    assert result["generated_tokens_per_step"] == 4 * (call + answer)  # 2 prompts x 2, two turns each
    assert [t["tokens"] for t in result["generation_per_turn"]] == [4 * call, 4 * answer]
    phases = result["phases"]
    for name in ("generate", "loss_forward", "backward", "optimizer", "tools", "image_processing",
                 "reward/clip_grounding", "reward/answer_accuracy", "checkpointing", "logging"):
        assert phases.get(name, 0) > 0, name
    assert result["tool_calls_per_trajectory"] == 1.0
    model = sum(phases[k] for k in ("generate", "loss_forward", "backward", "optimizer"))
    assert result["overhead_fraction"] == pytest.approx(1 - model / result["step_seconds"])
    assert 0 < result["overhead_fraction"] < 1


@pytest.mark.parametrize("backend", ["torchvision", "pil"])
def test_the_image_cache_returns_the_processors_own_output_and_saves_as_the_original_class(backend, tmp_path):
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor

    from omnidrive_r1.image_processor_cache import cache_images

    policy, _ = toy_models()
    plain = AutoImageProcessor.from_pretrained(policy, backend=backend)
    cached = cache_images(AutoImageProcessor.from_pretrained(policy, backend=backend), max_mb=64)
    frame = Image.effect_noise((600, 220), 60).convert("RGB")
    crop = Image.effect_noise((120, 90), 30).convert("RGB")
    for images in ([frame, crop, frame], [crop], [frame.copy(), frame]):  # a copy is the same image
        want, got = plain(images=images, return_tensors="pt"), cached(images=images, return_tensors="pt")
        assert torch.equal(want["image_grid_thw"], got["image_grid_thw"])
        assert torch.equal(want["pixel_values"], got["pixel_values"])
    cache = cached._omnidrive_cache
    assert (cache.misses, cache.hits) == (2, 3)  # two distinct images processed once each; 3 served later
    other = frame.copy()
    other.putpixel((5, 5), (0, 0, 0))  # one pixel differs: processed again, not served from the cache
    assert torch.equal(plain(images=[other], return_tensors="pt")["pixel_values"],
                       cached(images=[other], return_tensors="pt")["pixel_values"]) and cache.misses == 3
    assert cached.to_dict() == plain.to_dict()  # what save_pretrained writes: the cache leaves no trace
    cached.save_pretrained(tmp_path / "cached")
    plain.save_pretrained(tmp_path / "plain")
    assert type(AutoImageProcessor.from_pretrained(tmp_path / "cached")) is \
        type(AutoImageProcessor.from_pretrained(tmp_path / "plain"))


def test_the_image_cache_stays_within_its_memory_bound():
    from PIL import Image
    from transformers import AutoImageProcessor

    from omnidrive_r1.image_processor_cache import cache_images

    policy, _ = toy_models()
    cached = cache_images(AutoImageProcessor.from_pretrained(policy), max_mb=8)  # about two frames (3 MB each)
    frames = [Image.effect_noise((600, 220), 10 + k).convert("RGB") for k in range(6)]
    for frame in frames:
        cached(images=[frame], return_tensors="pt")
    cache = cached._omnidrive_cache
    assert 0 < cache.bytes <= 8 * 1024**2 and 0 < len(cache.items) < 6
    cached(images=[frames[-1]], return_tensors="pt")  # the newest is kept, the oldest went first
    cached(images=[frames[0]], return_tensors="pt")
    assert (cache.hits, cache.misses) == (1, 7)
    small = cache_images(AutoImageProcessor.from_pretrained(policy), max_mb=1)  # no frame fits
    for frame in frames[:2]:
        small(images=[frame], return_tensors="pt")
    assert (small._omnidrive_cache.misses, small._omnidrive_cache.bytes, len(small._omnidrive_cache.items)) == (2, 0, 0)


def test_the_report_prints_each_figure_beside_its_target():
    from omnidrive_r1.bench.__main__ import report

    lines = report("step", {"overhead_fraction": 0.29, "clip_reward_fraction": 0.02})
    assert lines == ["step: overhead_fraction=0.290 (target <= 0.1: MISSED)",
                     "step: clip_reward_fraction=0.020 (target <= 0.1: met)"]
    assert report("tool_call", {"median_ms": 25.0}) == ["tool_call: median_ms=25.000 (target < 20: MISSED)"]


def test_logged_images_are_thumbnails_and_small_or_foreign_ones_pass_unchanged():
    from PIL import Image

    from omnidrive_r1.trainer import thumbnail

    frame = Image.new("RGB", (2400, 900), "white")
    small = Image.new("RGB", (200, 120))
    assert thumbnail(frame, 384).size == (384, 144) and frame.size == (2400, 900)  # the original is untouched
    assert thumbnail(small, 384) is small
    assert thumbnail("path/to.png", 384) == "path/to.png"
    assert thumbnail(Image.new("RGB", (3000, 10)), 384).size == (384, 1)


def test_the_vision_attention_bench_builds_its_tower():
    # its published-architecture import once broke unseen (the figure lives in the policy family's module now)
    from omnidrive_r1.bench.vision import _tower
    from omnidrive_r1.policies.qwen2_5_vl import QWEN2_5_VL_7B

    tower, _ = _tower("cpu")
    assert len(tower.blocks) == 8 and QWEN2_5_VL_7B["vision_config"]["depth"] == 32
