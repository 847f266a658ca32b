from PIL import Image
from trl.chat_template_utils import is_chat_template_prefix_preserving, parse_response, supports_tool_calling

from omnidrive_r1.data.loaders import conversation
from omnidrive_r1.policies import build_processor
from omnidrive_r1.tools.zoom_in import ZoomInTool


def _processor(tiny_processor_dir):
    return build_processor(tiny_processor_dir)


def test_trl_accepts_the_template_for_tool_training(tiny_processor_dir):
    processor = _processor(tiny_processor_dir)
    assert supports_tool_calling(processor)
    assert is_chat_template_prefix_preserving(processor)


def test_trl_parses_tool_calls_and_keeps_the_reasoning_text(tiny_processor_dir):
    processor = _processor(tiny_processor_dir)
    tok = processor.tokenizer
    prefix = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], add_generation_prompt=True, tokenize=True,
        return_dict=False)[0]
    call = ('<think>Too small.</think>\n<tool_call>\n{"name": "image_zoom_in_tool", "arguments": '
            '{"bbox_2d": [10, 20, 60, 80], "label": "sign", "image_index": 0}}\n</tool_call><|im_end|>')
    parsed = parse_response(tok, tok(call)["input_ids"], prefix=prefix, tools=[ZoomInTool.image_zoom_in_tool])
    assert parsed["content"].strip() == "<think>Too small.</think>"
    fn = parsed["tool_calls"][0]["function"]
    assert fn["name"] == "image_zoom_in_tool"
    assert fn["arguments"] == {"bbox_2d": [10, 20, 60, 80], "label": "sign", "image_index": 0}

    answer = "<think>Red.</think><answer>B) Red</answer><|im_end|>"
    parsed = parse_response(tok, tok(answer)["input_ids"], prefix=prefix)
    assert parsed["content"] == "<think>Red.</think><answer>B) Red</answer>" and not parsed.get("tool_calls")

    broken = '<tool_call>\n{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [1, 2</tool_call><|im_end|>'
    parsed = parse_response(tok, tok(broken)["input_ids"], prefix=prefix)
    assert not parsed.get("tool_calls")  # malformed JSON falls back to text: no crash, no call


def test_rendering_declares_the_tool_and_returns_crops_as_images(tiny_processor_dir):
    processor = _processor(tiny_processor_dir)
    messages = conversation("Which lamp is lit?")
    messages[-1]["content"] = [{"type": "image"}, {"type": "text", "text": messages[-1]["content"]}]
    messages += [
        {"role": "assistant", "content": "<think>zoom</think>", "tool_calls": [
            {"type": "function", "function": {"name": "image_zoom_in_tool",
                                              "arguments": {"bbox_2d": [1, 2, 3, 4], "label": "light"}}}]},
        {"role": "tool", "name": "image_zoom_in_tool",
         "content": [{"type": "image"}, {"type": "text", "text": "Zoomed view."}]},
    ]
    text = processor.apply_chat_template(messages, tools=[ZoomInTool.image_zoom_in_tool],
                                         add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|im_start|>system\nYou are a careful driving assistant")
    assert '"name": "image_zoom_in_tool"' in text and '"bbox_2d"' in text and "<tools>" in text
    assert text.count("<|vision_start|><|image_pad|><|vision_end|>") == 2
    assert ('<tool_call>\n{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [1, 2, 3, 4], "label": "light"}}'
            '\n</tool_call><|im_end|>') in text
    assert "<|im_start|>user\n<tool_response>\n<|vision_start|>" in text
    assert text.endswith("</tool_response><|im_end|>\n<|im_start|>assistant\n")
    inputs = processor(text=[text], images=[Image.new("RGB", (2400, 900)), Image.new("RGB", (120, 130))],
                       return_tensors="pt")
    assert inputs["image_grid_thw"].shape[0] == 2


def test_without_tools_it_renders_like_qwen2_5_vl(tiny_processor_dir):
    processor = _processor(tiny_processor_dir)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                    "<|vision_start|><|image_pad|><|vision_end|>Describe.<|im_end|>\n<|im_start|>assistant\n")
