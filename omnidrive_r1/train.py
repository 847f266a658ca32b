"""`omnidrive-r1 train RECIPE.yaml [key=value ...]`: one Clip-GRPO stage.

recipe -> checks (everything that can be checked before a model loads) -> data (stitched on the main process
first) -> policy + processor (our chat template) -> tool environment -> reward plug-ins -> ToolGRPOTrainer -> outputs/<preset>/<stage>/{final/, metrics.jsonl, curves.png, checkpoint-*/, wandb/}.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import PartialState
from huggingface_hub import snapshot_download
from transformers import AutoModelForImageTextToText
from transformers.integrations import deepspeed as hf_deepspeed
from trl import get_peft_config

from omnidrive_r1.checkpoints import discard_staging, prepare_output_dir, resolve_resume
from omnidrive_r1.config import DataSection, RecipeArguments, RecipeError, parse_recipe, validate
from omnidrive_r1.data.loaders import load_deepeyes, load_drivelmm
from omnidrive_r1.disk_cache import isolate_vllm_compile_cache
from omnidrive_r1.policies import build_processor, family_of, tool_specs, without_geometry
from omnidrive_r1.prompts import SYSTEM_PROMPT
from omnidrive_r1.rewards import build_rewards
from omnidrive_r1.rollout import RolloutSettings
from omnidrive_r1.tools import environment_factory
from omnidrive_r1.trainer import ToolGRPOTrainer
from omnidrive_r1.training_curves import CurvesCallback

log = logging.getLogger(__name__)


def _text_config(source: str):
    """The policy's text config from its config.json, without loading weights (None for a hub id not cached)."""
    path = Path(source) / "config.json"
    if not path.is_file():
        return None
    config = json.loads(path.read_text())
    return config.get("text_config", config)


def check_recipe(recipe: RecipeArguments, grpo, model_args) -> None:
    """Refuse configurations that cannot work, naming the field, before any model or data is loaded."""
    validate(recipe, grpo, model_args)
    if grpo.use_vllm and importlib.util.find_spec("vllm") is None:
        raise RecipeError("use_vllm: true, but vllm is not installed: on a GPU machine pip install "
                          "'omnidrive-r1[vllm]', or set use_vllm=false")
    if grpo.use_vllm and grpo.vllm_mode == "server":
        if not torch.cuda.is_available():
            raise RecipeError("vllm_mode: server moves the trained weights to the vLLM server over NCCL, which needs a "
                              "CUDA GPU on the trainer, and none is visible. On this machine use vllm_mode=colocate; "
                              "on GPUs see docs/multinode.md for the server's command")
    if recipe.init_from and not (Path(recipe.init_from) / "config.json").exists():
        raise RecipeError(f"init_from: {recipe.init_from} holds no model. Stage 2 starts from stage 1's final model: "
                          "run `make stage1` first, or set init_from=PATH")
    source = recipe.init_from or model_args.model_name_or_path
    if not Path(source).exists() and not _looks_like_hub_id(source):
        raise RecipeError(f"model_name_or_path: {source} is neither a model directory nor a hub id "
                          "(a hub id is namespace/name)")
    text = _text_config(source)
    positions = (text or {}).get("max_position_embeddings")
    if positions and grpo.max_completion_length >= positions:
        raise RecipeError(f"max_completion_length: {grpo.max_completion_length} does not fit the model's "
                          f"{positions} positions (prompt and image tokens come on top)")
    family = family_of(source)  # an unsupported model_type is named here, before anything loads
    # a misspelt tool or option is named before the budget
    environment_factory(tool_specs(recipe.tools, family, image_pixels(recipe, family)))
    check_zoom_budget(recipe, grpo, family)
    path = recipe.data.path
    if not Path(path).exists():
        raise RecipeError(f"data.path: {path} not found (set data.path to your {recipe.data.kind} file)")
    stitched = recipe.data.stitched_dir
    if stitched is not None and not Path(stitched).is_dir():
        raise RecipeError(f"data.stitched_dir: {stitched} is not a folder (it holds the pre-stitched frames, "
                          "<idx without its question number>.png)")


def _looks_like_hub_id(source: str) -> bool:
    """namespace/name: one slash, not a relative or absolute path."""
    return source.count("/") == 1 and not source.startswith((".", "/", "~"))


TURN_TEXT_TOKENS = 104  # a generous bound on the text of a zoom: the call, the reply's words and the answer turn


def check_zoom_budget(recipe: RecipeArguments, grpo, family) -> None:
    """A completion budget that cannot hold one zoom reply makes every zoom fail silently: TRL takes the reply
    back, the rollout ends without an answer, and the policy learns not to zoom (measured: docs/toy.md)."""
    _, max_pixels = image_pixels(recipe, family)
    for spec in recipe.tools:
        if spec.name != "zoom_in":
            continue
        max_crop_pixels = spec.options.get("max_crop_pixels")
        crop_pixels = min(max_crop_pixels or max_pixels, max_pixels)
        crop_tokens = family.image_tokens(crop_pixels)
        need = crop_tokens + TURN_TEXT_TOKENS
        if grpo.max_completion_length < need:
            raise RecipeError(
                f"max_completion_length: {grpo.max_completion_length} cannot hold one zoom: a crop may take "
                f"{crop_tokens} image tokens (image_max_pixels {max_pixels}"
                f"{', max_crop_pixels ' + str(max_crop_pixels) if max_crop_pixels else ''}) "
                f"plus about {TURN_TEXT_TOKENS} tokens of text, and TRL takes back a tool reply that does not fit, "
                f"so the policy learns not to zoom. Raise max_completion_length to at least {need}, or bound the "
                "crop with max_crop_pixels on the zoom tool (docs/troubleshooting.md)")


def image_pixels(recipe: RecipeArguments, family) -> tuple[int, int]:
    """The recipe's image resolution, the family's default where it sets none."""
    return family.image_pixels(recipe.image_min_pixels, recipe.image_max_pixels)


def load_data(recipe: RecipeArguments, output_dir: str | Path, system_prompt: str | None = None):
    """The recipe's training rows, their prompts opened by `system_prompt` (default: the pixel-box one; training
    passes its policy family's)."""
    system_prompt = system_prompt or SYSTEM_PROMPT
    data = DataSection.of(recipe.data)
    path = Path(data.path)
    if data.kind == "drivelmm":
        ds, report = load_drivelmm(path, data.images_root, skip_bad=data.skip_bad, limit=data.limit,
                                   stitched_dir=data.stitched_dir, system_prompt=system_prompt)
    else:
        ds, report = load_deepeyes(path, sources=data.sources, skip_bad=data.skip_bad, limit=data.limit,
                                   system_prompt=system_prompt)
    log.info(report.summary())
    questions = data.questions
    if questions != "all":  # the multiple-choice rows only, or the open ones only (is_mcq: docs/data.md)
        ds = ds.filter(lambda is_mcq: is_mcq == (questions == "mcq"), input_columns="is_mcq")
        if not len(ds):
            raise RecipeError(f"data.questions: {questions}: {path} holds no such row")
        log.info(f"data.questions: {questions}: {len(ds)} rows kept")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "data_report.json").write_text(json.dumps({"path": report.path, "rows_read": report.rows_read,
                                                      "rows_kept": report.rows_kept, "skipped": dict(report.skipped),
                                                      "questions": questions, "rows_trained_on": len(ds)},
                                                     indent=1))
    return ds


def vllm_model_dir(source: str | Path, processor, out: str | Path) -> Path:
    """A model directory for vLLM whose processor resizes images exactly as the trainer's does.

    vLLM reads the image resolution from the directory it is given, while TRL tokenizes prompts with the
    trainer's processor: if the recipe's min/max pixels differ from the checkpoint's, the two disagree on
    the number of image tokens (TRL issues #6294, #6401). The weights are linked, not copied; the
    processor files are written with the recipe's values.
    """
    source, out = Path(source), Path(out)
    if not source.is_dir():  # a hub id: vLLM and transformers share the hub cache
        source = Path(snapshot_download(str(source)))
    out.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():  # weights and model config only: save_pretrained must not write through links
        link = out / item.name
        weights = item.suffix in (".safetensors", ".bin") or item.name.endswith(".index.json")
        if (weights or item.name in ("config.json", "generation_config.json")) and not link.exists():
            link.symlink_to(item.resolve())
    processor.save_pretrained(out)
    return out


def load_processor(recipe: RecipeArguments, model_args):
    """The policy's processor with its family's chat template, the recipe's image resolution and image backend.

    TRL runs the image processor on every prompt's frame again at each turn, and for the loss (16 frames, three
    times a toy step): the torchvision backend does it in half the time of the PIL one, with the same image
    tokens, and the cache (`omnidrive_r1.image_processor_cache`) processes each distinct image once (`make bench`,
    docs/performance.md)."""
    source = recipe.init_from or model_args.model_name_or_path
    min_pixels, max_pixels = image_pixels(recipe, family_of(source))
    return build_processor(source, min_pixels=min_pixels, max_pixels=max_pixels,
                           backend=recipe.image_processor_backend, cache_mb=recipe.image_cache_mb,
                           revision=model_args.model_revision)


def load_policy(recipe: RecipeArguments, model_args, vllm_dir: str | Path | None = None, main_process_first=None):
    """(model, processor): the policy with our chat template and the recipe's image resolution."""
    source = recipe.init_from or model_args.model_name_or_path
    log.info(f"policy: starting from {source}")
    processor = load_processor(recipe, model_args)
    dtype = model_args.dtype if model_args.dtype in ("auto", None) else getattr(torch, model_args.dtype)
    model = AutoModelForImageTextToText.from_pretrained(
        source, dtype=dtype, revision=model_args.model_revision,
        attn_implementation=model_args.attn_implementation)
    if vllm_dir is not None:  # TRL starts vLLM from model.name_or_path
        with main_process_first() if main_process_first else contextlib.nullcontext():
            model.name_or_path = model.config._name_or_path = str(vllm_model_dir(source, processor, vllm_dir))
    return model, processor


def lora_config(model_args, family):
    """TRL's LoRA config from the recipe, with default target modules: PEFT knows none for these models and stops
    ("Please specify `target_modules`"), so `use_peft=true` alone adapts the language model's attention and MLP
    projections (the family's `lora_targets`, what `--plan` counts). The vision tower's blocks reuse the MLP
    names; the pattern leaves them frozen. Set `lora_target_modules` to choose others."""
    if model_args.use_peft and not model_args.lora_target_modules:
        model_args = dataclasses.replace(
            model_args, lora_target_modules=rf"^(?!.*\bvisual\b).*\.({'|'.join(family.lora_targets)})$")
    return get_peft_config(model_args)


@contextlib.contextmanager
def zero3_init_off():
    """Build models in this process alone: under ZeRO-3, transformers partitions every model it creates across
    all ranks as it is built, which waits forever for ranks that are not loading it too (seen: the main
    process merging the LoRA adapter hung at the end of `make rehearse`'s zero3-lora-vllm)."""
    ref = getattr(hf_deepspeed, "_hf_deepspeed_config_weak_ref", None)  # transformers keeps the live config there
    active = ref() if ref is not None else None
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        if active is not None:
            hf_deepspeed.set_hf_deepspeed_config(active)


def merge_adapter(source: str | Path, adapter: Path, out: Path, model_args) -> None:
    """Write `out`, a plain model directory: `source`'s weights with the LoRA adapter in `adapter` merged in.

    Merging the training model in place is not enough: under ZeRO-3 its parameters are partitioned, and the
    main process alone saved empty embedding and output tensors (`make rehearse`, zero3-lora-vllm).
    The adapter saved by the trainer is whole; the starting weights are read again from disk."""
    from peft import PeftModel  # only a LoRA run gets here; peft takes seconds to import

    dtype = model_args.dtype if model_args.dtype in ("auto", None) else getattr(torch, model_args.dtype)
    base = AutoModelForImageTextToText.from_pretrained(source, dtype=dtype, revision=model_args.model_revision)
    PeftModel.from_pretrained(base, adapter).merge_and_unload().save_pretrained(out)


def setup_wandb(recipe: RecipeArguments, grpo, is_main_process: bool) -> None:
    """Start this stage's run (offline without an API key) in outputs/<preset>/<stage>/wandb; transformers'
    WandbCallback then logs into it."""
    if "wandb" not in (grpo.report_to or []) or not is_main_process:
        return
    import wandb  # only when report_to names it: wandb takes seconds to import

    offline = not os.environ.get("WANDB_API_KEY") and os.environ.get("WANDB_MODE") in (None, "offline")
    if offline:
        os.environ["WANDB_MODE"] = "offline"
        log.info(f"wandb: no WANDB_API_KEY, logging offline under {grpo.output_dir}/wandb; upload later with "
                 f"`wandb sync {grpo.output_dir}/wandb/offline-run-*`")
    Path(grpo.output_dir).mkdir(parents=True, exist_ok=True)
    wandb.init(project=os.environ.get("WANDB_PROJECT", recipe.wandb_project), name=grpo.run_name,
               group=recipe.preset, job_type=recipe.stage, dir=grpo.output_dir,
               mode="offline" if offline else None, reinit="finish_previous")


def describe_distributed(accelerator) -> str:
    state = accelerator.state
    kind = str(state.distributed_type).split(".")[-1]
    plugin = getattr(state, "deepspeed_plugin", None)
    if plugin is not None:
        kind += f" ZeRO-{plugin.zero_stage}"
    return f"{kind}, {state.num_processes} process{'es' if state.num_processes > 1 else ''} on {state.device}"


@dataclass
class Stage:
    """One stage ready to train: what `train` runs, and what `omnidrive_r1.bench` instruments."""

    recipe: RecipeArguments
    grpo: object
    model_args: object
    trainer: object
    processor: object
    tool_specs: list
    resume: str | None


def build_stage(recipe_path: str | Path | dict, overrides: list[str] = (), model=None) -> Stage:
    """Check the recipe, prepare the output folder, data, policy, tools and rewards, and build the trainer.

    `model` replaces the policy read from the recipe's model path (the processor is still read there), for
    benchmarks of architectures whose weights are not on disk."""
    recipe, grpo, model_args = parse_recipe(recipe_path, overrides)
    check_recipe(recipe, grpo, model_args)
    prepare_output_dir(grpo, recipe.overwrite_output_dir)
    resume = resolve_resume(grpo)

    state = PartialState()
    if not grpo.run_name or grpo.run_name == grpo.output_dir:
        grpo.run_name = f"{recipe.preset}-{recipe.stage}"
    # rewards before the model (check_recipe has named a misspelt tool or option): a bad plug-in fails early
    family = family_of(recipe.init_from or model_args.model_name_or_path)
    reward_funcs, weights, names = build_rewards(recipe.rewards)
    grpo.reward_weights = weights
    log.info("rewards: " + ", ".join(f"{n} x{w:g}" for n, w in zip(names, weights)))

    with state.main_process_first():  # stitching frames: once, on the main process first
        dataset = load_data(recipe, grpo.output_dir, family.system_prompt())
    need = grpo.per_device_train_batch_size * state.num_processes * grpo.gradient_accumulation_steps
    if len(dataset) * grpo.num_generations < need:  # TRL's sampler yields whole batches only: no step at all
        raise RecipeError(f"data: {len(dataset)} rows cannot fill one step of {need // grpo.num_generations} prompts "
                          f"(per_device_train_batch_size {grpo.per_device_train_batch_size} x {state.num_processes} "
                          f"processes x gradient_accumulation_steps {grpo.gradient_accumulation_steps} / "
                          f"num_generations {grpo.num_generations}): add rows or lower the batch size")
    if grpo.use_vllm and grpo.use_cpu:
        isolate_vllm_compile_cache()
    if model is None:
        model, processor = load_policy(recipe, model_args, Path(grpo.output_dir) / "vllm_model" if grpo.use_vllm
                                       else None, state.main_process_first)
    else:
        processor = load_processor(recipe, model_args)
    specs = tool_specs(recipe.tools, processor)  # the zoom tool resizes as this processor does
    factory = environment_factory(specs)
    if recipe.vision_attention != "per_window":
        layers = family.set_vision_attention(model, recipe.vision_attention)
        log.info(f"vision attention: {recipe.vision_attention} in {layers} layers")
    trainer = ToolGRPOTrainer(
        model=model, reward_funcs=reward_funcs, args=grpo, train_dataset=dataset, processing_class=processor,
        environment_factory=factory, peft_config=lora_config(model_args, family), on_bad_reward=recipe.on_bad_reward,
        log_image_side=recipe.log_image_side, rollouts_every=recipe.rollouts_every,
        callbacks=[CurvesCallback(grpo.output_dir)],
    )
    log.info(f"distributed: {describe_distributed(trainer.accelerator)}")
    setup_wandb(recipe, grpo, trainer.accelerator.is_main_process)
    if trainer.accelerator.is_main_process:
        discard_staging(grpo.output_dir)  # what an interrupted save left behind
        if resume is None and (Path(grpo.output_dir) / "metrics.jsonl").exists():
            (Path(grpo.output_dir) / "metrics.jsonl").unlink()  # a killed run that saved no checkpoint yet
    trainer.accelerator.wait_for_everyone()
    return Stage(recipe, grpo, model_args, trainer, processor, specs, resume)


def train(recipe_path: str | Path | dict, overrides: list[str] = ()) -> Path:
    stage = build_stage(recipe_path, overrides)
    recipe, grpo, model_args, trainer, processor = (stage.recipe, stage.grpo, stage.model_args, stage.trainer,
                                                    stage.processor)
    trainer.train(resume_from_checkpoint=stage.resume)

    final = Path(grpo.output_dir) / "final"
    if model_args.use_peft:  # final/ is a plain model directory: the adapters merged into the starting weights
        adapter = Path(grpo.output_dir) / "final_adapter"
        trainer.save_model(str(adapter))  # every rank: under ZeRO-3 this gathers the shards
        if trainer.accelerator.is_main_process:
            with zero3_init_off():
                merge_adapter(recipe.init_from or model_args.model_name_or_path, adapter, final, model_args)
        trainer.accelerator.wait_for_everyone()
    else:
        trainer.save_model(str(final))
    if trainer.accelerator.is_main_process:
        processor.save_pretrained(final)
        # how this model was rolled out, so evaluation rolls it out the same way
        RolloutSettings(tools=without_geometry(stage.tool_specs), max_turns=grpo.max_tool_calling_iterations,
                        max_completion_length=grpo.max_completion_length, temperature=grpo.temperature).save(final)
        log.info(f"final model: {final}")
    if "wandb" in (grpo.report_to or []):
        import wandb  # only when report_to names it

        if wandb.run is not None:  # one stage, one run (transformers leaves it open for the process)
            wandb.finish()
    return final

