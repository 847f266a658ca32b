"""Shared fixtures: one tiny policy, one tiny CLIP and one small toydrive set per test session, all built
offline under the cache (`OMNIDRIVE_TEST_CACHE` picks another folder)."""

import os
from pathlib import Path

import pytest
from hypothesis import settings

# CI draws the same property-test examples on every run (`HYPOTHESIS_PROFILE=ci`, set by .ci/run); a local run
# keeps the random search, so new draws can still find what the fixed ones miss.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session", autouse=True)
def _offline_cache(tmp_path_factory):
    # Nothing in the tests may reach a hub. Built tiny models are content-addressed (config, seed, build
    # version) in the user's cache, so a second run reuses them.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from omnidrive_r1.disk_cache import isolate_vllm_compile_cache

    isolate_vllm_compile_cache()  # vLLM's CPU kernels compiled under another instruction set abort the process
    if os.environ.get("OMNIDRIVE_TEST_CACHE"):
        os.environ["OMNIDRIVE_CACHE"] = os.environ["OMNIDRIVE_TEST_CACHE"]
    from omnidrive_r1.disk_cache import cache_root

    yield cache_root()


@pytest.fixture(scope="session")
def tiny_policy_dir(_offline_cache):
    from omnidrive_r1.toy.tiny import build_tiny_policy

    return build_tiny_policy(seed=0)


@pytest.fixture(scope="session")
def tiny_qwen3_vl_dir(_offline_cache):
    from omnidrive_r1.toy.tiny import build_tiny_policy

    return build_tiny_policy(seed=0, family="qwen3_vl")


@pytest.fixture(scope="session")
def tiny_clip_dir(_offline_cache):
    from omnidrive_r1.toy.tiny import build_tiny_clip

    return build_tiny_clip(seed=0)


@pytest.fixture(scope="session")
def toydrive_dir(tmp_path_factory):
    from omnidrive_r1.toy.toydrive import generate

    out = tmp_path_factory.mktemp("toydrive")
    generate(out, frames=4, seed=123, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_models(tiny_policy_dir, tiny_clip_dir):
    """Recipe overrides that train the tiny models instead of building the toy preset's own. The random tiny
    policy earns none of the built-in rewards, so a small arbitrary reward is added (tests/odd_ids_reward.py):
    without rewards that differ within a group there is no gradient, and a trained model could not be told
    from the initial one."""
    odd = Path(__file__).parent / "odd_ids_reward.py"
    return ["lab={}", f"model_name_or_path={tiny_policy_dir}", f"rewards.clip_grounding.model_name=local-dir:{tiny_clip_dir}",
            f"rewards.odd_ids={{path: '{odd}:odd_ids', weight: 0.1}}"]


@pytest.fixture(scope="session")
def tiny_processor_dir(_offline_cache):
    """Tokenizer, image processor and chat template only: for tests that need no model."""
    from omnidrive_r1.toy.tiny import build_tiny_processor_dir

    return build_tiny_processor_dir(seed=0)


# the real toy base build with fewer SFT steps, and one protocol attempt (no reading check reruns). Since the
# right chevron has vertical stripes, 60 context and 40 protocol steps left answer accuracy at 0 and RL with nothing
# to move (0.154 -> 0.131); with these the learning check measured 0.324 -> 0.599
SMALL_BASE = {"reading": 60, "context": 120, "pointing": 60, "protocol": 80}


@pytest.fixture(scope="session")
def small_toy_base(_offline_cache):
    from omnidrive_r1.toy.base import build_toy_base

    return build_toy_base(seed=0, steps=SMALL_BASE, clip_steps=150, attempts=1)
