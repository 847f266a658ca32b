"""`ToolGRPOTrainer`: TRL's GRPOTrainer with the few fixes a policy with image-returning tools needs.

- checkpoints are written under a staging name and published whole, and resume restores the weights in
  whatever key layout they were saved (`omnidrive_r1.checkpoints`);
- on vLLM's CPU backend, weights are synced through vLLM's reload route and prompts go to vLLM with one
  placeholder per image (see the functions below).
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
from pathlib import Path

import torch
import torch.distributed as dist
import transformers
import trl
from accelerate.utils import gather
from transformers.trainer import _is_peft_model
from transformers.trainer_utils import rotate_checkpoints
from trl import GRPOTrainer

from omnidrive_r1.checkpoints import STAGING, load_model_weights, publish
from omnidrive_r1.policies import vision_token_ids
from omnidrive_r1.protocol import messages_text
from omnidrive_r1.rewards import RewardError
from omnidrive_r1.rollout_log import RolloutLog, thumbnail
from omnidrive_r1.tools import annotate, batch_metrics

log = logging.getLogger(__name__)

# What our patches reach into beyond the public API of the TRL and transformers versions pyproject.toml pins:
# (owner, attribute, the patch that needs it). A release that renames one of them must fail loudly, here.
PRIVATE_API = [
    ("transformers.Trainer", "_load_from_checkpoint", "resume restores the weights whatever their key layout"),
    ("transformers.Trainer", "_save_checkpoint", "checkpoints are staged under .partial/ and published whole"),
    ("transformers.Trainer", "_get_output_dir", "checkpoints are staged under .partial/ and published whole"),
    ("transformers.Trainer", "_run_epoch", "a run resumed at max_steps trains no further step"),
    ("trl.GRPOTrainer", "_calculate_rewards", "tool-use metrics, call context and the non-finite reward guard"),
    ("trl.GRPOTrainer", "_log_metric", "tool-use metrics and skipped reward groups reach the logs"),
    ("trl.GRPOTrainer", "log", "completions are logged as text (wandb refuses mixed image/text rows)"),
    ("trl.generation.vllm_generation.VLLMGeneration", "_place_features", "server mode: the image-token check"),
    ("trl.generation.vllm_generation.VLLMGeneration", "_iter_named_params", "vLLM weight sync on CPU"),
]
# set by GRPOTrainer.__init__, checked on the instance
PRIVATE_INSTANCE_API = [
    ("_is_vlm", "one image placeholder per image for vLLM"),
    ("_image_pad_token_id", "one image placeholder per image for vLLM"),
    ("_logs", "completions are logged as text"),
    ("environments", "tool-use metrics and call context"),
]


def check_private_api(instance=None) -> None:
    """Raise naming the patch when an attribute it relies on is missing from the installed TRL/transformers."""
    missing = []
    for owner, attr, patch in PRIVATE_API:
        module, _, name = owner.rpartition(".")
        if not hasattr(getattr(importlib.import_module(module), name), attr):
            missing.append(f"{owner}.{attr} (needed by: {patch})")
    if instance is not None:
        missing += [f"GRPOTrainer instance attribute {attr} (needed by: {patch})"
                    for attr, patch in PRIVATE_INSTANCE_API if not hasattr(instance, attr)]
    if missing:
        raise RuntimeError(f"trl {trl.__version__} / transformers {transformers.__version__} lack what "
                           f"omnidrive-r1's trainer patches use: {'; '.join(missing)}. Install the versions "
                           "pyproject.toml pins, or update omnidrive_r1/trainer.py")


def vllm_runs_on_cpu() -> bool:
    # optional: vLLM is installed on GPU machines and in .venv-vllm only
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def reload_vllm_weights(generation) -> None:
    """Push the trainer's weights into a colocated vLLM engine through vLLM's own reload route.

    TRL copies each tensor with `model.load_weights([(name, tensor)])`. On vLLM's CPU backend that breaks:
    after loading, every linear layer is handed to a packed GEMM kernel (oneDNN; sgl/zentorch on AMX or Zen
    CPUs), which keeps its own copy of the weight and replaces `layer.weight` with an empty Parameter
    without a `weight_loader` (vllm/model_executor/layers/utils.py, dispatch_cpu_unquantized_gemm). A
    second `load_weights` then fails ("'Parameter' object has no attribute 'weight_loader'"), and even a
    copy that succeeded would not reach the packed kernel. `reload_weights` restores each layer's original
    parameters, loads the new tensors and runs `process_weights_after_loading` again, so the kernels are
    re-packed from the new weights.
    """
    runner = generation.llm.llm_engine.model_executor.driver_worker.model_runner
    runner.reload_weights(weights_iterator=generation._iter_named_params(), is_checkpoint_format=True)
    generation.llm.reset_prefix_cache()
    # vision embeddings computed with the old weights must go too; resetting through the engine clears the
    # scheduler's record and the runner's cache together (the runner alone leaves "Encoder cache miss")
    generation.llm.llm_engine.reset_encoder_cache()


def collapse_image_pads(ids: list[int], pad: int) -> list[int]:
    """One image placeholder token per image, as in a rendered chat template before the processor expands it."""
    return [t for i, t in enumerate(ids) if not (t == pad and i and ids[i - 1] == pad)]


_expansion_logged = False  # this process has logged a passing check


def generate_with_unexpanded_images(real_generate, pad: int, prompts, images, num_generations, profiler=None):
    """Hand vLLM prompts whose images are single placeholders, and check it expands them as the trainer did.

    TRL sends the trainer's token ids, image tokens already expanded, with the images. vLLM 0.31 does not
    recognise the expansion and expands the first placeholders again (measured: a 52-token image became 103
    tokens; with a crop added, 117 + 15 instead of 52 + 15), so rollouts silently came from other prompts
    than the ones trained on (TRL issues #6294, #6401). With one placeholder per image vLLM's own processor
    does the expansion, which must then match the trainer's token for token.
    """
    if images is None or all(not im for im in images):
        return real_generate(prompts, images, num_generations, profiler)
    collapsed = [collapse_image_pads(list(p), pad) for p in prompts]
    prompt_ids, completion_ids, logprobs, token_ids = real_generate(collapsed, images, num_generations, profiler)
    for sent, seen in zip(prompts, prompt_ids):
        if list(seen) != list(sent):
            raise RuntimeError(
                f"vLLM expanded the images to {list(seen).count(pad)} image tokens where the trainer has "
                f"{list(sent).count(pad)}: the model directory vLLM loaded resizes images differently "
                "(image_min_pixels / image_max_pixels)")
    global _expansion_logged
    if not _expansion_logged:  # once per process, so that a multi-rank launch shows every rank's check
        _expansion_logged = True

        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        log.info(f"rank {rank}: vLLM expanded the images of {len(prompts)} prompts exactly as the trainer did "
                 f"({sum(list(p).count(pad) for p in prompts)} image tokens, checked token for token)",
                 extra={"all_ranks": True})
    return prompts, completion_ids, logprobs, token_ids


def image_token_runs(ids: list[int], pad: int) -> list[int]:
    """Lengths of the runs of image tokens in `ids`, in order."""
    runs, n = [], 0
    for t in [*ids, None]:
        if t == pad:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    return runs


def check_server_features(place_features, pad: int, features, prompt_ids):
    """Server mode: TRL moves the server's image features to the image tokens of the trainer's prompt but keeps
    their lengths; a server that resizes images otherwise would pair features and tokens that do not match.
    Compare each image's token count on both sides first, as the colocated path does."""
    if features is not None:
        served = [p["length"] for p in features["mm_placeholders"]["image"]]
        trained = image_token_runs(list(prompt_ids), pad)
        if served != trained:
            raise RuntimeError(
                f"the vLLM server expands the images to {served} image tokens where the trainer has {trained}: start "
                "the server on a model directory whose processor has the recipe's image_min_pixels / "
                "image_max_pixels (docs/multinode.md)")
    return place_features(features, prompt_ids)


class ToolGRPOTrainer(GRPOTrainer):
    """Args (besides GRPOTrainer's):
        on_bad_reward: "skip" leaves every group with a non-finite reward out of the update (its rewards are
            made equal, so its advantages are 0); "stop" raises. Either way the reward and sample are logged.
        log_image_side: images in the logged completions table are shrunk to fit this many pixels a side
            (0: as they are).
        rollouts_every: write the main process's rollouts of step 1 and every N-th step to
            output_dir/rollouts/ for `omnidrive-r1 view` (0: off; omnidrive_r1/rollout_log.py).
    """

    def __init__(self, *args, on_bad_reward: str = "skip", log_image_side: int = 384, rollouts_every: int = 0,
                 **kwargs):
        if on_bad_reward not in ("skip", "stop"):
            raise ValueError(f"on_bad_reward must be 'skip' or 'stop', got {on_bad_reward!r}")
        self.on_bad_reward = on_bad_reward
        self.log_image_side = log_image_side
        self._rollouts_every = rollouts_every
        check_private_api()
        super().__init__(*args, **kwargs)
        check_private_api(self)

        self.rollout_log = RolloutLog(self.args.output_dir, rollouts_every) if rollouts_every else None
        if self.use_vllm and self.vllm_mode == "colocate":
            generation = self.vllm_generation
            if vllm_runs_on_cpu():
                log.info("vLLM runs on CPU: weights are synced with vLLM's reload_weights")
                generation.sync_weights = functools.partial(reload_vllm_weights, generation)
            if self._is_vlm:
                generation.generate = functools.partial(generate_with_unexpanded_images, generation.generate,
                                                        self._image_pad_token_id)
        if self.use_vllm and self._is_vlm:
            # TRL's transformers path suppresses the image token; its vLLM path does not, and one sampled image
            # token makes the training forward fail ("Image features and image tokens do not match", seen with
            # the tiny policy). vLLM clamps a bias to -100, which leaves such a token a chance below 1e-40.
            generation = self.vllm_generation
            banned = {t: -100.0 for t in vision_token_ids(self.model.config)}
            generation.generation_kwargs = {**generation.generation_kwargs,
                                            "logit_bias": {**banned, **generation.generation_kwargs.get("logit_bias", {})}}
        if self.use_vllm and self.vllm_mode == "server" and self._is_vlm:
            generation = self.vllm_generation
            generation._place_features = functools.partial(check_server_features, generation._place_features,
                                                           self._image_pad_token_id)

    def log(self, logs, start_time=None):
        # TRL logs prompts and completions as message lists; with image blocks ({"type": "image"}) next to text
        # blocks, wandb's Table refuses the rows ("incompatible types"). Text is also easier to read there.
        for key in ("prompt", "completion"):
            buffer = self._logs[key]
            for i, item in enumerate(buffer):
                if not isinstance(item, str):
                    buffer[i] = messages_text(item)
        # TRL wraps every completion's images in wandb.Image, which PNG-encodes them at full resolution: 2.2 s
        # of a 5.5 s toy step (16 stitched 2400x900 frames and their crops; `make bench`, docs/performance.md).
        # The completions table gets thumbnails instead.
        backends = {"wandb", "trackio"} & set(self.args.report_to or [])
        if self.log_image_side and self.log_completions and backends:
            images = self._logs["images"]
            for i, image_list in enumerate(images):
                if image_list:
                    images[i] = [thumbnail(im, self.log_image_side) for im in image_list]
        super().log(logs, start_time)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        # transformers loads the file with a plain `load_state_dict`, which matches no key of a Qwen2.5-VL saved
        # by `save_pretrained` (it writes the checkpoint layout `model.layers.*`) and then trains on from the
        # initial weights, with a warning only. Adapters and FSDP keep their own loaders.

        model = model if model is not None else self.model
        if _is_peft_model(model) or self.is_fsdp_enabled:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        load_model_weights(model, resume_from_checkpoint)

    def _save_checkpoint(self, model, trial):
        """Write the checkpoint under `.partial/` and move it into place once every rank has written its part,
        so an interrupted save is never mistaken for a checkpoint."""
        run_dir = Path(self._get_output_dir(trial=trial))
        name = f"checkpoint-{self.state.global_step}"
        staging = run_dir / STAGING
        self._get_output_dir = lambda trial=None: str(staging)  # every write of the save goes to staging
        try:
            super()._save_checkpoint(model, trial)
        finally:
            del self._get_output_dir
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            publish(staging / name, run_dir / name)
            if not any(staging.iterdir()):
                os.rmdir(staging)
            rotate_checkpoints(output_dir=str(run_dir), save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)
        self.accelerator.wait_for_everyone()

    def _run_epoch(self, *args, **kwargs):
        # transformers runs one step before it first checks whether training should stop, so a run resumed at
        # max_steps trained one step more than asked
        if 0 < self.state.max_steps <= self.state.global_step:
            self.control.should_training_stop = True
            return None
        return super()._run_epoch(*args, **kwargs)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        # the tool machinery records the text written before each call before any reward reads the records
        if self.environments is not None:
            for environment, completion in zip(self.environments, completions):
                annotate(environment, completion)
            for name, value in batch_metrics(self.environments).items():
                self._log_metric(name, value)
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        step = self.state.global_step + 1
        if self.rollout_log and self.accelerator.is_main_process and self.rollout_log.due(step):
            # gathered rows come in process order: the main process's own are the first
            self.rollout_log.write(step, inputs, completions, self.environments, rewards[:len(completions)].cpu(),
                                   list(self.reward_func_names))
        return self._drop_bad_reward_groups(rewards, inputs, completions)

    def _drop_bad_reward_groups(self, rewards, inputs, completions):
        """Non-finite rewards never reach the weights: by `on_bad_reward`, their groups get advantage 0, or we stop."""
        bad_local = torch.zeros(len(completions), dtype=torch.bool, device=rewards.device)
        for func in self.reward_funcs:
            for i, value in getattr(func, "bad", []):
                bad_local[i] = True
                sample = messages_text(completions[i])[-300:]
                log.warning("reward %r returned %s for sample %d (idx %r): ...%s", func.__name__, value, i,
                            inputs[i].get("idx"), sample)
                if self.on_bad_reward == "stop":
                    raise RewardError(f"reward {func.__name__!r} returned {value} for sample {i} "
                                      f"(idx {inputs[i].get('idx')!r}); on_bad_reward is 'stop'")
        bad = gather(bad_local)
        groups = bad.view(-1, self.num_generations).any(dim=1)
        self._log_metric("rewards/skipped_groups", float(groups.sum()))
        if groups.any():
            shaped = rewards.view(-1, self.num_generations, rewards.shape[-1])
            shaped[groups] = 0.0
        return rewards
