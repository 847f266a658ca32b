"""The toy preset's stand-ins for the pretrained models (`docs/toy.md`), built offline and cached:

- **toy CLIP**: the tiny open_clip architecture trained contrastively (open_clip's own `ClipLoss`) on toydrive
  board crops and their captions ("a yellow board with a chevron pointing left", "yellow board"), next to
  whole frames and other crops with their own captions, so that a crop of a board matches its caption
  clearly better than the whole frame does.
- **toy base policy**: the tiny Qwen2.5-VL trained with TRL's `SFTTrainer` on iMCoT trajectories over
  toydrive frames: it follows the protocol, reads a board's stripes when a crop shows the board, and calls
  the zoom tool, but with imperfect boxes (`BOX_MIX`: often off target or too large, and then it can only
  guess), so that RL has real headroom. It plays the role of Qwen2.5-VL-7B-Instruct: able, not yet good
  at zooming.

`build_toy_base(out, seed)` writes `out/policy/` (a plain Hugging Face model directory) and `out/clip/`
(an open_clip `local-dir:` checkpoint). Same seed, same bytes.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import tempfile
from pathlib import Path

import torch
import torchvision.transforms.v2.functional as F
from datasets import Dataset
from PIL import ImageDraw
from safetensors.torch import save_file
from tqdm.auto import tqdm
from transformers import AutoModelForImageTextToText
from trl import SFTConfig, SFTTrainer

from omnidrive_r1 import policies
from omnidrive_r1.coordinates import model_size
from omnidrive_r1.data.stitch import CAMERAS, stitch
from omnidrive_r1.disk_cache import build_atomically, cache_root, content_key
from omnidrive_r1.errors import UserError
from omnidrive_r1.policies import build_processor, default
from omnidrive_r1.tools.zoom_in import ZoomInTool
from omnidrive_r1.toy.tiny import TINY_POLICY_CONFIG, build_tiny_policy
from omnidrive_r1.toy.toydrive import (
    ACTION_OPTIONS,
    ACTIONS,
    CAMERA_SIZE,
    MEANINGS,
    SHOW_OPTIONS,
    SHOWS,
    SLOTS,
    Board,
    draw_board,
    questions,
    render_frame,
    sample_boards,
    slot_boxes,
    stage1_question,
    toy_pixels,
)

log = logging.getLogger(__name__)

# Where the base policy's zoom goes (the SFT data's mix): the asked board's own cell, another cell, or a
# 4x4 block around the board, in which the base cannot read the stripes; sometimes no zoom at all. Too large is
# the most common, so the base's most likely box (what greedy decoding writes) is imperfect too.
BOX_MIX = {"too_large": 0.45, "on_target": 0.3, "off_target": 0.15, "no_zoom": 0.1}
# The crops the base learns to answer from (its last turn): mostly readable ones, so that reading a crop deep
# in the conversation is learnt; the rest teach it to say when it cannot read and guess.
READ_MIX = {"on_target": 0.6, "too_large": 0.25, "off_target": 0.15}


def box_mix(zoom_share: float | None = None) -> dict:
    """`BOX_MIX`, or a reluctant base's: the zoom kinds scaled to `zoom_share` of the examples that offer the
    tool (in `BOX_MIX`'s proportions) and `no_zoom`, answering at once, the rest. A base built with
    `zoom_share=0.25` calls the tool in about a quarter of its rollouts at temperature 1 (measured in
    docs/ablation.md), where the shipped one calls in nearly every rollout: the start the paper's Qwen2.5-VL-7B
    makes, which does not call an undeclared tool."""
    if zoom_share is None:
        return BOX_MIX
    if not 0 < zoom_share <= 1:
        raise ValueError(f"zoom_share must lie in (0, 1], got {zoom_share}")
    zoom = {k: v for k, v in BOX_MIX.items() if k != "no_zoom"}
    total = sum(zoom.values())
    return {**{k: zoom_share * v / total for k, v in zoom.items()}, "no_zoom": 1 - zoom_share}
# The toy base is the tiny policy with a third text layer and rope_theta 1e4 (the tiny policy's 10 serves
# locating things in an image; the base's boxes are single tokens chosen from the question's text). With two
# layers it read a crop alone (1.00 on held-out crops) but not the same crop after the frame and the question
# (0.60: the diagonal stripes' direction lost). With three layers at rope_theta 10 the full recipe still
# read every left chevron as a right one (reading in context 0.72, answer given the reading 0.72); at 1e4,
# 1.00 and 0.90. Measured in docs/toy.md.
TOY_BASE_OVERRIDES = {"num_hidden_layers": 3, "rope_theta": 1e4}
ZOOM_THINK = "<think>The stripes are too small to read here, so I zoom in on the board.</think>"
NO_TOOL_SHARE = 0.1  # examples whose prompt offers no tool at all: the policy answers at once (and can only guess)
TOY_CLIP_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 112, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
STRIPES = {"left": "stripes running down to the right", "right": "vertical stripes",
           "closed": "horizontal stripes"}
CAPTIONS = {"left": "a chevron pointing left", "right": "a chevron pointing right", "closed": "a road-closed barrier"}


def reading(board: Board) -> str:
    """What the policy writes once a crop shows the board: the stripes, then what they mean, in the words the
    answer options use, so that answering is copying."""
    return f"The {board.colour} board has {STRIPES[board.meaning]}: {CAPTIONS[board.meaning]}."


def board_caption(board: Board) -> str:
    return f"a {board.colour} board with {CAPTIONS[board.meaning]}"


def _frames(seed: int, n: int, scenes: int = 60):
    """(boards, stitched frame) pairs for training only (their own seed stream, never toydrive's test). A pool of
    `scenes` street scenes is drawn once and every frame gets boards of its own on one of them: where the boards
    are varies with every example, which is what the policy must learn to find."""
    rng = random.Random(seed)
    pool = []
    for _ in range(min(scenes, n)):
        views = render_frame([], rng.getrandbits(32))
        pool.append(stitch([views[c] for c in CAMERAS]))
    for i in range(n):
        boards = sample_boards(rng)
        frame = pool[i % len(pool)].copy()
        draw = ImageDraw.Draw(frame)
        for board in boards:
            draw_board(draw, board)
        yield boards, frame


# ---------------------------------------------------------------------------------------------- toy CLIP

def _clip_pairs(seed: int, frames: int):
    """(image, caption) pairs: board crops with full and short captions, whole frames, crops of the rest."""
    rng = random.Random(seed)
    pairs = []
    for boards, frame in _frames(seed, frames):
        for board in boards:
            crop = frame.crop(board.box)
            pairs += [(crop, board_caption(board)), (crop, f"{board.colour} board")]
        pairs.append((frame, "a road scene"))
        x, y = rng.randrange(0, frame.width - 240), rng.randrange(0, frame.height - 240)
        if not any(b.box[0] < x + 240 and x < b.box[2] and b.box[1] < y + 240 and y < b.box[3] for b in boards):
            pairs.append((frame.crop((x, y, x + 240, y + 240)), "a part of the street"))
    return pairs


def train_clip(out: Path, seed: int, steps: int = 300, batch_size: int = 64, frames: int = 160) -> dict:
    """Train the toy CLIP; returns its caption retrieval accuracy on held-out board crops."""
    import open_clip

    (out / "open_clip_config.json").write_text(json.dumps({"model_cfg": TOY_CLIP_CONFIG, "preprocess_cfg": {}},
                                                          indent=2))
    torch.manual_seed(seed)
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{out}")
    pairs = _clip_pairs(seed, frames)
    images = torch.stack([preprocess(im) for im, _ in tqdm(pairs, desc="toy CLIP images")])
    texts = tokenizer([t for _, t in pairs])
    loss_fn = open_clip.ClipLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    rng = torch.Generator().manual_seed(seed)
    model.train()
    for _ in tqdm(range(steps), desc="toy CLIP steps"):
        pick = torch.randperm(len(pairs), generator=rng)[:batch_size]
        caption = [pairs[i][1] for i in pick.tolist()]
        # one caption per image in a batch: InfoNCE must not push apart two copies of the same caption
        keep = [k for k, c in enumerate(caption) if caption.index(c) == k]
        pick = pick[keep]
        image_features, text_features, scale = model(images[pick], texts[pick])
        loss = loss_fn(image_features, text_features, scale)
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
    model.eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / "open_clip_model.safetensors")
    return clip_retrieval(model, preprocess, tokenizer, seed + 1)


def clip_retrieval(model, preprocess, tokenizer, seed: int, frames: int = 30) -> dict:
    """Held-out board crops: is the right caption the most similar of the six? And how much more does a board
    crop match its short label than the whole frame does (the margin the grounding reward works with)?"""
    captions = [f"a {c} board with {CAPTIONS[m]}" for c in ("yellow", "red") for m in MEANINGS]
    hits, gaps = [], []
    with torch.no_grad():
        text = torch.nn.functional.normalize(model.encode_text(tokenizer(captions)), dim=-1)
        labels = torch.nn.functional.normalize(model.encode_text(tokenizer(["yellow board", "red board"])), dim=-1)
        for boards, frame in _frames(seed, frames):
            full = torch.nn.functional.normalize(model.encode_image(preprocess(frame)[None]), dim=-1)[0]
            for board in boards:
                crop = torch.nn.functional.normalize(model.encode_image(preprocess(frame.crop(board.box))[None]), dim=-1)[0]
                hits.append(captions[int((text @ crop).argmax())] == board_caption(board))
                label = labels[0 if board.colour == "yellow" else 1]
                gaps.append(float(label @ crop - label @ full))
    return {"caption_retrieval_accuracy": sum(hits) / len(hits), "chance": 1 / len(captions),
            "crop_minus_frame_similarity": sum(gaps) / len(gaps), "held_out_crops": len(hits)}


# ----------------------------------------------------------------------------------------- toy base policy

def _family(family=None):
    """A model family (`omnidrive_r1/policies/`): the one named (a model_type), or the default family."""
    if family is None:
        return policies.default()
    return policies.get(family) if isinstance(family, str) else family


def _zoom_tool(family, crop_bound: bool = True):
    """The zoom tool as the toy recipes configure it, in the family's geometry."""
    lo, hi, crop = toy_pixels(family)
    return ZoomInTool(min_pixels=lo, max_pixels=hi, max_crop_pixels=crop if crop_bound else None,
                      **family.zoom_options())


def _box(kind: str, board: Board, other: Board, rng: random.Random, size: tuple[int, int], family=None) -> list[int]:
    """A zoom box as the family's policy writes it for a `size` frame (`slot_boxes`: one grid cell, or 4x4 cells
    around it)."""
    boxes = slot_boxes(size, _family(family))
    if kind == "off_target":  # the slot of another camera (often the other board's)
        camera = other.camera if rng.random() < 0.4 else rng.choice([c for c in SLOTS if c != board.camera])
        return boxes[camera]["on_target"]
    # too_large: the crop is shrunk to max_crop_pixels and the stripes blur again. One fixed offset, so that this
    # box, the most common in the data, is also the one greedy decoding writes.
    return boxes[board.camera]["too_large" if kind == "too_large" else "on_target"]


def _question_rows(boards: list[Board]) -> list[tuple[Board, str, str]]:
    """(board, question, answer) for the frame's multiple-choice and stage-1 questions."""
    rows = [(q["board"], q["question"], q["final_answer"]) for q in questions(boards) if q["qnum"] in (2, 3, 4, 5, 8)]
    return rows + [(b, *stage1_question(b)) for b in boards]


def _zoom_turn(box: list[int], label: str) -> dict:
    """The assistant turn that opens a zoom: one opening for every zoom (the tiny tokenizer makes whole repeated
    sentences single tokens, and several openings would each lose to "I cannot ..." under greedy decoding)."""
    return {"role": "assistant", "content": _text(ZOOM_THINK),
            "tool_calls": [{"type": "function", "function": {"name": "image_zoom_in_tool",
                                                              "arguments": {"bbox_2d": box, "label": label}}}]}


def _system_with_tools(processor, family=None) -> str:
    """The system turn exactly as the chat template renders it with the zoom tool declared (TRL's SFT collator
    renders without a `tools` argument, so the tool block is carried in the system text)."""
    family = _family(family)
    tool = type(_zoom_tool(family))
    text = processor.apply_chat_template([{"role": "system", "content": family.system_prompt()}],
                                         tools=[tool.image_zoom_in_tool], tokenize=False)
    return text.split("<|im_start|>system\n", 1)[1].rsplit("<|im_end|>", 1)[0]


def as_seen(frame, family=None):
    """The frame resized to the policy's view exactly as the image processor resizes it (same pixels, tested),
    so the SFT collator's processor has nothing left to do: it was most of a step's time."""
    family = _family(family)
    lo, hi, _ = toy_pixels(family)
    w, h = model_size(*frame.size, min_pixels=lo, max_pixels=hi, factor=family.factor)
    small = F.resize(F.pil_to_tensor(frame), [h, w], interpolation=F.InterpolationMode.BICUBIC, antialias=True)
    return F.to_pil_image(small)


def _text(text: str) -> list[dict]:
    return [{"type": "text", "text": text}]


def _final_turn(kind: str, board: Board, answer: str, rng: random.Random) -> dict:
    """The assistant's last turn: read the board when the crop shows it, else say so and guess honestly."""
    if kind == "on_target":
        think = reading(board)
    else:
        think = f"I cannot make out the stripes on the {board.colour} board."
        answer = _guess(answer, rng)
    return {"role": "assistant", "content": _text(f"<think>{think}</think><answer>{answer}</answer>")}


def protocol_examples(processor, seed: int, frames: int, reading_only: bool = False, family=None,
                      zoom_share: float | None = None) -> list[dict]:
    """iMCoT trajectories as prompt-completion pairs, one per assistant turn, so that where the base zooms and
    what it does with the crop it gets are two separate mixes: the first turn's box follows `BOX_MIX`; the last
    turn follows the crop of a `READ_MIX` box. Crops and replies come from the real zoom tool, so they are
    exactly what RL sees. `reading_only`: only last turns after an on-target zoom (reading a crop deep in the
    conversation needs far more examples than the mix holds: `docs/toy.md`). `zoom_share`: a reluctant base's
    mix (`box_mix`)."""
    family = _family(family)
    rng = random.Random(seed)
    system = _system_with_tools(processor, family)
    box_kinds, box_weights = zip(*box_mix(zoom_share).items())
    read_kinds, read_weights = zip(*(READ_MIX.items() if not reading_only else [("on_target", 1.0)]))
    examples = []
    for boards, frame in _frames(seed ^ 0x4EAD if reading_only else seed, frames):
        seen = as_seen(frame, family)
        for board, question, answer in rng.sample(_question_rows(boards), 2):
            other = boards[1] if board is boards[0] else boards[0]
            offered = reading_only or rng.random() >= NO_TOOL_SHARE
            prompt = [{"role": "system", "content": _text(system if offered else family.system_prompt())},
                      {"role": "user", "content": [{"type": "image"}, *_text(question)]}]
            kind = rng.choices(box_kinds, box_weights)[0] if offered else "no_zoom"
            label = f"{board.colour} board"
            if kind == "no_zoom":  # answers at once, and can only guess
                examples.append({"prompt": prompt, "completion": [_final_turn(kind, board, answer, rng)],
                                 "images": [seen]})
                continue
            if not reading_only:
                examples.append({"prompt": prompt, "images": [seen],
                                 "completion": [_zoom_turn(_box(kind, board, other, rng, frame.size, family), label)]})
            kind = rng.choices(read_kinds, read_weights)[0]
            box = _box(kind, board, other, rng, frame.size, family)
            tool = _zoom_tool(family)
            tool.reset(image=frame)
            reply = tool.image_zoom_in_tool(bbox_2d=box, label=label)
            prompt = [*prompt, _zoom_turn(box, label),
                      # the tool turn as the template renders it (a user turn inside <tool_response>): TRL's SFT
                      # collator fills image placeholders of user turns only
                      {"role": "user", "content": [*_text("<tool_response>\n"), {"type": "image"},
                                                   *_text(reply[1]["text"] + "\n</tool_response>")]}]
            examples.append({"prompt": prompt, "completion": [_final_turn(kind, board, answer, rng)],
                             "images": [seen, reply[0]["image"]]})
    rng.shuffle(examples)
    return examples


def _guess(answer: str, rng: random.Random) -> str:
    meaning = rng.choice(MEANINGS)
    for options, by_meaning in ((SHOW_OPTIONS, SHOWS), (ACTION_OPTIONS, ACTIONS)):
        if answer.split(") ", 1)[-1] in options:
            text = by_meaning[meaning]
            return f"{'ABCD'[options.index(text)]}) {text}"
    return meaning  # a stage-1 short answer


def reading_examples(seed: int, n: int, family=None) -> list[dict]:
    """Short conversations that teach reading a board from the crop the zoom tool returns: the answer is the
    sentence the protocol writes after a zoom. Short, so a few hundred steps take seconds."""
    family = _family(family)
    examples = []
    rng = random.Random(seed)
    for boards, frame in _frames(seed ^ 0xC0DE, n):
        board = boards[rng.randrange(2)]
        tool = _zoom_tool(family, crop_bound=False)
        tool.reset(image=frame)
        crop = tool.image_zoom_in_tool(bbox_2d=_box("on_target", board, board, rng, frame.size, family),
                                       label="board")[0]["image"]
        examples.append({"messages": [
            {"role": "user", "content": [{"type": "image"}, *_text("What do the board's stripes look like?")]},
            {"role": "assistant", "content": _text(reading(board))}],
            "images": [crop]})
    return examples


def pointing_examples(processor, seed: int, n: int, family=None) -> list[dict]:
    """Text-only first turns: the question, then the zoom opening and a tool call with a `BOX_MIX` box (no
    image, no crop). Where a named camera's board is, is a fact of the text; learnt here in short sequences, it
    took a few hundred cheap steps, where whole trajectories had left the box at chance after 700 (docs/toy.md)."""
    rng = random.Random(seed ^ 0x9011)
    system = _system_with_tools(processor, family)
    kinds, weights = zip(*[(k, w) for k, w in BOX_MIX.items() if k != "no_zoom"])
    size = (3 * CAMERA_SIZE[0], 2 * CAMERA_SIZE[1])
    examples = []
    for _ in range(n):
        boards = sample_boards(rng)
        board, question, _ = rng.choice(_question_rows(boards))
        other = boards[1] if board is boards[0] else boards[0]
        box = _box(rng.choices(kinds, weights)[0], board, other, rng, size, family)
        examples.append({"messages": [{"role": "system", "content": _text(system)},
                                      {"role": "user", "content": _text(question)},
                                      _zoom_turn(box, f"{board.colour} board")]})
    return examples


def _sft(model, processor, dataset, seed: int, steps: int, batch_size: int, lr: float) -> float:
    with tempfile.TemporaryDirectory() as work:
        # loss on the assistant's tokens only: `messages` rows mask the rest through the chat template's
        # generation marks, prompt-completion rows through TRL's completion mask
        args = SFTConfig(output_dir=work, max_steps=steps, per_device_train_batch_size=batch_size, learning_rate=lr,
                         lr_scheduler_type="cosine", warmup_steps=0.05, weight_decay=0.0, max_grad_norm=1.0,
                         assistant_only_loss="messages" in dataset.column_names,
                         completion_only_loss="prompt" in dataset.column_names, max_length=None, logging_steps=max(1, steps // 10),
                         save_strategy="no", report_to=[], use_cpu=True, bf16=False, seed=seed,
                         dataloader_num_workers=0,
                         # TRL turns it on by default; the toy's activations are small, recomputing them took a
                         # third of a step, and the weights come out the same to the bit (measured: docs/toy.md)
                         gradient_checkpointing=False)
        return SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor).train().training_loss


# SFT steps per phase (`train_policy`); each phase sees every example once
PHASE_STEPS = {"reading": 200, "context": 300, "pointing": 200, "protocol": 300}
# The build's check of the one skill RL cannot teach: reading a board from an on-target crop deep in the
# conversation (`reading_check`). The pointing phase costs part of it and the protocol phase brings it back, by
# an amount that varied with the machine, the thread count and the seed (with two diagonal patterns: 1.00, 0.72,
# 0.53 and 0.37 on four builds, and stage 2 gained 2 points from the 0.37 one: `docs/toy.md`). Below
# `READING_GATE` the protocol phase is run again from the state before it, on frames of another seed, up to
# `PROTOCOL_ATTEMPTS` times; the best attempt is kept.
READING_GATE = 0.9
PROTOCOL_ATTEMPTS = 4


def reading_check(model, processor, seed: int, frames: int = 24, family=None) -> dict:
    """Teacher-forced, on held-out frames (a seed stream no phase trains on): after the system prompt, the frame,
    the question, an on-target zoom and the crop it returns, is the true reading the most likely of the three?
    About 40 conversations, a few seconds. Returns the accuracy and the confusion (`truth->read`: count)."""
    was_training = model.training
    model.eval()
    hits, confusion = 0, {}
    examples = [ex for ex in protocol_examples(processor, seed + 0x5EED, frames, reading_only=True, family=family)
                if len(ex["images"]) == 2 and "cannot" not in ex["completion"][0]["content"][0]["text"]]
    with torch.no_grad():
        for ex in examples:
            prompt = processor.apply_chat_template(ex["prompt"], tokenize=False, add_generation_prompt=True)
            truth = ex["completion"][0]["content"][0]["text"]
            colour = truth.split("<think>The ", 1)[1].split()[0]
            start = processor(text=[prompt], images=ex["images"], return_tensors="pt")["input_ids"].shape[1]
            scores = []
            for meaning in MEANINGS:
                think = f"<think>The {colour} board has {STRIPES[meaning]}: {CAPTIONS[meaning]}.</think>"
                batch = processor(text=[prompt + think], images=ex["images"], return_tensors="pt")
                ids = batch["input_ids"][0]
                logp = torch.log_softmax(model(**batch).logits[0, :-1].float(), -1)
                scores.append(float(logp[start - 1:].gather(1, ids[start:, None]).sum()))
            true = next(m for m in MEANINGS if STRIPES[m] in truth)
            read = MEANINGS[max(range(len(MEANINGS)), key=scores.__getitem__)]
            hits += read == true
            confusion[f"{true}->{read}"] = confusion.get(f"{true}->{read}", 0) + 1
    model.train(was_training)
    return {"accuracy": hits / max(1, len(examples)), "conversations": len(examples),
            "confusion": dict(sorted(confusion.items()))}


def train_policy(out: Path, seed: int, steps: dict | None = None, batch_size: int = 8, lr: float = 3e-3,
                 attempts: int = PROTOCOL_ATTEMPTS, family: str | None = None, zoom_share: float | None = None) -> dict:
    """The tiny policy (with `TOY_BASE_OVERRIDES`), fine-tuned with TRL's SFTTrainer on assistant tokens only, in
    four phases (`PHASE_STEPS`): reading a crop alone; reading it after the frame and the question; pointing at
    a named camera's board (text only); then the protocol's turns with `BOX_MIX` and `READ_MIX`. Every example
    is seen once: repeated ones were learnt by heart (a crop read alone: 0.80 on held-out crops after 4 epochs
    of 1,200 examples, 1.00 after one epoch of 4,800). The order matters: reading in context after pointing
    undid the pointing (`docs/toy.md`). The protocol phase is checked (`reading_check`) and run again when it
    lost the reading, up to `attempts` times in all. `zoom_share`: a reluctant base (`box_mix`)."""
    steps = {**PHASE_STEPS, **(steps or {})}
    fam = _family(family)
    start = build_tiny_policy(seed, family=family, **TOY_BASE_OVERRIDES)
    lo, hi, _ = toy_pixels(fam)
    processor = build_processor(start, min_pixels=lo, max_pixels=hi)
    model = AutoModelForImageTextToText.from_pretrained(start, dtype=torch.float32)
    phases = {  # name: (examples, batch size); two questions per frame, about two examples per question
        "reading": (lambda n: reading_examples(seed, 16 * n, fam), 16),
        "context": (lambda n: protocol_examples(processor, seed, batch_size * n // 2, reading_only=True, family=fam),
                    batch_size),
        "pointing": (lambda n: pointing_examples(processor, seed, 32 * n, fam), 32),
    }  # then the protocol phase (`_protocol_phase`)
    record = {}
    for name, (examples, batch) in phases.items():
        if not steps[name]:
            continue
        log.info(f"toy base policy, {name} phase: {steps[name]} steps of {batch}")
        dataset = Dataset.from_list(examples(steps[name]))
        record[name] = {"steps": steps[name], "examples": len(dataset),
                        "loss": _sft(model, processor, dataset, seed, steps[name], batch, lr)}
    if steps["protocol"]:
        record["protocol"] = _protocol_phase(model, processor, seed, steps["protocol"], batch_size, lr, attempts, fam,
                                             zoom_share)
    model.eval()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return record


def _protocol_phase(model, processor, seed: int, steps: int, batch_size: int, lr: float, attempts: int,
                    family=None, zoom_share: float | None = None) -> dict:
    """The protocol phase, checked by `reading_check` and run again from the state before it (frames of another
    seed each time) until the check passes `READING_GATE`; the best attempt is kept. Returns its record."""
    before = copy.deepcopy(model.state_dict())
    tries, best = [], None
    for attempt in range(max(1, attempts)):
        data_seed = seed + 7919 * attempt  # attempt 0 is the build as it always was
        if attempt:
            model.load_state_dict(before)
        log.info(f"toy base policy, protocol phase (attempt {attempt + 1} of {attempts}): {steps} steps of {batch_size}")
        dataset = Dataset.from_list(protocol_examples(processor, data_seed, batch_size * steps // 4 + 1, family=family,
                                                      zoom_share=zoom_share))
        loss = _sft(model, processor, dataset, data_seed, steps, batch_size, lr)
        check = reading_check(model, processor, seed, family=family)
        tries.append({"data_seed": data_seed, "examples": len(dataset), "loss": loss, "reading_check": check})
        log.info(f"toy base policy: reading in context {check['accuracy']:.2f} after the protocol phase "
                 f"(gate {READING_GATE}) {check['confusion']}")
        if best is None or check["accuracy"] > tries[best]["reading_check"]["accuracy"]:
            best, best_state = attempt, copy.deepcopy(model.state_dict())
        if check["accuracy"] >= READING_GATE:
            break
    if best != len(tries) - 1:
        model.load_state_dict(best_state)
    if tries[best]["reading_check"]["accuracy"] < READING_GATE:
        log.warning(f"toy base policy: no protocol attempt of {attempts} reads crops in context at {READING_GATE} "
                    f"or better (best {tries[best]['reading_check']['accuracy']:.2f}); RL will have less to work with")
    return {"steps": steps, "examples": tries[best]["examples"], "loss": tries[best]["loss"],
            "attempts": len(tries), "kept": best + 1, "reading_gate": READING_GATE, "tries": tries}


def toy_base_key(seed: int = 0, steps: dict | None = None, clip_steps: int = 300,
                 attempts: int = PROTOCOL_ATTEMPTS, family: str | None = None, zoom_share: float | None = None) -> str:
    """The content key of a toy base build: everything the bytes depend on (the default family's keys are those
    of builds before there were families, and the shipped mix's those of builds before `zoom_share`)."""
    fam = _family(family)
    extra = () if fam is default() else (fam.model_types[0], fam.system_prompt())
    if zoom_share is not None:
        extra += ("zoom_share", box_mix(zoom_share))
    return content_key("toy-base-10", seed, {**PHASE_STEPS, **(steps or {})}, clip_steps, BOX_MIX, READ_MIX,
                       TOY_CLIP_CONFIG, TINY_POLICY_CONFIG, TOY_BASE_OVERRIDES, fam.chat_template(),
                       READING_GATE, attempts, *extra)


def build_toy_base(out: str | Path | None = None, seed: int = 0, steps: dict | None = None,
                   clip_steps: int = 300, attempts: int = PROTOCOL_ATTEMPTS, family: str | None = None,
                   zoom_share: float | None = None) -> Path:
    """Build (or reuse) the toy CLIP and the toy base policy of a model family (a model_type; default: the
    default family's) into `out` (default: the cache). `steps` overrides `PHASE_STEPS` and `attempts` the protocol
    phase's tries (the tests build a small base that way). `zoom_share`: a reluctant base, which answers without
    the tool in most rollouts (`box_mix`)."""
    unknown = sorted(set(steps or {}) - set(PHASE_STEPS))
    if unknown:
        raise UserError(f"toy base: no phase {unknown}; the phases are {', '.join(PHASE_STEPS)}")
    key = toy_base_key(seed, steps, clip_steps, attempts, family, zoom_share)
    name = "toy-base" if family is None or _family(family) is _family() else f"toy-base-{family}"
    if zoom_share is not None:
        name += f"-zoom{zoom_share:g}"
    target = Path(out) if out else cache_root() / "models" / f"{name}-s{seed}-{key}"

    def build(tmp: Path):
        (tmp / "clip").mkdir()
        log.info("toy CLIP: contrastive training on toydrive crops and captions")
        clip = train_clip(tmp / "clip", seed, clip_steps)
        log.info(f"toy CLIP: held-out caption retrieval {clip['caption_retrieval_accuracy']:.2f} "
                 f"(chance {clip['chance']:.2f})")
        policy = train_policy(tmp / "policy", seed, steps, attempts=attempts, family=family, zoom_share=zoom_share)
        (tmp / "build.json").write_text(json.dumps({"clip": clip, "policy": policy, "box_mix": box_mix(zoom_share),
                                                    "read_mix": READ_MIX, "seed": seed,
                                                    "family": _family(family).name}, indent=2))

    return build_atomically(target, build, key)
