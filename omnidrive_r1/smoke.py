"""Smoke rollout: toydrive -> DriveLMM-o1 loader -> policy `generate`. Checks that data, model, processor
and chat template fit together before any training is attempted."""

from __future__ import annotations

import json
import time
from pathlib import Path


def ensure_toydrive(data: str | Path, frames: int = 16, seed: int = 0) -> Path:
    data = Path(data)
    if not (data / "drivelmm" / "test.json").exists():
        from omnidrive_r1.data.toydrive import generate

        print(f"generating toydrive into {data} ({frames} frames, seed {seed})")
        generate(data, frames=frames, seed=seed)
    return data


def smoke_rollout(model: str | None, data: str | Path, n: int = 4, max_new_tokens: int = 32,
                  out: str | Path = "outputs/toy/smoke", seed: int = 0) -> list[dict]:
    import torch
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from omnidrive_r1.data.loaders import load_drivelmm
    from omnidrive_r1.rollout import with_image
    from omnidrive_r1.tiny import build_tiny_policy

    data = ensure_toydrive(data, seed=seed)
    ds, report = load_drivelmm(data / "drivelmm" / "test.json", limit=n)
    print(report.summary())
    model_dir = model or str(build_tiny_policy())
    processor = AutoProcessor.from_pretrained(model_dir)
    processor.tokenizer.padding_side = "left"
    policy = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir).eval()
    texts = [processor.apply_chat_template(with_image(p), add_generation_prompt=True, tokenize=False)
             for p in ds["prompt"]]
    inputs = processor(text=texts, images=list(ds["image"]), return_tensors="pt", padding=True)
    t0 = time.perf_counter()
    with torch.no_grad():
        gen = policy.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    dt = time.perf_counter() - t0
    new = gen[:, inputs["input_ids"].shape[1]:]
    responses = processor.batch_decode(new, skip_special_tokens=True)
    rows = [{"idx": i, "question": q, "answer": a, "response": r, "prompt_tokens": int(m.sum())}
            for i, q, a, r, m in zip(ds["idx"], ds["question"], ds["answer"], responses, inputs["attention_mask"])]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "rollouts.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    print(f"{len(rows)} rollouts, {new.numel()} new tokens in {dt:.1f}s -> {out / 'rollouts.jsonl'}")
    for row in rows[:2]:
        print(f"  [{row['idx'][-12:]}] {row['question'][:60]}... -> {row['response'][:60]!r}")
    return rows
