# omnidrive-r1: every target that needs Python depends on `install`, which builds .venv with uv once.
SHELL := /bin/bash
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stamp-install
PRESET ?= toy
DATA ?= outputs/toydrive

export UV_PYTHON_DOWNLOADS := never
export PYTHONUNBUFFERED := 1

.PHONY: install stage1 test test-fast bench lint clean help

help:
	@echo "make stage1   run the main job on the built-in default (toy preset, CPU)"
	@echo "make test     run the test suite (installs on first use)"
	@echo "make bench    print speed figures"
	@echo "make lint     ruff"

install: $(STAMP)

# uv, not pip: pip here takes a local CPU torch wheel with which PyPI's torchvision does not import.
$(STAMP): pyproject.toml
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	@test -x $(PY) || $(UV) venv --quiet --python $(PYTHON) $(VENV)
	$(UV) pip install --python $(PY) -e '.[dev]'
	@touch $@

# Until the training issue lands, stage 1 is the smoke job: toydrive data + tiny policy rollouts.
stage1: install
	$(VENV)/bin/omnidrive-r1 rollout --data $(DATA) --out outputs/$(PRESET)/stage1

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench: install
	$(PY) -m omnidrive_r1.bench

lint: install
	$(VENV)/bin/ruff check omnidrive_r1 rewards tools tests

clean:
	rm -rf outputs wandb .pytest_cache
