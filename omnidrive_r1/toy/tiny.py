"""Tiny, offline stand-ins for the real models: a Qwen2.5-VL policy and an open_clip CLIP.

Nothing here touches a model hub. The policy has the real `Qwen2_5_VLForConditionalGeneration`
architecture at toy width; its byte-level BPE tokenizer is trained on toydrive text and carries
Qwen2.5-VL's special tokens, so prompts, chat templates and image-token expansion behave as they do
with the 7B checkpoint. Both models are built once per (config, seed) and cached on disk; the same seed
gives the same weights and the same tokenizer.

    >>> policy_dir = build_tiny_policy()          # doctest: +SKIP
    >>> AutoProcessor.from_pretrained(policy_dir)  # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path

from omnidrive_r1 import templates
from omnidrive_r1.cache import build_atomically, cache_root, content_key

# Qwen2.5-VL's added tokens, in the order (and so with the relative ids) the real tokenizer has them.
QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# Added but not "special": they stay in decoded text, as in Qwen2.5's tokenizer.
QWEN_ADDED_TOKENS = ["<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>"]

TINY_TOKENIZER_VOCAB = 2048  # upper bound; BPE stops earlier when the toydrive corpus runs out of merges
TINY_POLICY_CONFIG = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,  # head_dim 64: vLLM's CPU attention refuses 16 and accepts 64
    "num_key_value_heads": 1,
    "max_position_embeddings": 8192,
    "mrope_section": [8, 12, 12],  # sums to head_dim / 2
    "vision_depth": 2,
    "vision_hidden_size": 64,
    "vision_heads": 2,
    "vision_intermediate_size": 128,
}
# The policy's default input resolution for toy runs: small enough for 2 CPU cores, and small enough
# that toydrive's decisive details vanish unless the policy zooms.
TINY_MIN_PIXELS = 8 * 28 * 28
TINY_MAX_PIXELS = 160 * 28 * 28

TINY_CLIP_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
TINY_CLIP_NAME = "omnidrive-tiny-clip"

_BUILD_VERSION = "2"  # bump when the build recipe changes, so old caches are not reused
# A random 2-layer model never writes a tag, so every reward is 0 and GRPO has nothing to learn from. The tiny
# policy stands in for an *instruct* checkpoint, so it is first taught the protocol's shape on text alone
# (think, then a zoom call or an answer); what to answer and where to zoom is left to RL.
TINY_WARMUP_STEPS = 250


def tokenizer_corpus(seed: int = 0, frames: int = 256) -> list[str]:
    """Text the tiny tokenizer learns its merges from: toydrive questions, answers and protocol words."""
    import random

    from omnidrive_r1.prompts import SYSTEM_PROMPT
    from omnidrive_r1.toy.toydrive import corpus_lines

    return [SYSTEM_PROMPT, *corpus_lines(seed=seed, frames=frames), *protocol_texts(random.Random(seed), 64)]


def train_tiny_tokenizer(vocab_size: int, seed: int = 0):
    """A byte-level BPE tokenizer (Qwen style: no BOS, `<|im_end|>` ends a turn) with Qwen's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(QWEN_SPECIAL_TOKENS) - len(QWEN_ADDED_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tokenizer_corpus(seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=QWEN_SPECIAL_TOKENS[1:],
        model_max_length=32768,
        padding_side="left",
    )
    fast.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL_TOKENS[1:]})
    fast.add_tokens(QWEN_ADDED_TOKENS)
    return fast


def build_tiny_processor(tokenizer, min_pixels: int = TINY_MIN_PIXELS, max_pixels: int = TINY_MAX_PIXELS):
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    image_processor = Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels)
    return Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=templates.QWEN2_5_VL_TOOLS,
    )


def tiny_policy_config(tokenizer, **overrides):
    from transformers import Qwen2_5_VLConfig

    c = {**TINY_POLICY_CONFIG, **overrides}
    ids = tokenizer.convert_tokens_to_ids
    head_dim = c["hidden_size"] // c["num_attention_heads"]
    if sum(c["mrope_section"]) != head_dim // 2:
        raise ValueError(f"mrope_section {c['mrope_section']} must sum to head_dim/2 = {head_dim // 2}")
    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),  # every id the model can emit decodes to text
            "hidden_size": c["hidden_size"],
            "intermediate_size": c["intermediate_size"],
            "num_hidden_layers": c["num_hidden_layers"],
            "num_attention_heads": c["num_attention_heads"],
            "num_key_value_heads": c["num_key_value_heads"],
            "max_position_embeddings": c["max_position_embeddings"],
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": c["mrope_section"]},
            "bos_token_id": ids("<|endoftext|>"),
            "eos_token_id": ids("<|im_end|>"),
            "pad_token_id": ids("<|endoftext|>"),
        },
        vision_config={
            "depth": c["vision_depth"],
            "hidden_size": c["vision_hidden_size"],
            "num_heads": c["vision_heads"],
            "intermediate_size": c["vision_intermediate_size"],
            "out_hidden_size": c["hidden_size"],
            "fullatt_block_indexes": [c["vision_depth"] - 1],
            "window_size": 112,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=False,
    )


def protocol_texts(rng, n: int) -> list[str]:
    """Chat-formatted trajectories in the iMCoT protocol, built from toydrive questions, with one image
    placeholder per image (the processor expands it)."""
    from omnidrive_r1.prompts import SYSTEM_PROMPT
    from omnidrive_r1.toy.toydrive import questions, sample_frame

    def image():
        return "<|vision_start|><|image_pad|><|vision_end|>"

    labels = ["traffic light", "sign", "crosswalk object", "pedestrian", "cone", "lamp"]
    short = {"light": ["red", "yellow", "green"], "sign": ["left", "right", "straight"],
             "object": ["pedestrian", "cone"]}
    texts = []
    while len(texts) < n:
        spec = sample_frame(rng, len(texts))
        for q in questions(spec, rng):
            answer = q["final_answer"] if rng.random() < 0.6 else rng.choice(short[q["detail"]])
            think = q["steps"].split("\n")[0].split(": ", 1)[-1]
            head = (f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n{image()}{q['question']}"
                    "<|im_end|>\n<|im_start|>assistant\n")
            if rng.random() < 0.5:
                x, y = rng.randint(0, 500), rng.randint(0, 170)
                w, h = rng.randint(20, 80), rng.randint(20, 60)
                call = json.dumps({"name": "image_zoom_in_tool",
                                   "arguments": {"bbox_2d": [x, y, x + w, y + h], "label": rng.choice(labels)}})
                head += (f"<think>The detail is too small. I zoom in.</think>\n<tool_call>\n{call}\n</tool_call>"
                         f"<|im_end|>\n<|im_start|>user\n<tool_response>\n{image()}Zoomed view of image 0, now image 1.\n"
                         "</tool_response><|im_end|>\n<|im_start|>assistant\n")
            texts.append(head + f"<think>{think}</think><answer>{answer}</answer><|im_end|>")
    return texts[:n]


def _assistant_labels(input_ids, tokenizer):
    """Labels that train only the assistant turns (from after "<|im_start|>assistant\\n" to <|im_end|>)."""
    header = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    labels = input_ids.clone().fill_(-100)
    for b, row in enumerate(input_ids.tolist()):
        inside = False
        for i, token in enumerate(row):
            if inside:
                labels[b, i] = token
                inside = token != end
            elif i >= len(header) and row[i - len(header):i] == header:
                labels[b, i] = token
                inside = token != end
    return labels


def _noise_image(rng):
    """A small random image: the warm-up only needs vision features to be present, not meaningful."""
    from PIL import Image

    w, h = rng.randint(2, 8) * 28, rng.randint(2, 5) * 28
    return Image.frombytes("RGB", (w, h), bytes(rng.getrandbits(8) for _ in range(w * h * 3)))


def _protocol_warmup(model, processor, seed: int, steps: int, batch_size: int = 16, lr: float = 5e-3):
    import random

    import torch

    rng = random.Random(seed)
    tokenizer = processor.tokenizer
    texts = protocol_texts(rng, steps * batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    for step in range(steps):
        chunk = texts[step * batch_size:(step + 1) * batch_size]
        images = [_noise_image(rng) for text in chunk for _ in range(text.count("<|image_pad|>"))]
        batch = processor(text=chunk, images=images, return_tensors="pt", padding=True, padding_side="right")
        loss = model(**batch, labels=_assistant_labels(batch["input_ids"], tokenizer)).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
    model.eval()
    return loss.item()


def build_tiny_policy(seed: int = 0, out_dir: str | Path | None = None, warmup_steps: int = TINY_WARMUP_STEPS,
                      **overrides) -> Path:
    """Build (or reuse) the tiny Qwen2.5-VL policy directory: model, tokenizer, processor, chat template.

    The directory loads with `Qwen2_5_VLForConditionalGeneration.from_pretrained` and
    `AutoProcessor.from_pretrained`, exactly like a downloaded checkpoint.
    """
    key = content_key(_BUILD_VERSION, TINY_POLICY_CONFIG, TINY_TOKENIZER_VOCAB, overrides, seed, warmup_steps,
               templates.QWEN2_5_VL_TOOLS)
    target = Path(out_dir) if out_dir else cache_root() / "models" / f"tiny-qwen2.5-vl-s{seed}-{key}"

    def build(tmp: Path):
        import torch
        from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

        tokenizer = train_tiny_tokenizer(TINY_TOKENIZER_VOCAB, seed)
        config = tiny_policy_config(tokenizer, **overrides)
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config).eval()
        processor = build_tiny_processor(tokenizer)
        if warmup_steps:
            _protocol_warmup(model, processor, seed, warmup_steps)
        model.generation_config = GenerationConfig(
            eos_token_id=[config.text_config.eos_token_id],
            pad_token_id=config.text_config.pad_token_id,
            do_sample=False,
        )
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)

    return build_atomically(target, build)


def build_tiny_clip(seed: int = 0, out_dir: str | Path | None = None) -> Path:
    """Build (or reuse) a random-weight CLIP from an open_clip model config.

    The directory holds `open_clip_config.json` and `open_clip_model.safetensors`, the layout of an
    open_clip checkpoint on the hub, so it loads with `load_tiny_clip(dir)` or, with the config
    registered, `open_clip.create_model_and_transforms(TINY_CLIP_NAME, pretrained=<file>)`.
    """
    key = content_key(_BUILD_VERSION, TINY_CLIP_CONFIG, seed)
    target = Path(out_dir) if out_dir else cache_root() / "models" / f"tiny-clip-s{seed}-{key}"

    def build(tmp: Path):
        import open_clip
        import torch
        from safetensors.torch import save_file

        (tmp / "open_clip_config.json").write_text(
            json.dumps({"model_cfg": TINY_CLIP_CONFIG, "preprocess_cfg": {}}, indent=2)
        )
        (tmp / f"{TINY_CLIP_NAME}.json").write_text(json.dumps(TINY_CLIP_CONFIG, indent=2))
        open_clip.add_model_config(tmp / f"{TINY_CLIP_NAME}.json")
        torch.manual_seed(seed)
        model = open_clip.create_model(TINY_CLIP_NAME, pretrained=None)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp / "open_clip_model.safetensors")

    return build_atomically(target, build)


def load_tiny_clip(clip_dir: str | Path, device: str = "cpu"):
    """(model, preprocess, tokenizer) for a directory written by `build_tiny_clip`."""
    import open_clip

    clip_dir = Path(clip_dir)
    open_clip.add_model_config(clip_dir / f"{TINY_CLIP_NAME}.json")
    model, _, preprocess = open_clip.create_model_and_transforms(
        TINY_CLIP_NAME, pretrained=str(clip_dir / "open_clip_model.safetensors"), device=device
    )
    return model.eval(), preprocess, open_clip.get_tokenizer(TINY_CLIP_NAME)
