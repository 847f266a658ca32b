"""Tiny, offline stand-ins for the real models: a policy of each supported family and an open_clip CLIP.

Nothing here touches a model hub. The policy has the real architecture of its family
(`omnidrive_r1/policies/`) at toy width; its byte-level BPE tokenizer is trained on toydrive text and carries
the family's special tokens, so prompts, chat templates and image-token expansion behave as they do with the
published checkpoints. Both models are built once per (config, seed) and cached on disk; the same seed gives
the same weights and the same tokenizer.

    >>> policy_dir = build_tiny_policy()          # doctest: +SKIP
    >>> AutoProcessor.from_pretrained(policy_dir)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, PreTrainedTokenizerFast
from transformers.utils import get_json_schema

from omnidrive_r1 import policies
from omnidrive_r1.disk_cache import build_atomically, cache_root, content_key
from omnidrive_r1.prompts import SYSTEM_PROMPT
from omnidrive_r1.tools.zoom_in import RelativeZoomInTool, ZoomInTool
from omnidrive_r1.toy import tiny_families
from omnidrive_r1.toy.toydrive import TOY_MAX_PIXELS, TOY_MIN_PIXELS, corpus_lines, slot_boxes, toy_pixels

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


def tiny_pixels(family) -> tuple[int, int]:
    """The tiny policy's (min_pixels, max_pixels): toydrive's resolution in the family's own image tokens."""
    return toy_pixels(family)[:2]


def _family(name: str | None):
    return policies.get(name) if name else policies.default()


def tokenizer_corpus(seed: int = 0, frames: int = 256, family: str | None = None) -> list[str]:
    """Text the tiny tokenizer learns its merges from: the system prompt, the tool schema and the chat template
    as every prompt carries them, and toydrive questions, answers and reasoning."""
    fam = _family(family)
    relative = fam.coordinates == "relative"
    schema = json.dumps(get_json_schema((RelativeZoomInTool if relative else ZoomInTool).image_zoom_in_tool))
    rng = random.Random(seed)  # boxes in the family's coordinates (on its pixel grid), in random combinations
    value = (lambda: rng.randrange(1001)) if relative else (lambda: fam.factor * rng.randrange(21))
    grid = ['"bbox_2d": [' + ", ".join(str(value()) for _ in range(4)) + "]" for _ in range(400)]
    slots = [f'"bbox_2d": {box}' for kinds in slot_boxes(family=fam).values() for box in kinds.values()] * 40
    replies = [f"Zoomed view of image 0 ({colour} board), now image 1." for colour in ("yellow", "red")] * 40
    return [*[SYSTEM_PROMPT, schema, fam.chat_template()] * 8, *grid, *slots, *replies,
            *corpus_lines(seed=seed, frames=frames)]


def train_tiny_tokenizer(vocab_size: int, seed: int = 0, family: str | None = None):
    """A byte-level BPE tokenizer (Qwen style: no BOS, `<|im_end|>` ends a turn) with the family's special tokens."""
    fam = _family(family)
    special_tokens, added_tokens = tiny_families.tokens(fam)
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
        vocab_size=vocab_size - len(special_tokens) - len(added_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tokenizer_corpus(seed, family=family), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=special_tokens[1:],
        model_max_length=32768,
        padding_side="left",
    )
    fast.add_special_tokens({"additional_special_tokens": special_tokens[1:]})
    fast.add_tokens(added_tokens)
    return fast


def build_tiny_processor(tokenizer, min_pixels: int | None = None, max_pixels: int | None = None,
                         family: str | None = None):
    fam = _family(family)
    lo, hi = tiny_pixels(fam)
    return tiny_families.tiny_processor(fam, tokenizer, min_pixels or lo, max_pixels or hi)


def tiny_policy_config(tokenizer, family: str | None = None, **overrides):
    return tiny_families.tiny_config(_family(family), tokenizer, {**TINY_POLICY_CONFIG, **overrides})


def _key(family: str | None, *parts) -> tuple[str, str]:
    """(folder name, content key): the default family's keys are those of builds before there were families."""
    fam = _family(family)
    extra = () if fam is policies.default() else (fam.model_types[0], "slot-boxes")  # its corpus has its boxes
    return fam.name.lower(), content_key(*parts, fam.chat_template(), *tiny_pixels(fam), *extra)


def build_tiny_processor_dir(seed: int = 0, out_dir: str | Path | None = None, family: str | None = None) -> Path:
    """Build (or reuse) a directory holding only the tiny processor (tokenizer, image processor, chat template):
    what template and parsing tests need, in a second and without a model."""
    slug, key = _key(family, _BUILD_VERSION, TINY_TOKENIZER_VOCAB, seed)
    name = "tiny-processor" if _family(family) is policies.default() else f"tiny-processor-{slug}"
    target = Path(out_dir) if out_dir else cache_root() / "models" / f"{name}-s{seed}-{key}"
    return build_atomically(target, lambda tmp: build_tiny_processor(
        train_tiny_tokenizer(TINY_TOKENIZER_VOCAB, seed, family), family=family).save_pretrained(tmp))


def build_tiny_policy(seed: int = 0, out_dir: str | Path | None = None, family: str | None = None,
                      **overrides) -> Path:
    """Build (or reuse) the tiny policy directory of `family` (a model_type; default: the default family's):
    random weights, tokenizer, processor, chat template.

    The directory loads with `AutoModelForImageTextToText.from_pretrained` and `AutoProcessor.from_pretrained`,
    exactly like a downloaded checkpoint. It has the architecture and the token layout of the real model and
    knows nothing: `omnidrive_r1.toy.base` teaches it the toy world.
    """
    fam = _family(family)
    slug, key = _key(family, _BUILD_VERSION, TINY_POLICY_CONFIG, TINY_TOKENIZER_VOCAB, overrides, seed)
    target = Path(out_dir) if out_dir else cache_root() / "models" / f"tiny-{slug}-s{seed}-{key}"

    def build(tmp: Path):
        print(f"building the tiny {fam.name} policy (seed {seed}): tokenizer, weights, processor")
        tokenizer = train_tiny_tokenizer(TINY_TOKENIZER_VOCAB, seed, family)
        config = tiny_policy_config(tokenizer, family, **overrides)
        torch.manual_seed(seed)
        model = fam.model(config).eval()
        processor = build_tiny_processor(tokenizer, family=family)
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

        (tmp / "open_clip_config.json").write_text(
            json.dumps({"model_cfg": config, "preprocess_cfg": {}}, indent=2)
        )
        (tmp / f"{TINY_CLIP_NAME}.json").write_text(json.dumps(config, indent=2))
        open_clip.add_model_config(tmp / f"{TINY_CLIP_NAME}.json")
        torch.manual_seed(seed)
        model = open_clip.create_model(TINY_CLIP_NAME, pretrained=None)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp / "open_clip_model.safetensors")

    return build_atomically(target, build, key)
