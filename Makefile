# latentforge: every target works on a fresh machine by itself (it runs `setup` first).
# `make help` lists the targets.

.DEFAULT_GOAL := help
SHELL := /bin/bash

# uv may live on PATH or only as a module of the python that installed it.
UV = $(shell command -v uv 2>/dev/null || echo python3 -m uv)
RUN = $(UV) run --no-sync
PYTEST = $(RUN) python -m pytest
ARGS ?=

.PHONY: help setup sync test test-slow test-shared test-livr test-internal-rl test-spatia test-workspace \
        train-livr train-internal-rl train-spatia bench lint format lock

help: ## show this list
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: ## install uv, system libraries (libusb for open3d, OSMesa for MuJoCo) and sync .venv to uv.lock
	@bash tools/setup.sh

sync: setup ## alias of setup

test: setup ## run every test suite except slow tests (the CI command)
	$(PYTEST) $(ARGS)

test-slow: setup ## run only the tests marked slow
	$(PYTEST) -m slow $(ARGS)

test-workspace: setup ## cross-package tests: layout, isolated installs, Makefile/README agreement
	$(PYTEST) tests $(ARGS)

test-shared: setup ## tests of the shared latentforge package
	$(PYTEST) shared/tests $(ARGS)

test-livr: setup ## tests of the livr package
	$(PYTEST) packages/livr/tests $(ARGS)

test-internal-rl: setup ## tests of the internal-rl package
	$(PYTEST) packages/internal-rl/tests $(ARGS)

test-spatia: setup ## tests of the spatia package
	$(PYTEST) packages/spatia/tests $(ARGS)

train-livr: setup ## livr: Direct SFT vs LIVR, CPU default (ARGS="--config paper --backbone qwen2.5-vl-3b" on GPUs)
	$(RUN) livr reproduce $(ARGS)

train-internal-rl: setup ## internal-rl: data, pretraining, metacontroller, internal RL vs baselines, CPU default (ARGS="--config paper" on GPUs)
	$(RUN) internal-rl reproduce $(ARGS)

train-spatia: setup ## spatia: tiny model, loop generation with/without memory, CPU default (ARGS="--config paper" on GPUs)
	$(RUN) spatia reproduce $(ARGS)

bench: setup ## every benchmark (tools/bench*.py, packages/*/benchmarks/); results in benchmarks/results/ (ARGS=--quick: smoke sizes)
	@shopt -s nullglob; scripts=(tools/bench*.py packages/*/benchmarks/bench_*.py); \
	if [ $${#scripts[@]} -eq 0 ]; then echo "no benchmarks are built yet" >&2; exit 2; fi; \
	for s in "$${scripts[@]}"; do echo "== $$s"; $(RUN) python $$s --out benchmarks/results $(ARGS) || exit 1; done

lint: setup ## ruff lint + format check, and uv.lock up to date
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(UV) lock --check

format: setup ## apply ruff fixes and formatting
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

lock: ## re-resolve uv.lock after a dependency change
	$(UV) lock
