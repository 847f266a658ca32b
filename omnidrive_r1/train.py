"""`omnidrive-r1 train RECIPE.yaml [key=value ...]`: one Clip-GRPO stage.

recipe -> checks (before anything heavy) -> data -> policy + processor (our chat template) -> zoom tool
environment -> reward plug-ins -> TRL GRPOTrainer -> outputs/<preset>/<stage>/{final/, metrics.jsonl,
curves.png, checkpoint-*/, wandb/}.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from omnidrive_r1.config import RecipeArguments, RecipeError, parse_recipe


def check_recipe(recipe: RecipeArguments, grpo, model_args) -> None:
    """Refuse configurations that cannot work, naming the field, before any model or data is loaded."""
    if grpo.use_vllm and importlib.util.find_spec("vllm") is None:
        raise RecipeError("use_vllm: true, but vllm is not installed: on a GPU machine pip install "
                          "'omnidrive-r1[vllm]', or set use_vllm=false")
    if grpo.num_generations < 2:
        raise RecipeError(f"num_generations: {grpo.num_generations}; GRPO compares at least 2 completions per prompt")
    if not recipe.rewards:
        raise RecipeError("rewards: the recipe lists no rewards")
    if not 0 < recipe.image_min_pixels <= recipe.image_max_pixels:
        raise RecipeError(f"image_min_pixels {recipe.image_min_pixels} / image_max_pixels "
                          f"{recipe.image_max_pixels}: need 0 < min <= max")
    if recipe.init_from and not (Path(recipe.init_from) / "config.json").exists():
        raise RecipeError(f"init_from: {recipe.init_from} holds no model. Stage 2 starts from stage 1's final model: "
                          "run `make stage1` first, or set init_from=PATH")
    kind = recipe.data.get("kind")
    if kind not in ("drivelmm", "deepeyes"):
        raise RecipeError(f"data.kind must be 'drivelmm' or 'deepeyes', got {kind!r}")
    path = recipe.data.get("path")
    if not path:
        raise RecipeError("data.path: the recipe names no data file")
    if not Path(path).exists() and not recipe.data.get("toydrive"):
        raise RecipeError(f"data.path: {path} not found (set data.path to your {kind} file)")
    resume = grpo.resume_from_checkpoint
    if resume and str(resume).lower() not in ("true", "1", "yes") and not Path(resume).is_dir():
        raise RecipeError(f"resume_from_checkpoint: {resume} is not a checkpoint directory")


def load_data(recipe: RecipeArguments):
    from omnidrive_r1.data.loaders import load_deepeyes, load_drivelmm

    data = dict(recipe.data)
    path = Path(data["path"])
    if not path.exists():
        from omnidrive_r1.data.toydrive import generate

        spec = data["toydrive"]
        print(f"generating toydrive into {spec['out']} (frames={spec.get('frames', 16)}, seed={spec.get('seed', 0)})")
        generate(spec["out"], frames=spec.get("frames", 16), seed=spec.get("seed", 0))
    if data["kind"] == "drivelmm":
        ds, report = load_drivelmm(path, data.get("images_root"), skip_bad=data.get("skip_bad", False),
                                   limit=data.get("limit"))
    else:
        ds, report = load_deepeyes(path, sources=data.get("sources"), skip_bad=data.get("skip_bad", False),
                                   limit=data.get("limit"))
    print(report.summary())
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
        from huggingface_hub import snapshot_download

        source = Path(snapshot_download(str(source)))
    out.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():  # weights and model config only: save_pretrained must not write through links
        link = out / item.name
        weights = item.suffix in (".safetensors", ".bin") or item.name.endswith(".index.json")
        if (weights or item.name in ("config.json", "generation_config.json")) and not link.exists():
            link.symlink_to(item.resolve())
    processor.save_pretrained(out)
    return out


def load_policy(recipe: RecipeArguments, model_args, seed: int, vllm_dir: str | Path | None = None):
    """(model, processor): the policy with our chat template and the recipe's image resolution."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from omnidrive_r1 import templates
    from omnidrive_r1.tiny import build_tiny_policy

    source = recipe.init_from or model_args.model_name_or_path
    if source == "tiny":
        source = str(build_tiny_policy(seed=seed))
    processor = AutoProcessor.from_pretrained(source, min_pixels=recipe.image_min_pixels,
                                              max_pixels=recipe.image_max_pixels,
                                              revision=model_args.model_revision)
    templates.install(processor)
    dtype = model_args.dtype if model_args.dtype in ("auto", None) else getattr(torch, model_args.dtype)
    model = AutoModelForImageTextToText.from_pretrained(
        source, dtype=dtype, revision=model_args.model_revision,
        attn_implementation=model_args.attn_implementation)
    if vllm_dir is not None:  # TRL starts vLLM from model.name_or_path
        model.name_or_path = model.config._name_or_path = str(vllm_model_dir(source, processor, vllm_dir))
    return model, processor


def setup_wandb(recipe: RecipeArguments, grpo, is_main_process: bool) -> None:
    """Start this stage's run (offline without an API key) in outputs/<preset>/<stage>/wandb; transformers'
    WandbCallback then logs into it."""
    if "wandb" not in (grpo.report_to or []) or not is_main_process:
        return
    import wandb

    offline = not os.environ.get("WANDB_API_KEY") and os.environ.get("WANDB_MODE") in (None, "offline")
    if offline:
        os.environ["WANDB_MODE"] = "offline"
        print(f"wandb: no WANDB_API_KEY, logging offline under {grpo.output_dir}/wandb; upload later with "
              f"`wandb sync {grpo.output_dir}/wandb/offline-run-*`")
    Path(grpo.output_dir).mkdir(parents=True, exist_ok=True)
    wandb.init(project=os.environ.get("WANDB_PROJECT", recipe.wandb_project), name=grpo.run_name,
               group=recipe.preset, job_type=recipe.stage, dir=grpo.output_dir,
               mode="offline" if offline else None, reinit="finish_previous")


def resolve_resume(grpo) -> str | None:
    """The checkpoint to resume from: a directory the user named, or (for `true`) the newest complete one in
    output_dir. Directories passed over (an interrupted save, a checkpoint missing files) are named."""
    from omnidrive_r1.checkpoints import checkpoint_problems, last_complete_checkpoint

    resume = grpo.resume_from_checkpoint
    if not resume:
        return None
    needs_optimizer = not grpo.save_only_model
    if str(resume).lower() in ("true", "1", "yes"):
        last, notes = last_complete_checkpoint(grpo.output_dir, needs_optimizer)
        for note in notes:
            print(f"resume_from_checkpoint: {note}")
        if last is None:
            print(f"resume_from_checkpoint: no complete checkpoint in {grpo.output_dir} yet, starting fresh")
            return None
        print(f"resume_from_checkpoint: resuming from {last}")
        return str(last)
    problems = checkpoint_problems(resume, needs_optimizer)
    if problems:
        raise RecipeError(f"resume_from_checkpoint: {resume} is incomplete ({', '.join(problems)}); "
                          "use resume_from_checkpoint=true to take the newest complete one")
    return resume


# what a training run writes into its output_dir (and all that `overwrite_output_dir` removes)
RUN_ARTIFACTS = ("final", "metrics.jsonl", "curves.png", "vllm_model", ".partial", "wandb")


def existing_run(output_dir: str | Path) -> list[str]:
    """What an earlier run left in `output_dir`."""
    out = Path(output_dir)
    if not out.is_dir():
        return []
    found = [name for name in ("final", "metrics.jsonl") if (out / name).exists()]
    checkpoints = sorted(p.name for p in out.glob("checkpoint-*") if p.is_dir())
    return found + checkpoints


def prepare_output_dir(recipe: RecipeArguments, grpo) -> None:
    """Refuse to mix two runs in one output_dir: continue the old one (resume) or replace it (overwrite)."""
    import shutil

    found = existing_run(grpo.output_dir)
    if not found or grpo.resume_from_checkpoint:
        return
    if not recipe.overwrite_output_dir:
        raise RecipeError(f"output_dir: {grpo.output_dir} already holds a run ({', '.join(found[:4])}). "
                          "Continue it with resume_from_checkpoint=true, replace it with overwrite_output_dir=true, "
                          "or choose another output_dir")
    out = Path(grpo.output_dir)
    print(f"overwrite_output_dir: removing the earlier run's outputs from {out}")
    for path in [*(out / name for name in RUN_ARTIFACTS), *out.glob("checkpoint-*")]:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def describe_distributed(accelerator) -> str:
    state = accelerator.state
    kind = str(state.distributed_type).split(".")[-1]
    plugin = getattr(state, "deepspeed_plugin", None)
    if plugin is not None:
        kind += f" ZeRO-{plugin.zero_stage}"
    return f"{kind}, {state.num_processes} process{'es' if state.num_processes > 1 else ''} on {state.device}"


def train(recipe_path: str | Path, overrides: list[str] = ()) -> Path:
    recipe, grpo, model_args = parse_recipe(recipe_path, overrides)
    check_recipe(recipe, grpo, model_args)
    prepare_output_dir(recipe, grpo)
    resume = resolve_resume(grpo)

    from trl import get_peft_config

    from omnidrive_r1.checkpoints import discard_staging
    from omnidrive_r1.metrics import CurvesCallback
    from omnidrive_r1.rewards import build_rewards
    from omnidrive_r1.tools import environment_factory
    from omnidrive_r1.trainer import ToolGRPOTrainer

    if not grpo.run_name or grpo.run_name == grpo.output_dir:
        grpo.run_name = f"{recipe.preset}-{recipe.stage}"
    # tools and rewards first: a misspelt plug-in fails before the model is loaded
    tool_specs = [{**({"name": s} if isinstance(s, str) else s)} for s in recipe.tools]
    for spec in tool_specs:
        if spec.get("name") == "zoom_in":  # the tool must resize exactly as the processor does
            spec.setdefault("min_pixels", recipe.image_min_pixels)
            spec.setdefault("max_pixels", recipe.image_max_pixels)
    factory = environment_factory(tool_specs)
    reward_funcs, weights, names = build_rewards(recipe.rewards)
    grpo.reward_weights = weights
    print("rewards: " + ", ".join(f"{n} x{w:g}" for n, w in zip(names, weights)))

    dataset = load_data(recipe)
    model, processor = load_policy(recipe, model_args, grpo.seed,
                                   vllm_dir=Path(grpo.output_dir) / "vllm_model" if grpo.use_vllm else None)
    trainer = ToolGRPOTrainer(
        model=model, reward_funcs=reward_funcs, args=grpo, train_dataset=dataset, processing_class=processor,
        environment_factory=factory, peft_config=get_peft_config(model_args),
        callbacks=[CurvesCallback(grpo.output_dir)],
    )
    if trainer.accelerator.is_main_process:
        print(f"distributed: {describe_distributed(trainer.accelerator)}")
    setup_wandb(recipe, grpo, trainer.accelerator.is_main_process)
    if trainer.accelerator.is_main_process:
        discard_staging(grpo.output_dir)  # what an interrupted save left behind
        if resume is None and (Path(grpo.output_dir) / "metrics.jsonl").exists():
            (Path(grpo.output_dir) / "metrics.jsonl").unlink()  # a killed run that saved no checkpoint yet
    trainer.accelerator.wait_for_everyone()
    trainer.train(resume_from_checkpoint=resume)

    final = Path(grpo.output_dir) / "final"
    if model_args.use_peft:  # final/ is a plain model directory: merge the adapters in
        merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
        if trainer.accelerator.is_main_process:
            merged.save_pretrained(final)
    else:
        trainer.save_model(str(final))
    if trainer.accelerator.is_main_process:
        processor.save_pretrained(final)
        print(f"final model: {final}")
    if "wandb" in (grpo.report_to or []):
        import wandb

        if wandb.run is not None:  # one stage, one run (transformers leaves it open for the process)
            wandb.finish()
    return final
