"""Real GRPO steps of a recipe, instrumented by `StepProfiler`, with a scripted policy.

The policy's weights are random, but its output is scripted: a logits processor forces, token by token, a
trajectory that zooms `calls` times (one call per turn) and then answers. The model still computes every
token (the forward passes are real); only the choice of token is made for it. So a step's work is fixed and
the same on every run, whatever the weights: the toy preset's architecture (the toy base's 3 text layers, the
toy CLIP's shape) costs what the trained toy models cost.

    python -m omnidrive_r1.bench.steps --calls 1 --group 4 --json out.json [--stock] [-- key=value ...]

With OMNIDRIVE_BENCH_CPROFILE=1 the timed steps also run under cProfile (stats in outputs/bench/runs/NAME.cprofile).

Each run is best started in a process of its own (`python -m omnidrive_r1.bench` does): peak memory is the
process's, and the profiler patches TRL for the life of the process.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import torch
from transformers import LogitsProcessor, LogitsProcessorList
from trl import GRPOTrainer

from omnidrive_r1.bench.profiler import MODEL_PHASES, StepProfiler, summarize
from omnidrive_r1.config import parse_recipe
from omnidrive_r1.rewards import build_rewards
from omnidrive_r1.toy.base import TOY_BASE_OVERRIDES, TOY_CLIP_CONFIG
from omnidrive_r1.toy.prepare import prepare
from omnidrive_r1.toy.tiny import build_tiny_clip, build_tiny_policy
from omnidrive_r1.train import build_stage, load_data, load_policy, load_processor

log = logging.getLogger(__name__)

TOY_RECIPE = "recipes/toy/stage1.yaml"
OUT = Path("outputs/bench")


class _Force(LogitsProcessor):
    """Every row's next token is its script's token at this position (the script's last token once it ends)."""

    def __init__(self, table, start: int):
        self.table, self.start = table, start

    def __call__(self, input_ids, scores):
        t = min(input_ids.shape[1] - self.start, self.table.shape[1] - 1)
        forced = torch.full_like(scores, float("-inf"))
        return forced.scatter_(1, self.table[:, t:t + 1].to(scores.device), 0.0)


class ScriptedPolicy:
    """Makes a policy's `generate` write `calls` zoom calls, one per turn, and then an answer.

    Which turn a row is on is read from its prompt: the number of images after the first is the number of
    crops it has been given."""

    def __init__(self, tokenizer, calls: int, box: int = 56):
        self.calls = calls
        self.vision_start = tokenizer.convert_tokens_to_ids("<|vision_start|>")
        eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
        texts = [f'<think>The detail is too small to read here, so I zoom in (look {k + 1}).</think>\n<tool_call>\n'
                 f'{{"name": "image_zoom_in_tool", "arguments": {{"bbox_2d": [{20 + 40 * k}, 30, {20 + 40 * k + box}, '
                 f'{30 + box}], "label": "the board"}}}}\n</tool_call><|im_end|>' for k in range(calls)]
        texts.append("<think>Now I can read it.</think>\n<answer>A</answer><|im_end|>")
        scripts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        if any(s[-1] != eos for s in scripts):
            raise ValueError("the tokenizer does not encode <|im_end|> as one token")
        width = max(map(len, scripts))
        self.table = torch.tensor([s + [eos] * (width - len(s)) for s in scripts])
        self.tokens_per_turn = [len(s) for s in scripts]

    def attach(self, model) -> None:
        original = model.generate

        def generate(*args, **kwargs):
            input_ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
            crops = (input_ids == self.vision_start).sum(1).cpu().clamp(min=1) - 1
            table = self.table[crops.clamp(max=self.calls)]
            processors = LogitsProcessorList([*(kwargs.pop("logits_processor", None) or []),
                                              _Force(table, input_ids.shape[1])])
            return original(*args, logits_processor=processors, **kwargs)

        model.generate = generate


def toy_models() -> tuple[Path, Path]:
    """The toy preset's architectures with random weights: the toy base's (the tiny policy with 3 text layers)
    and the toy CLIP's. Built in seconds and cached, so `make bench` never waits for the toy base."""
    return build_tiny_policy(0, **TOY_BASE_OVERRIDES), build_tiny_clip(0, config=TOY_CLIP_CONFIG)


def scaling_overrides(calls: int, group: int, prompts: int = 2) -> list[str]:
    """`prompts` prompts of `group` completions each, with room for `calls` zoom calls per trajectory."""
    return [f"num_generations={group}", f"per_device_train_batch_size={prompts * group}",
            f"max_tool_calling_iterations={max(calls, 1)}", f"tools.zoom_in.max_tool_calls={max(calls, 1)}",
            f"max_completion_length={192 + 128 * calls}"]


def run(name: str, calls: int, *, steps: int = 3, warmup: int = 2, stock: bool = False, overrides=(),
        recipe: str = TOY_RECIPE, model=None, scripted: bool = True) -> dict:
    """Train `warmup + steps` steps of `recipe` with the scripted policy and return the profile of the last
    `steps` (`summarize`), with the checkpoint cost spread over the recipe's own `save_steps`.

    `stock=True` trains TRL's own `GRPOTrainer` instead: no tool, the answer-accuracy reward only.
    `scripted=False` lets the random policy write what it samples (vLLM cannot be scripted this way)."""
    total = warmup + steps
    base = []
    if recipe == TOY_RECIPE:  # the toy architectures with random weights, not the trained toy base
        policy, clip = toy_models()
        base = [f"model_name_or_path={policy}", "lab.toy_base=null", f"rewards.clip_grounding.model_name=local-dir:{clip}"]
    run_dir = OUT / "runs" / name
    args = [*base, *overrides, f"output_dir={run_dir}", "overwrite_output_dir=true", f"max_steps={total}",
            f"save_steps={total}", "logging_steps=1"]
    recipe_save_steps = parse_recipe(recipe, [*base, *overrides])[1].save_steps
    source, args = prepare(recipe, args)  # toydrive generated when the recipe's lab names it
    profiler = None
    t0 = time.perf_counter()
    if stock:
        trainer, processor = _stock_trainer(source, args, model)
    else:
        stage = build_stage(source, args, model=model)
        trainer, processor = stage.trainer, stage.processor
    tokenizer = processor.tokenizer
    script = ScriptedPolicy(tokenizer, calls)
    if scripted:
        script.attach(trainer.model)
    cprofile = (warmup + 1, str(run_dir) + ".cprofile") if os.environ.get("OMNIDRIVE_BENCH_CPROFILE") else None
    profiler = StepProfiler(pad_token_id=tokenizer.pad_token_id, cprofile=cprofile).attach(trainer)
    setup = time.perf_counter() - t0
    try:
        trainer.train()
    finally:
        profiler.detach()
    summary = summarize(profiler.steps, warmup)
    seen = [h["num_tokens"] for h in trainer.state.log_history if "num_tokens" in h]  # cumulative, logged each step
    if len(seen) == total:
        summary["trained_tokens_per_step"] = (seen[-1] - (seen[warmup - 1] if warmup else 0)) / steps
    _spread_checkpoints(summary, profiler.steps[warmup:], recipe_save_steps)
    grpo = trainer.args
    summary.update({
        "name": name, "trainer": "trl.GRPOTrainer" if stock else "ToolGRPOTrainer", "calls": calls,
        "group": grpo.num_generations, "completions_per_step": grpo.per_device_train_batch_size,
        "max_completion_length": grpo.max_completion_length, "scripted_tokens_per_turn": script.tokens_per_turn if scripted else None,
        "setup_seconds": setup, "recipe": recipe, "overrides": list(overrides),
        "tool_calls_per_trajectory": _last_metric(trainer, "tools/calls_per_rollout"),
    })
    return summary


def _spread_checkpoints(summary: dict, steps: list[dict], every: int) -> None:
    """The run saves once, at its last step; a recipe saves every `every` steps. Replace the measured mean by
    one save's cost spread over `every` steps, and keep the cost of one save."""
    saves = [s["phases"]["checkpointing"] for s in steps if s["phases"].get("checkpointing")]
    if not saves:
        return
    one = sum(saves) / len(saves)
    phases = summary["phases"]
    measured = phases["checkpointing"]
    phases["checkpointing"] = one / max(every, 1)
    summary["step_seconds"] += phases["checkpointing"] - measured
    summary["checkpoint_seconds_per_save"] = one
    summary["checkpoint_every_steps"] = every
    model_time = sum(phases.get(k, 0.0) for k in MODEL_PHASES)
    summary["overhead_fraction"] = (summary["step_seconds"] - model_time) / summary["step_seconds"]
    tokens = summary["generated_tokens_per_step"]
    summary["step_seconds_per_generated_token"] = summary["step_seconds"] / tokens if tokens else None


def _last_metric(trainer, key: str):
    values = [h[key] for h in trainer.state.log_history if key in h]
    return values[-1] if values else None


def _stock_trainer(recipe: str, args: list[str], model=None):
    """TRL's `GRPOTrainer` as a user would start it on the same recipe: same policy, data, batch, lengths and
    sampling; no tool and no reward but answer accuracy."""
    recipe_args, grpo, model_args = parse_recipe(recipe, args)
    if model is None:
        model, processor = load_policy(recipe_args, model_args)
    else:
        processor = load_processor(recipe_args, model_args)
    reward_funcs, weights, _ = build_rewards([{"name": "answer_accuracy", "weight": 1.0}])
    grpo.reward_weights = weights
    dataset = load_data(recipe_args, grpo.output_dir)
    trainer = GRPOTrainer(model=model, reward_funcs=reward_funcs, args=grpo, train_dataset=dataset,
                          processing_class=processor)
    return trainer, processor


def main(argv=None):
    global OUT
    p = argparse.ArgumentParser(prog="python -m omnidrive_r1.bench.steps",
                                description="Profile real GRPO steps of a recipe with a scripted policy")
    p.add_argument("--name", default="run")
    p.add_argument("--calls", type=int, nargs="+", default=[1],
                   help="zoom calls per trajectory (default 1); several: one run each, in this process, in order "
                        "(the JSON is then a list; peak memory is the process's so far)")
    p.add_argument("--group", type=int, help="num_generations; with it, 2 prompts per step and room for the calls")
    p.add_argument("--steps", type=int, default=3, help="timed steps (default 3)")
    p.add_argument("--warmup", type=int, default=2, help="steps before timing (default 2)")
    p.add_argument("--stock", action="store_true", help="TRL's own GRPOTrainer: no tool, accuracy reward only")
    p.add_argument("--unscripted", action="store_true", help="let the random policy sample (for vLLM)")
    p.add_argument("--recipe", default=TOY_RECIPE)
    p.add_argument("--json", type=Path, help="write the profile here")
    p.add_argument("--out", type=Path, default=OUT, help=f"the runs' folders go under OUT/runs (default {OUT})")
    p.add_argument("overrides", nargs="*", help="recipe key=value overrides")
    args = p.parse_args(argv)
    OUT = args.out
    if min(args.calls) < 0 or args.steps < 1 or args.warmup < 0:
        p.error("--calls must be >= 0, --steps >= 1, --warmup >= 0")
    results = []
    for calls in args.calls:
        overrides = [*(scaling_overrides(calls, args.group) if args.group else []), *args.overrides]
        name = args.name if len(args.calls) == 1 else f"{args.name}-c{calls}"
        results.append(run(name, calls, steps=args.steps, warmup=args.warmup, stock=args.stock,
                           overrides=overrides, recipe=args.recipe, scripted=not args.unscripted))
    result = results[0] if len(results) == 1 else results
    text = json.dumps(result, indent=1, default=float)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
