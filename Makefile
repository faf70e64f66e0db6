# `make demo` and `make test` set everything up on a fresh machine (with the trackers extra, which the tests use).
# torch is installed first so that pip does not pull a multi-GB CUDA build on a CPU-only machine;
# on a GPU machine pass the build you want, e.g. `make install TORCH="torch"`.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install test lint demo docs bench gpu-check gpu-check-dry gpu-wheels clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	DS_BUILD_OPS=0 $(BIN)/python -m pip install -q -e ".[dev,trackers,deepspeed]"
	touch $@

install: $(BIN)/.installed

lint: install
	$(BIN)/ruff check dora tests examples

test: lint
	$(BIN)/python -m pytest -q tests

# the default world, three seeds, all nine methods, two seeds at a time (one per core)
demo: install
	$(BIN)/dora demo --jobs 2

# docs/results.md's ten-seed table: DPO, DoRA and the baselines on the default world
demo-seeds: install
	$(BIN)/dora demo --seeds 10 --methods "DPO,DoRA,Human-only,Oracle,Label reweight" --jobs 2 --output demo_out/seeds10

docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: install
	$(BIN)/dora bench

# On a lent GPU machine (its own python3, no network; docs/benchmarks.md has the device run command):
gpu-check:
	bash scripts/gpu_check.sh $(GPU_CHECK_FLAGS)

# The same check here, tiny and on the CPU, CUDA parts skipped (tests/test_gpu_check.py runs it too)
gpu-check-dry: install
	PYTHON=$(BIN)/python bash scripts/gpu_check.sh --dry-run --out gpu_check_out $(GPU_CHECK_FLAGS)

# The wheels the GPU machine lacks, into .whl/ (git-ignored), for the device run to carry
gpu-wheels: install
	PYTHON=$(BIN)/python bash scripts/gpu_wheels.sh

clean:
	rm -rf $(VENV) site build *.egg-info
