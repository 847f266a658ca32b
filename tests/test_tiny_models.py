import hashlib

import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

from omnidrive_r1.policies import default
from omnidrive_r1.toy import tiny_families
from omnidrive_r1.toy.tiny import TINY_MAX_PIXELS, TINY_MIN_PIXELS


def _two_image_conversation():
    return [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is the light?"}]},
        {"role": "assistant", "content": "<think>The light is small, zoom in.</think>"},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Here is the crop."}]},
    ]


def test_policy_has_real_architecture_and_head_dim_64(tiny_policy_dir):
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_policy_dir)
    text = model.config.text_config
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert text.hidden_size // text.num_attention_heads == 64
    assert sum(text.rope_parameters["mrope_section"]) == 32


def test_forward_and_generate_with_two_images_of_different_sizes(tiny_policy_dir):
    processor = AutoProcessor.from_pretrained(tiny_policy_dir)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_policy_dir).eval()
    big, small = Image.new("RGB", (2400, 900), (200, 30, 30)), Image.new("RGB", (112, 84), (30, 200, 30))
    text = processor.apply_chat_template(_two_image_conversation(), add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[big, small], return_tensors="pt")

    grid = inputs["image_grid_thw"]
    assert grid.shape == (2, 3) and not torch.equal(grid[0], grid[1])
    n_image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert n_image_tokens == int(grid.prod(-1).sum()) // 4  # 2x2 patch merge

    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], model.config.text_config.vocab_size)
    assert torch.isfinite(logits).all()
    out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]


def test_processor_round_trips_through_save_and_load(tiny_policy_dir, tmp_path):
    processor = AutoProcessor.from_pretrained(tiny_policy_dir)
    processor.save_pretrained(tmp_path)
    again = AutoProcessor.from_pretrained(tmp_path)
    sample = "<|im_start|>user\n<tool_call>zoom on the traffic light</tool_call><|im_end|>"
    assert again.tokenizer(sample)["input_ids"] == processor.tokenizer(sample)["input_ids"]
    assert again.chat_template == processor.chat_template
    assert again.image_processor.size["shortest_edge"] == TINY_MIN_PIXELS
    assert again.image_processor.size["longest_edge"] == TINY_MAX_PIXELS
    img = Image.new("RGB", (640, 360))
    assert torch.equal(again.image_processor(img, return_tensors="pt")["image_grid_thw"],
                       processor.image_processor(img, return_tensors="pt")["image_grid_thw"])


def test_tokenizer_carries_qwen_special_tokens_as_single_ids(tiny_processor_dir):
    tok = AutoProcessor.from_pretrained(tiny_processor_dir).tokenizer
    special, added = tiny_families.tokens(default())
    for token in special + added:
        ids = tok(token, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and tok.convert_ids_to_tokens(ids[0]) == token
    assert tok.eos_token == "<|im_end|>"
    # the tool-call markers survive decoding (Qwen keeps them as plain added tokens)
    assert "<tool_call>" in tok.decode(tok("<tool_call>x</tool_call>")["input_ids"], skip_special_tokens=True)


def _digest(folder):
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(folder.iterdir()) if f.suffix in {".safetensors", ".json"}}


def test_tiny_policy_is_deterministic_per_seed(tmp_path):
    from omnidrive_r1.toy.tiny import build_tiny_policy

    first = build_tiny_policy(seed=0, out_dir=tmp_path / "a")
    again = build_tiny_policy(seed=0, out_dir=tmp_path / "b")
    other = build_tiny_policy(seed=1, out_dir=tmp_path / "c")
    assert _digest(first) == _digest(again)
    assert _digest(other)["model.safetensors"] != _digest(first)["model.safetensors"]


def test_a_build_never_writes_into_a_folder_of_the_users(tmp_path):
    from omnidrive_r1.cli import main

    mine = tmp_path / "models" / "policy"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("keep me")
    assert main(["models", "tiny", "--out", str(tmp_path / "models")]) == 2
    assert (mine / "notes.txt").read_text() == "keep me" and sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_grid_boxes_and_the_prompt_take_few_tokens(tiny_processor_dir):
    from omnidrive_r1.data.loaders import conversation
    from omnidrive_r1.policies import build_processor
    from omnidrive_r1.rollout import with_image
    from omnidrive_r1.tools.zoom_in import ZoomInTool

    processor = build_processor(tiny_processor_dir)
    pieces = processor.tokenizer.tokenize('"bbox_2d": [336, 28, 364, 56]')
    assert len(pieces) <= 12  # not digit by digit
    assert processor.tokenizer.convert_tokens_to_string(pieces) == '"bbox_2d": [336, 28, 364, 56]'
    text = processor.apply_chat_template(with_image(conversation("What colour is the light?")),
                                         tools=[ZoomInTool.image_zoom_in_tool], add_generation_prompt=True,
                                         tokenize=False)
    assert len(processor.tokenizer(text)["input_ids"]) < 500  # system prompt and tool schema: not byte by byte


def test_the_toy_bases_boxes_and_camera_names_are_single_tokens(tiny_processor_dir):
    """The tiny policy makes one choice per box it is taught, and can see which camera a question names."""
    from omnidrive_r1.toy.toydrive import SLOTS, slot_boxes

    tok = AutoProcessor.from_pretrained(tiny_processor_dir).tokenizer
    boxes = slot_boxes()
    assert set(boxes) == set(SLOTS)
    for camera, kinds in boxes.items():
        assert tok.tokenize(camera) == [camera]
        for box in kinds.values():
            assert len(tok.tokenize(str(box))) == 1, box
        on, large = kinds["on_target"], kinds["too_large"]
        assert large[0] <= on[0] and on[2] <= large[2] and large[2] - large[0] == 4 * (on[2] - on[0])
    question = tok.tokenize("Which way does the red board in CAM_BACK_LEFT point: left, right, or is the road closed?")
    assert "CAM_BACK_LEFT" in question
    other = tok.tokenize("[84, 28, 364, 112]")  # any other box spells out as coordinate tokens
    assert len(other) > 1 and tok.convert_tokens_to_string(other) == "[84, 28, 364, 112]"


def test_tiny_clip_loads_like_an_open_clip_checkpoint(tiny_clip_dir):
    import open_clip

    from omnidrive_r1.toy.tiny import TINY_CLIP_CONFIG

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tiny_clip_dir}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{tiny_clip_dir}")
    with torch.no_grad():
        img = model.encode_image(preprocess(Image.new("RGB", (300, 200), (0, 255, 0))).unsqueeze(0))
        txt = model.encode_text(tokenizer(["traffic light", "a cone"]))
    assert img.shape == (1, TINY_CLIP_CONFIG["embed_dim"]) and txt.shape == (2, TINY_CLIP_CONFIG["embed_dim"])


@pytest.mark.parametrize("section", [[8, 12, 8], [16, 16, 16]])
def test_bad_mrope_section_is_refused(tiny_processor_dir, section):
    from omnidrive_r1.toy.tiny import tiny_policy_config

    tok = AutoProcessor.from_pretrained(tiny_processor_dir).tokenizer
    with pytest.raises(ValueError, match="mrope_section"):
        tiny_policy_config(tok, mrope_section=section)


def test_a_build_made_by_another_recipe_is_rebuilt_not_reused(tmp_path):
    from omnidrive_r1.disk_cache import build_atomically

    calls = []

    def build(tmp):
        calls.append(tmp)
        (tmp / "weights").write_text(f"build {len(calls)}")

    target = tmp_path / "base"
    build_atomically(target, build, key="recipe-a")
    build_atomically(target, build, key="recipe-a")
    assert len(calls) == 1  # same recipe: reused
    build_atomically(target, build, key="recipe-b")
    assert len(calls) == 2 and (target / "weights").read_text() == "build 2"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("a user's file")
    with pytest.raises(FileExistsError):
        build_atomically(tmp_path / "mine", build, key="recipe-a")  # never a folder we did not write
    assert (tmp_path / "mine" / "notes.txt").exists()


def _toy_base_folder(path, config: str, marker: str | None):
    (path / "policy").mkdir(parents=True)
    (path / "clip").mkdir()
    (path / "policy" / "config.json").write_text(config)
    (path / "clip" / "open_clip_config.json").write_text("{}")
    if marker is not None:
        (path / ".complete").write_text(marker + "\n")
    return path


def test_a_toy_base_folder_from_an_older_recipe_is_replaced_and_a_users_own_is_kept(tmp_path, monkeypatch):
    from omnidrive_r1.toy import base, models

    built = _toy_base_folder(tmp_path / "cache-build", "{}", base.toy_base_key(0))
    calls = []
    monkeypatch.setattr(models, "build_toy_base", lambda seed=0, **_: calls.append(seed) or built)
    monkeypatch.setattr(models, "_save_rollout_settings", lambda policy, family=None: None)

    old = _toy_base_folder(tmp_path / "old", '{"old": true}', "another-recipe")
    models.ensure_toy_models(old)
    assert calls == [0] and (old / "policy" / "config.json").read_text() == "{}"  # the current build, copied

    mine = _toy_base_folder(tmp_path / "mine", '{"mine": true}', None)  # filled by the user: used as it is
    models.ensure_toy_models(mine)
    assert calls == [0] and (mine / "policy" / "config.json").read_text() == '{"mine": true}'
