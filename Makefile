# The README's two commands. Override TORCH (e.g. a CUDA build's index) or PYTHON as needed:
#   make test TORCH="torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.14.1 torchvision==0.29.1
BIN := $(VENV)/bin

.PHONY: demo test

# the package and its runtime dependencies: all that the demo needs
$(BIN)/.installed-base: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# plus the test tools and the reference implementations of the parity tests
$(BIN)/.installed: $(BIN)/.installed-base
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

# train a small SegGPT on generated scenes (CPU, minutes), then score it against trivial baselines
demo: $(BIN)/.installed-base
	$(BIN)/seggpt-lab fit --config recipes/quickstart.yaml
	$(BIN)/seggpt-lab test --config recipes/eval_quickstart.yaml

test: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/python -m pytest
