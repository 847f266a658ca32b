"""`omnidrive-r1` command line. Each sub-command has its own `--help`."""

from __future__ import annotations

import argparse
import json
import logging
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


def cmd_data_toydrive(args) -> int:
    from omnidrive_r1.data.toydrive import generate

    info = generate(args.out, frames=args.frames, seed=args.seed, camera_size=args.camera_size,
                    test_fraction=args.test_fraction)
    print(json.dumps(info, indent=2))
    return 0


def cmd_data_check(args) -> int:
    from omnidrive_r1.data.loaders import load_deepeyes, load_drivelmm

    if args.drivelmm:
        ds, report = load_drivelmm(args.drivelmm, args.images_root, skip_bad=args.skip_bad, limit=args.limit)
    else:
        ds, report = load_deepeyes(args.deepeyes, sources=args.sources, skip_bad=args.skip_bad, limit=args.limit)
    print(report.summary())
    print(f"MCQ rows: {sum(ds['is_mcq'])}, rows with a ground-truth box: {sum(b is not None for b in ds['gt_box'])}")
    return 0


def cmd_models_tiny(args) -> int:
    from omnidrive_r1.tiny import build_tiny_clip, build_tiny_policy

    out = Path(args.out) if args.out else None
    policy = build_tiny_policy(args.seed, out / "policy" if out else None)
    clip = build_tiny_clip(args.seed, out / "clip" if out else None)
    print(json.dumps({"policy": str(policy), "clip": str(clip)}, indent=2))
    return 0


def cmd_train(args) -> int:
    from omnidrive_r1.train import train

    train(args.recipe, args.overrides)
    return 0


def cmd_eval(args) -> int:
    from omnidrive_r1.eval.judge import JudgeConfig
    from omnidrive_r1.eval.run import evaluate

    data = args.data
    if data is None:
        from omnidrive_r1.smoke import ensure_toydrive

        data = str(ensure_toydrive("outputs/toydrive") / "drivelmm" / "test.json")
    judge = None
    if args.judge_url or args.judge_model:
        if not (args.judge_url and args.judge_model):
            raise SystemExit("error: --judge-url and --judge-model go together")
        prompt = Path(args.judge_prompt).read_text() if args.judge_prompt else None
        judge = JudgeConfig(url=args.judge_url, model=args.judge_model, api_key_env=args.judge_key_env,
                            concurrency=args.judge_concurrency, retries=args.judge_retries,
                            timeout=args.judge_timeout, **({"prompt": prompt} if prompt else {}))
    evaluate(args.model, data, args.images_root, engine=args.engine, judge_config=judge, limit=args.limit,
             out=args.out, batch_size=args.batch_size, max_turns=args.max_turns, max_new_tokens=args.max_new_tokens)
    return 0


def cmd_rollout(args) -> int:
    from omnidrive_r1.smoke import smoke_rollout

    smoke_rollout(model=args.model, data=args.data, n=args.n, max_new_tokens=args.max_new_tokens,
                  out=args.out, seed=args.seed)
    return 0


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
    tr.add_argument("recipe", help="recipe YAML file, e.g. recipes/toy/stage1.yaml")
    tr.add_argument("overrides", nargs="*", metavar="key=value",
                    help="override recipe fields; dotted keys reach into sections (data.limit=8, "
                         "rewards.2.weight=0.3); command-line values win over the file")
    tr.set_defaults(func=cmd_train)

    ev = sub.add_parser(
        "eval", help="evaluate a policy on DriveLMM-o1 (MCQ accuracy, judge scores, tool use)",
        description="Roll the policy out with the zoom tool on DriveLMM-o1 rows, parse MCQ answers with the "
                    "official rules (and our strict <answer> parser), optionally judge the reasoning on 12 "
                    "metrics with any OpenAI-compatible endpoint, and write OUT/{rows.jsonl, results.json, "
                    "summary.json, summary.md, summary.png}. An interrupted run resumes where it stopped.")
    ev.add_argument("--model", help="model directory or hub id (default: the tiny policy)")
    ev.add_argument("--data", help="DriveLMM-o1 JSON (default: toydrive test, generated if missing)")
    ev.add_argument("--images-root", help="folder the camera paths are relative to (default: the JSON's)")
    ev.add_argument("--engine", choices=["hf", "vllm"], default="hf", help="generation engine (default hf)")
    ev.add_argument("--judge-url", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    ev.add_argument("--judge-model", help="judge model name at that endpoint, e.g. gpt-4o-mini")
    ev.add_argument("--judge-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    ev.add_argument("--judge-prompt", help="file with the judge's system prompt (default: the project's)")
    ev.add_argument("--judge-concurrency", type=int, default=8, help="judge requests in flight (default 8)")
    ev.add_argument("--judge-retries", type=int, default=4, help="retries per row on errors (default 4)")
    ev.add_argument("--judge-timeout", type=float, default=60.0, help="seconds per judge request (default 60)")
    ev.add_argument("--limit", type=int, help="evaluate only the first N rows")
    ev.add_argument("--out", default="outputs/eval", help="output folder (default outputs/eval)")
    ev.add_argument("--batch-size", type=int, default=8, help="rows per generation batch (default 8)")
    ev.add_argument("--max-turns", type=int, default=4, help="tool calls allowed per question (default 4)")
    ev.add_argument("--max-new-tokens", type=int, default=512, help="tokens per turn (default 512)")
    ev.set_defaults(func=cmd_eval)

    data = sub.add_parser("data", help="generate or check datasets", description="Generate or check datasets.")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    t = dsub.add_parser(
        "toydrive", help="write the synthetic toydrive benchmark",
        description="Write toydrive, a procedural driving benchmark in the real formats: "
                    "OUT/drivelmm/{train,test}.json with six camera images per frame under "
                    "OUT/drivelmm/samples/CAM_*/, and OUT/deepeyes/train.parquet (stage-1 rows). "
                    "Same seed, same bytes.")
    t.add_argument("--out", required=True, help="output folder")
    t.add_argument("--frames", type=int, default=16, help="number of frames, 8 questions each (default 16)")
    t.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    t.add_argument("--camera-size", type=_size, default=(800, 450), metavar="WxH",
                   help="size of each camera image (default 800x450; nuScenes is 1600x900)")
    t.add_argument("--test-fraction", type=float, default=0.25, help="share of frames in test.json (default 0.25)")
    t.set_defaults(func=cmd_data_toydrive)

    c = dsub.add_parser(
        "check", help="load a DriveLMM-o1 or DeepEyes file and report bad rows",
        description="Load a data file through the same loader training uses (stitching and caching the "
                    "camera grid) and report how many rows are usable.")
    src = c.add_mutually_exclusive_group(required=True)
    src.add_argument("--drivelmm", help="DriveLMM-o1 JSON file")
    src.add_argument("--deepeyes", help="DeepEyes parquet file")
    c.add_argument("--images-root", help="folder the DriveLMM-o1 camera paths are relative to (default: the JSON's)")
    c.add_argument("--sources", nargs="+", help="DeepEyes: keep only these data_source values")
    c.add_argument("--skip-bad", action="store_true", help="skip and count bad rows instead of stopping")
    c.add_argument("--limit", type=int, help="read at most this many rows")
    c.set_defaults(func=cmd_data_check)

    models = sub.add_parser("models", help="build offline models", description="Build offline models.")
    msub = models.add_subparsers(dest="models_command", required=True, metavar="MODELS_COMMAND")
    m = msub.add_parser(
        "tiny", help="build the tiny Qwen2.5-VL policy and tiny CLIP",
        description="Build (or reuse from the cache, $OMNIDRIVE_CACHE) the tiny Qwen2.5-VL policy and the "
                    "tiny open_clip CLIP used by tests and the CPU default run. No network.")
    m.add_argument("--out", help="write into OUT/policy and OUT/clip instead of the cache")
    m.add_argument("--seed", type=int, default=0, help="weight and tokenizer seed (default 0)")
    m.set_defaults(func=cmd_models_tiny)

    r = sub.add_parser(
        "rollout", help="roll out a policy on toydrive (smoke test of data + model + template)",
        description="Generate toydrive if needed, load its test split through the DriveLMM-o1 loader and let "
                    "the policy answer a few questions with transformers generate; writes rollouts.jsonl.")
    r.add_argument("--model", help="policy directory or hub id (default: the tiny policy)")
    r.add_argument("--data", default="outputs/toydrive", help="toydrive folder (default outputs/toydrive)")
    r.add_argument("--n", type=int, default=4, help="number of questions (default 4)")
    r.add_argument("--max-new-tokens", type=int, default=32, help="tokens per answer (default 32)")
    r.add_argument("--out", default="outputs/toy/smoke", help="output folder (default outputs/toy/smoke)")
    r.add_argument("--seed", type=int, default=0, help="toydrive seed if it must be generated (default 0)")
    r.set_defaults(func=cmd_rollout)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    from omnidrive_r1.config import RecipeError
    from omnidrive_r1.data.loaders import DataError

    try:
        return args.func(args)
    except (DataError, RecipeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
