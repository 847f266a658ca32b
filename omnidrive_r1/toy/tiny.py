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
from omnidrive_r1.toy.toydrive import TOY_MAX_PIXELS, TOY_MIN_PIXELS

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

TINY_TOKENIZER_VOCAB = 4096  # upper bound; BPE stops earlier when the toydrive corpus runs out of merges
TINY_POLICY_CONFIG = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,  # head_dim 64: vLLM's CPU attention refuses 16 and accepts 64
    "num_key_value_heads": 1,
    "max_position_embeddings": 8192,
    "mrope_section": [8, 12, 12],  # sums to head_dim / 2
    # Qwen2.5-VL gives the image-width axis the lowest rotary frequencies: at rope_theta 1e6 ten columns differ
    # by 0.002 rad and a tiny model cannot tell where a token sits (measured: docs/toy.md). At 10 they differ
    # by 2.4 rad.
    "rope_theta": 10.0,
    "vision_depth": 2,
    "vision_hidden_size": 64,
    "vision_heads": 2,
    "vision_intermediate_size": 128,
}
# The toy preset's input resolution (toydrive's): small enough for 2 CPU cores, and small enough that
# toydrive's decisive details vanish unless the policy zooms.
TINY_MIN_PIXELS, TINY_MAX_PIXELS = TOY_MIN_PIXELS, TOY_MAX_PIXELS

TINY_CLIP_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
TINY_CLIP_NAME = "omnidrive-tiny-clip"

_BUILD_VERSION = "6"  # bump when the build recipe changes, so old caches are not reused


def tokenizer_corpus(seed: int = 0, frames: int = 256) -> list[str]:
    """Text the tiny tokenizer learns its merges from: the system prompt, the tool schema and the chat template
    as every prompt carries them, and toydrive questions, answers and reasoning."""
    import random

    from transformers.utils import get_json_schema

    from omnidrive_r1.prompts import SYSTEM_PROMPT
    from omnidrive_r1.tools.zoom_in import ZoomInTool
    from omnidrive_r1.toy.toydrive import corpus_lines, slot_boxes

    schema = json.dumps(get_json_schema(ZoomInTool.image_zoom_in_tool))
    rng = random.Random(seed)  # boxes with coordinates on the 28-pixel grid, in random combinations
    grid = ['"bbox_2d": [' + ", ".join(str(28 * rng.randrange(21)) for _ in range(4)) + "]" for _ in range(400)]
    slots = [f'"bbox_2d": {box}' for kinds in slot_boxes().values() for box in kinds.values()] * 40
    replies = [f"Zoomed view of image 0 ({colour} board), now image 1." for colour in ("yellow", "red")] * 40
    return [*[SYSTEM_PROMPT, schema, templates.QWEN2_5_VL_TOOLS] * 8, *grid, *slots, *replies,
            *corpus_lines(seed=seed, frames=frames)]


def train_tiny_tokenizer(vocab_size: int, seed: int = 0):
    """A byte-level BPE tokenizer (Qwen style: no BOS, `<|im_end|>` ends a turn) with Qwen's special tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    # A box's coordinate list is a piece of its own, and the boxes the toy base writes (`slot_boxes`) are in the
    # corpus often enough to become single tokens: the tiny policy makes one choice per box rather than four
    # dependent ones (four-token boxes stayed near chance after 700 SFT steps: the coordinate after the first
    # ignored it; docs/toy.md). Any other box falls apart into digit runs, each its own piece. Elsewhere merges may
    # cross spaces: the system prompt and tool schema every prompt repeats shrink to a few tokens, which is most
    # of the toy's compute. A camera name is a piece of its own too: merged into whole questions it left one
    # opaque token per (question, colour, camera), and the policy could not learn where a named camera's board is.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"CAM_[A-Z_]+|\[[0-9]+, [0-9]+, [0-9]+, [0-9]+\]|[0-9]+"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
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
            "rope_parameters": {"rope_type": "default", "rope_theta": c["rope_theta"],
                                "mrope_section": c["mrope_section"]},
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


def build_tiny_processor_dir(seed: int = 0, out_dir: str | Path | None = None) -> Path:
    """Build (or reuse) a directory holding only the tiny processor (tokenizer, image processor, chat template):
    what template and parsing tests need, in a second and without a model."""
    key = content_key(_BUILD_VERSION, TINY_TOKENIZER_VOCAB, seed, templates.QWEN2_5_VL_TOOLS, TINY_MIN_PIXELS,
                      TINY_MAX_PIXELS)
    target = Path(out_dir) if out_dir else cache_root() / "models" / f"tiny-processor-s{seed}-{key}"
    return build_atomically(target, lambda tmp: build_tiny_processor(
        train_tiny_tokenizer(TINY_TOKENIZER_VOCAB, seed)).save_pretrained(tmp))


def build_tiny_policy(seed: int = 0, out_dir: str | Path | None = None, **overrides) -> Path:
    """Build (or reuse) the tiny Qwen2.5-VL policy directory: random weights, tokenizer, processor, chat template.

    The directory loads with `Qwen2_5_VLForConditionalGeneration.from_pretrained` and
    `AutoProcessor.from_pretrained`, exactly like a downloaded checkpoint. It has the architecture and the
    token layout of the real model and knows nothing: `omnidrive_r1.toy.base` teaches it the toy world.
    """
    key = content_key(_BUILD_VERSION, TINY_POLICY_CONFIG, TINY_TOKENIZER_VOCAB, overrides, seed,
                      templates.QWEN2_5_VL_TOOLS, TINY_MIN_PIXELS, TINY_MAX_PIXELS)
    target = Path(out_dir) if out_dir else cache_root() / "models" / f"tiny-qwen2.5-vl-s{seed}-{key}"

    def build(tmp: Path):
        import torch
        from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

        tokenizer = train_tiny_tokenizer(TINY_TOKENIZER_VOCAB, seed)
        config = tiny_policy_config(tokenizer, **overrides)
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config).eval()
        processor = build_tiny_processor(tokenizer)
        model.generation_config = GenerationConfig(
            eos_token_id=[config.text_config.eos_token_id],
            pad_token_id=config.text_config.pad_token_id,
            do_sample=False,
        )
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)

    return build_atomically(target, build, key)


def build_tiny_clip(seed: int = 0, out_dir: str | Path | None = None, config: dict | None = None) -> Path:
    """Build (or reuse) a random-weight CLIP from an open_clip model config (default `TINY_CLIP_CONFIG`).

    The directory holds `open_clip_config.json` and `open_clip_model.safetensors`, the layout of an
    open_clip checkpoint, so it loads with `open_clip.create_model_and_transforms("local-dir:<dir>")`.
    """
    config = config or TINY_CLIP_CONFIG
    key = content_key(_BUILD_VERSION, config, seed)
    target = Path(out_dir) if out_dir else cache_root() / "models" / f"tiny-clip-s{seed}-{key}"

    def build(tmp: Path):
        import open_clip
        import torch
        from safetensors.torch import save_file

        (tmp / "open_clip_config.json").write_text(
            json.dumps({"model_cfg": config, "preprocess_cfg": {}}, indent=2)
        )
        (tmp / f"{TINY_CLIP_NAME}.json").write_text(json.dumps(config, indent=2))
        open_clip.add_model_config(tmp / f"{TINY_CLIP_NAME}.json")
        torch.manual_seed(seed)
        model = open_clip.create_model(TINY_CLIP_NAME, pretrained=None)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp / "open_clip_model.safetensors")

    return build_atomically(target, build, key)
