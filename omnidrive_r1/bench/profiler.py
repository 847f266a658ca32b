"""Where a GRPO step's time goes, measured inside a live `ToolGRPOTrainer` (or a stock `trl.GRPOTrainer`).

`StepProfiler` is a trainer callback that also wraps the calls a step is made of:

- TRL's own profiling points (`trl.extras.profiling.profiling_context`): every reward function by name,
  `_get_per_token_logps_and_entropies` (the log-prob forward; with gradients it is the loss forward),
  `vLLM.generate` and `sync_weights` on the vLLM path;
- the policy's `generate` (one call per turn on the transformers path; generated tokens are counted);
- the environment's tool methods, the image processor, `accelerator.backward`, gradient clipping, the optimizer
  step (between the `on_pre_optimizer_step` / `on_optimizer_step` callbacks), `log` and `_save_checkpoint`.

A step runs from one `on_step_begin` to the next (the last one to `on_train_end`), so data loading, logging and
checkpointing belong to the step they follow. Phases are leaves: none of them contains another, and `other`
is what the step spent outside all of them (tokenization, chat templates, collation, TRL's bookkeeping).
On CUDA every phase boundary synchronizes the device, so a phase's time is its kernels' time.
"""

from __future__ import annotations

import contextlib
import cProfile
import functools
import resource
import time
from collections import defaultdict

import torch
import trl.extras.profiling as trl_profiling
import trl.trainer.grpo_trainer as grpo_module
from transformers import TrainerCallback

from omnidrive_r1.tools import parts, tool_methods

# the phases that are the model's own work; everything else in a step is overhead (ours, TRL's or the libraries')
MODEL_PHASES = ("generate", "vllm_generate", "logprob_forward", "loss_forward", "backward", "optimizer")


def _sync():
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class StepProfiler(TrainerCallback):
    def __init__(self, pad_token_id: int | None = None, cprofile: tuple[int, str] | None = None):
        """`cprofile=(step, path)`: also run Python's cProfile from that step on and write its stats to `path`
        (the figures are then slower; for finding what `other` is made of)."""
        self.pad_token_id = pad_token_id
        self._cprofile = cprofile
        self._cprofiler = None
        self.steps: list[dict] = []
        self._step = None
        self._undo: list = []
        self._opt_start = None

    # --- recording -------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def phase(self, name: str):
        _sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            _sync()
            if self._step is not None:
                self._step["phases"][name] += time.perf_counter() - t0

    def _wrap(self, owner, attr: str, phase, on_result=None):
        """Replace `owner.attr` with a version timed as `phase` (None: not timed) that hands its result to
        `on_result`."""
        original = getattr(owner, attr)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            with self.phase(phase) if phase else contextlib.nullcontext():
                result = original(*args, **kwargs)
            if on_result is not None and self._step is not None:
                on_result(result, *args, **kwargs)
            return result

        had_own = attr in vars(owner) if hasattr(owner, "__dict__") else False
        setattr(owner, attr, timed)
        self._undo.append((owner, attr, original if had_own else None))

    # --- attaching -------------------------------------------------------------------------------------------
    def attach(self, trainer) -> StepProfiler:
        """Instrument `trainer` (call before `trainer.train()`); `detach()` undoes every wrapper."""
        profiler = self
        phases = {"vLLM.generate": "vllm_generate", "sync_weights": "sync_weights"}
        reward_names = {getattr(f, "__name__", str(f)) for f in getattr(trainer, "reward_funcs", [])}

        def context(trainer_, name):
            if name == "_get_per_token_logps_and_entropies":
                return profiler.phase("loss_forward" if torch.is_grad_enabled() else "logprob_forward")
            if name in phases:
                return profiler.phase(phases[name])
            if name in reward_names:
                return profiler.phase(f"reward/{name}")
            return contextlib.nullcontext()  # enclosing points (_calculate_rewards, compute_loss, ...): not leaves

        for module in (trl_profiling, grpo_module):
            if hasattr(module, "profiling_context"):
                self._undo.append((module, "profiling_context", module.profiling_context))
                module.profiling_context = context

        if getattr(trainer, "use_vllm", False):  # timed by TRL's "vLLM.generate" point; counted here
            self._wrap(trainer.vllm_generation, "generate", None, on_result=self._count_vllm)
        else:
            self._wrap(trainer.model, "generate", "generate", on_result=self._count_generated)
        self._wrap(trainer.accelerator, "backward", "backward")
        self._wrap(trainer, "_clip_grad_norm", "optimizer")
        self._wrap(trainer, "log", "logging")
        self._wrap(trainer, "_save_checkpoint", "checkpointing")
        processor = getattr(trainer.processing_class, "image_processor", None)
        if processor is not None:
            self._wrap(type(processor), "preprocess", "image_processing")  # an instance attribute would be saved
        for factory in (getattr(trainer, "environment_factories", None) or {}).values():
            for part in parts(factory()):  # the tool classes; their methods are bound per batch, so patched here
                for name in tool_methods(type(part)):
                    self._wrap(type(part), name, "tools")
        # first in line: the last step ends at on_train_end before other callbacks' end-of-run work (the curves
        # plot) runs, which a step of training would not pay
        trainer.callback_handler.callbacks.insert(0, self)
        return self

    def detach(self) -> None:
        for owner, attr, original in reversed(self._undo):
            if original is None:
                delattr(owner, attr)
            else:
                setattr(owner, attr, original)
        self._undo.clear()

    def _count_generated(self, output, *args, **kwargs):
        """Tokens the policy produced in this `generate` call: new ids up to and including each row's first end."""
        ids = output if not hasattr(output, "sequences") else output.sequences
        prompt = kwargs.get("input_ids", args[0] if args else None)
        new = ids[:, prompt.shape[1]:] if prompt is not None else ids
        pad = self.pad_token_id
        self._turn("generate", int(new.shape[0]), int((new != pad).sum()) if pad is not None else new.numel())

    def _count_vllm(self, output, *args, **kwargs):
        completion_ids = output[1]
        self._turn("vllm_generate", len(completion_ids), sum(len(c) for c in completion_ids))

    def _turn(self, phase: str, rows: int, tokens: int):
        step = self._step
        step["generated_tokens"] += tokens
        seconds = step["phases"][phase] - sum(t["seconds"] for t in step["turns"])
        step["turns"].append({"seconds": seconds, "rows": rows, "tokens": tokens})

    # --- callbacks ---------------------------------------------------------------------------------------------
    def _close(self):
        if self._step is not None:
            self._step["seconds"] = time.perf_counter() - self._step.pop("_t0")
            self._step["phases"] = dict(self._step["phases"])
            self.steps.append(self._step)
            self._step = None

    def on_step_begin(self, args, state, control, **kwargs):
        _sync()
        self._close()
        if self._cprofile and state.global_step + 1 == self._cprofile[0]:
            self._cprofiler = cProfile.Profile()
            self._cprofiler.enable()
        self._step = {"step": state.global_step + 1, "_t0": time.perf_counter(), "phases": defaultdict(float),
                      "generated_tokens": 0, "turns": []}

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        _sync()
        self._opt_start = time.perf_counter()

    def on_optimizer_step(self, args, state, control, **kwargs):
        _sync()
        if self._step is not None and self._opt_start is not None:
            self._step["phases"]["optimizer"] += time.perf_counter() - self._opt_start

    def on_train_end(self, args, state, control, **kwargs):
        _sync()
        self._close()
        if self._cprofiler is not None:
            self._cprofiler.disable()
            self._cprofiler.dump_stats(self._cprofile[1])


def summarize(steps: list[dict], warmup: int) -> dict:
    """Mean per-step figures over the steps after `warmup`: phases, `other`, `overhead_fraction`, tokens."""
    timed = steps[warmup:]
    if not timed:
        raise ValueError(f"no step after the {warmup} warm-up steps: run more steps")
    n = len(timed)
    step = sum(s["seconds"] for s in timed) / n
    names = sorted({k for s in timed for k in s["phases"]})
    phases = {k: sum(s["phases"].get(k, 0.0) for s in timed) / n for k in names}
    phases["other"] = step - sum(phases.values())
    model = sum(phases.get(k, 0.0) for k in MODEL_PHASES)
    tokens = sum(s["generated_tokens"] for s in timed) / n
    turns = defaultdict(list)
    for s in timed:
        for i, t in enumerate(s["turns"]):
            turns[i].append(t)
    per_turn = [{"turn": i, "seconds": sum(t["seconds"] for t in ts) / len(ts),
                 "rows": sum(t["rows"] for t in ts) / len(ts), "tokens": sum(t["tokens"] for t in ts) / len(ts)}
                for i, ts in sorted(turns.items())]
    generation = phases.get("generate", 0.0) + phases.get("vllm_generate", 0.0)
    return {
        "steps_timed": n, "warmup_steps": warmup, "step_seconds": step, "phases": phases,
        "overhead_fraction": (step - model) / step,
        "generated_tokens_per_step": tokens,
        "rollout_tokens_per_s": tokens / generation if generation else None,
        "step_seconds_per_generated_token": step / tokens if tokens else None,
        "generation_per_turn": per_turn,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
