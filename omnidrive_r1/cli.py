"""`omnidrive-r1` command line. Each sub-command has its own `--help`.

Each command imports what it runs inside its own function: `omnidrive-r1 --help`, a sub-command's help and a
mistyped argument answer in a fraction of a second, without loading torch (tests/test_structure.py checks it)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 800x450, got {text!r}") from None
    if w < 64 or h < 64:
        raise argparse.ArgumentTypeError(f"camera size {w}x{h} is too small (at least 64x64)")
    return w, h


def toy_default_data(benchmark: str) -> str:
    """The data `eval` and `rollout` use without --data: the benchmark's toydrive set, from the lab (generated on
    first use; omnidrive_r1/toy/prepare.py)."""
    from omnidrive_r1.toy.prepare import default_data

    return default_data(benchmark)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def _fraction(text: str) -> float:
    value = _positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1], got {text}")
    return value


def _phase_steps(text: str) -> dict[str, int]:
    """`reading=2,protocol=2` -> {"reading": 2, "protocol": 2} (the phase names are checked by the build)."""
    steps = {}
    for part in filter(None, text.split(",")):
        name, sep, value = part.partition("=")
        if not sep or not value.strip().isdigit():
            raise argparse.ArgumentTypeError(f"expected PHASE=N[,PHASE=N...], got {text!r}")
        steps[name.strip()] = int(value)
    return steps


def cmd_data_toydrive(args) -> int:
    from omnidrive_r1.toy.toydrive import generate

    info = generate(args.out, frames=args.frames, seed=args.seed, camera_size=args.camera_size,
                    test_fraction=args.test_fraction)
    print(json.dumps(info, indent=2))
    return 0


def cmd_data_check(args) -> int:
    from omnidrive_r1.data.loaders import load_deepeyes, load_drivelmm

    if args.drivelmm:
        ds, report = load_drivelmm(args.drivelmm, args.images_root, skip_bad=args.skip_bad, limit=args.limit,
                                   stitched_dir=args.stitched_dir)
    else:
        ds, report = load_deepeyes(args.deepeyes, sources=args.sources, skip_bad=args.skip_bad, limit=args.limit)
    print(report.summary())
    print(f"MCQ rows: {sum(ds['is_mcq'])}, rows with a ground-truth box: {sum(b is not None for b in ds['gt_box'])}")
    return 0


def cmd_models_tiny(args) -> int:
    from omnidrive_r1.errors import UserError
    from omnidrive_r1.toy.tiny import build_tiny_clip, build_tiny_policy

    out = Path(args.out) if args.out else None
    try:
        policy = build_tiny_policy(args.seed, out / "policy" if out else None, family=args.family)
        clip = build_tiny_clip(args.seed, out / "clip" if out else None)
    except FileExistsError as e:
        raise UserError(f"--out: {e}") from None
    print(json.dumps({"policy": str(policy), "clip": str(clip)}, indent=2))
    return 0


def cmd_models_toy_base(args) -> int:
    from omnidrive_r1.errors import UserError
    from omnidrive_r1.toy.models import ensure_toy_models

    try:
        size = {k: v for k, v in (("steps", args.phase_steps), ("clip_steps", args.clip_steps),
                                  ("attempts", args.attempts)) if v is not None}
        out = ensure_toy_models(args.out, seed=args.seed, family=args.family, zoom_share=args.zoom_share, size=size)
    except FileExistsError as e:
        raise UserError(f"--out: {e}") from None
    build = json.loads((out / "build.json").read_text()) if (out / "build.json").exists() else {}
    print(json.dumps({"policy": str(out / "policy"), "clip": str(out / "clip"), **build}, indent=2))
    return 0


def cmd_models_vllm_dir(args) -> int:
    from omnidrive_r1.config import parse_recipe
    from omnidrive_r1.policies import build_processor, family_of
    from omnidrive_r1.train import image_pixels, vllm_model_dir

    recipe, _, model_args = parse_recipe(args.recipe, args.overrides, plan_only=True)
    source = recipe.init_from or model_args.model_name_or_path
    min_pixels, max_pixels = image_pixels(recipe, family_of(source))
    processor = build_processor(source, min_pixels=min_pixels, max_pixels=max_pixels,
                                revision=model_args.model_revision)
    out = vllm_model_dir(source, processor, args.out)
    print(f"{out}: {source}'s weights (linked) with the recipe's image resolution "
          f"({min_pixels}..{max_pixels} pixels). Serve it with:\n"
          f"  trl vllm-serve --model {out} --tensor-parallel-size 1 --data-parallel-size 8 --port 8000")
    return 0


def cmd_recipes(args) -> int:
    from omnidrive_r1.config import find_recipe, packaged_recipes, packaged_recipes_dir

    for name in packaged_recipes():
        first = find_recipe(name).read_text().lstrip("# ").split("\n", 1)[0]
        print(f"{name:26s} {first if len(first) <= 90 else first[:87] + '...'}")
    print(f"\n({packaged_recipes_dir()}; `omnidrive-r1 train NAME` runs one from any folder, `key=value` overrides it)")
    return 0


def cmd_train(args) -> int:
    if args.plan:
        from omnidrive_r1.plan import print_plan

        print_plan(args.recipe, args.overrides)
        return 0
    from omnidrive_r1.toy.prepare import prepare
    from omnidrive_r1.train import train

    train(*prepare(args.recipe, args.overrides))  # a toy recipe's models and data are built first (its `lab`)
    return 0


def _judge_config(args):
    from omnidrive_r1.errors import UserError
    from omnidrive_r1.eval.judge import JudgeConfig

    if not (args.judge_url or args.judge_model or args.official_script):
        return None
    if not args.judge_url:
        raise UserError("--judge-url is needed to judge (an OpenAI-compatible base URL such as http://127.0.0.1:8000/v1)")
    common = dict(api_key_env=args.judge_key_env, concurrency=args.judge_concurrency, retries=args.judge_retries,
                  timeout=args.judge_timeout)
    if args.benchmark != "drivelmm":
        if args.official_script or args.judge_prompt:
            raise UserError("--official-script and --judge-prompt are DriveLMM-o1's reasoning judge; "
                            f"--benchmark {args.benchmark} asks a yes/no judge (--judge-url, --judge-model)")
        if not args.judge_model:
            raise UserError("--judge-model is needed with --judge-url (e.g. gpt-4o-mini)")
        return JudgeConfig.yes_no(args.judge_url, args.judge_model, **common)
    if args.official_script:
        if args.judge_prompt:
            raise UserError("--judge-prompt and --official-script exclude each other: the official request has "
                            "its own prompt")
        model = {"model": args.judge_model} if args.judge_model else {}
        return JudgeConfig.official(args.official_script, args.judge_url, **model, **common)
    if not args.judge_model:
        raise UserError("--judge-model is needed with --judge-url (e.g. gpt-4o-mini)")
    extra = {}
    if args.judge_prompt:
        path = Path(args.judge_prompt)
        if not path.is_file():
            raise UserError(f"--judge-prompt: {path} not found")
        extra = {"prompt": path.read_text(), "prompt_source": f"the prompt in {path}"}
    return JudgeConfig(url=args.judge_url, model=args.judge_model, **common, **extra)


def _default_out(model: str | None, results: str | None, benchmark: str = "drivelmm") -> str:
    """outputs/eval/<name>: outputs/toy/stage2/final -> outputs/eval/toy-stage2-final (-vstar, -hrbench for the
    other benchmarks)."""
    name = Path(results).stem if results else "-".join(Path(model).parts[-3:])
    return str(Path("outputs/eval") / (name if benchmark == "drivelmm" else f"{name}-{benchmark}"))


def cmd_eval(args) -> int:
    from omnidrive_r1.errors import UserError
    from omnidrive_r1.eval.run import evaluate, score_choice_results, score_results
    from omnidrive_r1.rollout import RolloutSettings

    judge = _judge_config(args)
    if args.results and args.benchmark != "drivelmm":
        if not args.data:
            raise UserError(f"--results needs --data, the {args.benchmark} data the results answer")
        score_choice_results(args.results, args.data, benchmark=args.benchmark, judge_config=judge,
                             out=args.out or _default_out(None, args.results, args.benchmark),
                             overwrite=args.overwrite)
        return 0
    if args.results:
        if not args.data:
            raise UserError("--results needs --data, the DriveLMM-o1 test JSON the results answer")
        score_results(args.results, args.data, judge_config=judge, out=args.out or _default_out(None, args.results),
                      overwrite=args.overwrite)
        return 0
    if not args.model:
        raise UserError("--model is needed (a model directory such as outputs/toy/stage2/final, or a hub id)")
    options = {}
    if args.benchmark == "drivelmm":
        if args.mcq_only and args.open_only:
            raise UserError("--mcq-only and --open-only leave no row between them; give one")
        options = {"mcq_only": args.mcq_only, "open_only": args.open_only, "stitched_dir": args.stitched_dir}
    elif args.mcq_only or args.open_only or args.stitched_dir:
        raise UserError(f"--mcq-only, --open-only and --stitched-dir are DriveLMM-o1's; --benchmark {args.benchmark} "
                        "has none of them")
    settings = RolloutSettings.of_model(args.model)
    if args.max_turns is not None:
        settings.max_turns = args.max_turns
    if args.max_completion_length is not None:
        settings.max_completion_length = args.max_completion_length
    evaluate(args.model, args.data or toy_default_data(args.benchmark), args.images_root, benchmark=args.benchmark,
             engine=args.engine,
             judge_config=judge, limit=args.limit, out=args.out or _default_out(args.model, None, args.benchmark),
             batch_size=args.batch_size, settings=settings, tools=not args.no_tools, overwrite=args.overwrite,
             sample=args.sample, **options)
    return 0


def cmd_view(args) -> int:
    from omnidrive_r1.view import write_view

    info = write_view(args.dir, args.out, max_rows=args.max_rows)
    print(f"{info['out']}: {info['rows']} {info['kind']} rows, {info['bytes'] / 1e6:.1f} MB, written in "
          f"{info['seconds']:.1f} s; open it in a browser")
    return 0


def cmd_rollout(args) -> int:
    from omnidrive_r1.eval import benchmarks
    from omnidrive_r1.eval.run import make_record, open_rows
    from omnidrive_r1.policies import family_of
    from omnidrive_r1.rollout import RolloutSettings, make_engine, rollout

    bench = benchmarks.get("drivelmm")
    loaded = bench.load(args.data or toy_default_data("drivelmm"), images_root=args.images_root, limit=args.n,
                        system_prompt=family_of(args.model).system_prompt(), stitched_dir=args.stitched_dir)
    print(loaded.note)
    settings = RolloutSettings.of_model(args.model)
    if args.max_completion_length is not None:
        settings.max_completion_length = args.max_completion_length
    engine, processor = make_engine(args.engine, args.model, settings)
    rows = open_rows(loaded.rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "rollouts.jsonl", "w") as f:
        for row, r in zip(rows, rollout(engine, processor, rows, settings, do_sample=args.sample)):
            record = make_record(row, r)
            f.write(json.dumps(record) + "\n")
            print(f"[{record['idx'][-12:]}] {len(record['tool_calls'])} tool calls, answer {record['answer']!r}")
    print(f"{len(rows)} rollouts -> {out / 'rollouts.jsonl'}")
    return 0


def family_names() -> list[str]:
    from omnidrive_r1.policies import families

    return [t for f in families() for t in f.model_types]


def benchmark_names() -> list[str]:
    from omnidrive_r1.eval.benchmarks import names

    return names()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="omnidrive-r1",
        description="Reinforcement learning of vision-language policies that think with images "
                    "(interleaved multimodal chain of thought with a zoom-in tool, Clip-GRPO).",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    tr = sub.add_parser(
        "train", help="run one Clip-GRPO stage from a recipe",
        description="Run one Clip-GRPO training stage. The recipe is a YAML file with GRPOConfig and "
                    "ModelConfig fields at the top level (TRL / open-r1 style) plus our sections: data, tools, "
                    "rewards, image_min_pixels / image_max_pixels, init_from. Writes outputs/<preset>/<stage>/ "
                    "(final/, metrics.jsonl, curves.png, checkpoints, wandb/).",
        epilog="examples:\n  omnidrive-r1 train recipes/toy/stage1.yaml\n"
               "  omnidrive-r1 train recipes/toy/stage1.yaml max_steps=5 learning_rate=1e-4 data.limit=16\n"
               "  omnidrive-r1 train recipes/toy/stage1.yaml resume_from_checkpoint=true",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    tr.add_argument("recipe", help="recipe YAML file, e.g. recipes/toy/stage1.yaml, or the name of a packaged recipe "
                                   "such as toy/stage1.yaml (`omnidrive-r1 recipes` lists them)")
    tr.add_argument("--plan", action="store_true",
                    help="print the per-GPU memory plan (ZeRO-2/3, with and without LoRA) without loading a model")
    tr.add_argument("overrides", nargs="*", metavar="key=value",
                    help="override recipe fields; dotted keys reach into sections (data.limit=8, "
                         "rewards.clip_grounding.weight=0.3; tools and rewards by name, a new name appends); "
                         "command-line values win over the file")
    tr.set_defaults(func=cmd_train)

    rc = sub.add_parser("recipes", help="list the recipes that ship with the package",
                        description="List the packaged recipes; `omnidrive-r1 train NAME` finds them from any folder.")
    rc.set_defaults(func=cmd_recipes)

    ev = sub.add_parser(
        "eval", help="evaluate a policy on DriveLMM-o1, V* Bench or HR-Bench (accuracy, judge scores, tool use)",
        description="Roll the policy out with its tools on a benchmark's rows (as the recipe that trained it did) "
                    "and score it. DriveLMM-o1 (the default): MCQ answers parsed with the official rules and ours, "
                    "the reasoning optionally judged on 12 metrics with any OpenAI-compatible endpoint; with "
                    "--results, score any model's official-format results file instead. V* Bench: DeepEyes' "
                    "protocol (rules, then a judge; rule-only without one) and our reading, with the options in "
                    "file order (as published) and over every rotation of them, zoom IoU against the target boxes. "
                    "HR-Bench 4K/8K: the official protocol (a yes/no judge on every row, mean over cycles), "
                    "DeepEyes' scorer and our reading. --results with --benchmark vstar|hrbench scores answers made "
                    "elsewhere (JSON or JSON lines rows with an id and a text). Writes OUT/{rows.jsonl, summary.json, summary.md, summary.png}; an "
                    "interrupted run resumes where it stopped.",
        epilog="examples:\n  omnidrive-r1 eval --model outputs/toy/stage2/final\n"
               "  omnidrive-r1 eval --model outputs/toy/stage2/final --benchmark vstar    # toydrive in V* format\n"
               "  omnidrive-r1 eval --model /models/run/final --benchmark vstar --data /data/vstar_bench\n"
               "  omnidrive-r1 eval --model /models/run/final --benchmark hrbench --data /data/hr_bench_4k.tsv\n"
               "  omnidrive-r1 eval --model outputs/toy/base/policy --no-tools\n"
               "  omnidrive-r1 eval --model /models/run/final --data /data/DriveLMM-o1/test.json \\\n"
               "      --images-root /data/nuscenes --judge-url http://127.0.0.1:8000/v1 \\\n"
               "      --official-script ~/DriveLMM-o1/evaluation/evaluation_script.py\n"
               "  omnidrive-r1 eval --results their_results.json --data /data/DriveLMM-o1/test.json \\\n"
               "      --judge-url http://127.0.0.1:8000/v1 --judge-model gpt-4o-mini\n"
               "  omnidrive-r1 eval --results answers.jsonl --benchmark hrbench --data /data/hr_bench_4k.tsv \\\n"
               "      --judge-url http://127.0.0.1:8000/v1 --judge-model gpt-4o-mini",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ev.add_argument("--model", help="model directory or hub id to roll out")
    ev.add_argument("--results", help="score this results file instead of generating: DriveLMM-o1's official format, "
                                      "or for vstar/hrbench rows {\"idx\": ..., \"response\": ...} (docs/benchmarks.md)")
    ev.add_argument("--benchmark", choices=benchmark_names(), default="drivelmm",
                    help="which benchmark (default drivelmm); each reads its published format from --data")
    ev.add_argument("--data", help="DriveLMM-o1 JSON, V* Bench folder or HR-Bench TSV (default: toydrive in that "
                                   "format: outputs/toydrive-heldout, outputs/toydrive-vstar, outputs/toydrive-hrbench, "
                                   "generated if missing)")
    ev.add_argument("--images-root", help="folder the camera paths are relative to (default: the JSON's)")
    ev.add_argument("--stitched-dir", help="folder of pre-stitched 2x3 frames named <idx without its question number>.png (or .jpg); "
                         "the camera files are then not read")
    ev.add_argument("--engine", choices=["hf", "vllm"], default="hf", help="generation engine (default hf)")
    ev.add_argument("--no-tools", action="store_true", help="offer the policy no tool: one turn, no zoom")
    ev.add_argument("--sample", action="store_true",
                    help="sample at the training temperature (seeded) instead of greedy decoding: the policy's call "
                         "rate as RL meets it")
    ev.add_argument("--max-turns", type=int, help="tool-calling turns (default: the training recipe's)")
    ev.add_argument("--max-completion-length", type=_positive_int,
                    help="tokens per answer, tool replies included (default: the training recipe's)")
    ev.add_argument("--judge-url", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    ev.add_argument("--judge-model", help="judge model name at that endpoint (official: gpt-4o-mini)")
    ev.add_argument("--judge-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    ev.add_argument("--judge-prompt", help="file with the judge's system prompt (default: the project's)")
    ev.add_argument("--official-script", help="your copy of the official DriveLMM-o1 evaluation_script.py: judge "
                                              "with the official request, its system prompt read from this file")
    ev.add_argument("--judge-concurrency", type=_positive_int, default=8, help="judge requests in flight (default 8)")
    ev.add_argument("--judge-retries", type=int, default=4, help="retries per row on errors (default 4)")
    ev.add_argument("--judge-timeout", type=_positive_float, default=60.0, help="seconds per judge request (default 60)")
    ev.add_argument("--limit", type=_positive_int, help="evaluate only the first N rows")
    ev.add_argument("--mcq-only", action="store_true",
                    help="evaluate the multiple-choice rows only (the MCQ accuracy, in 60%% of the time on toydrive)")
    ev.add_argument("--open-only", action="store_true",
                    help="evaluate the open questions only (without a judge: open_answer_f1, the token F1 of each "
                         "<answer>, the training reward of open rows)")
    ev.add_argument("--out", help="output folder (default outputs/eval/<model>)")
    ev.add_argument("--overwrite", action="store_true",
                    help="replace an evaluation in --out that another model or other settings produced")
    ev.add_argument("--batch-size", type=_positive_int, default=8, help="rows per generation batch (default 8)")
    ev.set_defaults(func=cmd_eval)

    vw = sub.add_parser(
        "view", help="one HTML page of rollouts: the frame with each zoom box, the crops, the reasoning, the scores",
        description="Write a self-contained HTML page (images inlined, no server) for an evaluation folder "
                    "(omnidrive-r1 eval --out) or a training stage's output folder (its rollouts/, written every "
                    "rollouts_every steps): per row the frame the policy saw with each zoom box and the ground-truth "
                    "box, the crops, the reasoning and answer, the score or every reward term; filters for correct, "
                    "wrong, no tool and failed calls, and a step slider for a training run.",
        epilog="examples:\n  omnidrive-r1 view outputs/eval/toy-stage2-final\n  omnidrive-r1 view outputs/toy/stage1",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    vw.add_argument("dir", help="an evaluation folder or a training output folder")
    vw.add_argument("--out", help="the HTML file to write (default DIR/view.html)")
    vw.add_argument("--max-rows", type=_positive_int, help="at most this many rows (a training run: the latest)")
    vw.set_defaults(func=cmd_view)

    data = sub.add_parser("data", help="generate or check datasets", description="Generate or check datasets.")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    t = dsub.add_parser(
        "toydrive", help="write the synthetic toydrive benchmark",
        description="Write toydrive, a procedural driving benchmark in the real formats: "
                    "OUT/drivelmm/{train,test}.json with six camera images per frame under "
                    "OUT/drivelmm/samples/CAM_*/, and OUT/deepeyes/train.parquet (stage-1 rows). "
                    "Same seed, same bytes.")
    t.add_argument("--out", required=True, help="output folder")
    t.add_argument("--frames", type=_positive_int, default=16, help="number of frames, 8 questions each (default 16)")
    t.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    t.add_argument("--camera-size", type=_size, default=(800, 450), metavar="WxH",
                   help="size of each camera image (default 800x450; nuScenes is 1600x900)")
    t.add_argument("--test-fraction", type=_fraction, default=0.25, help="share of frames in test.json (default 0.25)")
    t.set_defaults(func=cmd_data_toydrive)

    c = dsub.add_parser(
        "check", help="load a DriveLMM-o1 or DeepEyes file and report bad rows",
        description="Load a data file through the same loader training uses (stitching and caching the "
                    "camera grid) and report how many rows are usable.")
    src = c.add_mutually_exclusive_group(required=True)
    src.add_argument("--drivelmm", help="DriveLMM-o1 JSON file")
    src.add_argument("--deepeyes", help="DeepEyes parquet file")
    c.add_argument("--images-root", help="folder the DriveLMM-o1 camera paths are relative to (default: the JSON's)")
    c.add_argument("--stitched-dir", help="folder of pre-stitched 2x3 frames named <idx without its question number>.png (or .jpg); "
                         "the camera files are then not read")
    c.add_argument("--sources", nargs="+", help="DeepEyes: keep only these data_source values")
    c.add_argument("--skip-bad", action="store_true", help="skip and count bad rows instead of stopping")
    c.add_argument("--limit", type=_positive_int, help="read at most this many rows")
    c.set_defaults(func=cmd_data_check)

    models = sub.add_parser("models", help="build offline models", description="Build offline models.")
    msub = models.add_subparsers(dest="models_command", required=True, metavar="MODELS_COMMAND")
    m = msub.add_parser(
        "tiny", help="build a tiny policy (any supported model family) and the tiny CLIP",
        description="Build (or reuse from the cache, $OMNIDRIVE_CACHE) a tiny policy of a supported model family "
                    "(random weights, the family's architecture, tokens and chat template; docs/families.md) and "
                    "the tiny open_clip CLIP used by tests and the CPU default run. No network.")
    m.add_argument("--out", help="write into OUT/policy and OUT/clip instead of the cache")
    m.add_argument("--family", choices=family_names(), help="the policy's model_type (default: the default "
                                                            "family's, the toy preset's)")
    m.add_argument("--seed", type=int, default=0, help="weight and tokenizer seed (default 0)")
    m.set_defaults(func=cmd_models_tiny)
    b = msub.add_parser(
        "toy-base", help="build the toy base policy and toy CLIP (the toy preset's pretrained stand-ins)",
        description="Train, offline and on CPU, the toy CLIP (contrastive, on toydrive crops and captions) and the "
                    "toy base policy (TRL SFT on toydrive tool-use trajectories with imperfect zoom boxes) and write "
                    "them to OUT/policy and OUT/clip. Cached in $OMNIDRIVE_CACHE: minutes the first time, then a copy.")
    b.add_argument("--out", default="outputs/toy/base", help="output folder (default outputs/toy/base)")
    b.add_argument("--family", choices=family_names(), help="the policy's model_type (default: the default "
                                                            "family's; qwen3_vl: recipes/toy_qwen3_vl)")
    b.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    b.add_argument("--zoom-share", type=_fraction, help="a reluctant base: the share of the tool-offering SFT examples "
                                                     "that zoom (the rest answer at once); 0.25 gives a base that "
                                                     "calls in about a quarter of its rollouts (docs/ablation.md)")
    small = b.add_argument_group("a smaller build", "only to check the machinery quickly: such a base does not learn "
                                                    "what the toy preset needs (defaults: the full build)")
    small.add_argument("--phase-steps", type=_phase_steps, metavar="PHASE=N,...",
                       help="SFT steps of some phases (reading, context, pointing, protocol; 0 skips one), e.g. "
                            "reading=2,protocol=2")
    small.add_argument("--clip-steps", type=_positive_int, help="the toy CLIP's training steps (default 300)")
    small.add_argument("--attempts", type=_positive_int, help="tries of the protocol phase (default 4)")
    b.set_defaults(func=cmd_models_toy_base)
    v = msub.add_parser(
        "vllm-dir", help="the model directory a vLLM server must load for a recipe (server mode)",
        description="Write a model directory for `trl vllm-serve`: the recipe's model (weights linked, not copied) "
                    "with a processor that resizes images exactly as the trainer will (the recipe's "
                    "image_min_pixels / image_max_pixels). A server started on the plain checkpoint expands images "
                    "to other token counts, which the trainer refuses. No model is loaded. See docs/multinode.md.")
    v.add_argument("recipe", help="the training recipe (YAML)")
    v.add_argument("overrides", nargs="*", help="key=value overrides, as for train")
    v.add_argument("--out", required=True, help="directory to write")
    v.set_defaults(func=cmd_models_vllm_dir)

    r = sub.add_parser(
        "rollout", help="roll a policy out with its tools on a few DriveLMM-o1 rows",
        description="Let a policy answer a few questions, multi-turn, with the tools and settings it was trained "
                    "with (the same rollout path as evaluation); writes OUT/rollouts.jsonl and prints each answer.")
    r.add_argument("--model", required=True, help="policy directory or hub id")
    r.add_argument("--data", help="DriveLMM-o1 JSON (default: the held-out toydrive test set, outputs/toydrive-heldout, generated if missing)")
    r.add_argument("--images-root", help="folder the camera paths are relative to (default: the JSON's)")
    r.add_argument("--stitched-dir", help="folder of pre-stitched 2x3 frames named <idx without its question number>.png (or .jpg); "
                         "the camera files are then not read")
    r.add_argument("--n", type=_positive_int, default=4, help="number of questions (default 4)")
    r.add_argument("--engine", choices=["hf", "vllm"], default="hf", help="generation engine (default hf)")
    r.add_argument("--sample", action="store_true", help="sample (temperature of the recipe) instead of greedy")
    r.add_argument("--max-completion-length", type=_positive_int, help="tokens per answer (default: the recipe's)")
    r.add_argument("--out", default="outputs/rollout", help="output folder (default outputs/rollout)")
    r.set_defaults(func=cmd_rollout)
    return p


class _MainRankOnly(logging.Filter):
    """Under `accelerate launch` every rank runs the same code: only rank 0 speaks (errors, and records logged
    with `extra={"all_ranks": True}`, excepted)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return (record.levelno >= logging.ERROR or os.environ.get("RANK", "0") == "0"
                or getattr(record, "all_ranks", False))


class _Plain(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        return message if record.levelno == logging.INFO else f"{record.levelname.lower()}: {message}"


def setup_logging(verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_Plain("%(message)s"))
    handler.addFilter(_MainRankOnly())
    root = logging.getLogger("omnidrive_r1")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    from omnidrive_r1.errors import UserError

    try:
        return args.func(args)
    except UserError as e:  # the user's to fix: the message says what, a traceback would only hide it
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
