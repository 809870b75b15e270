# Quickstart: `make demo` (build the demo runs and serve them), `make test` (the whole suite, as CI runs it) and
# `make test-fast` (the set without browser, torchrun and slow tests).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# torch is installed first, pinned, so that nothing else pulls a newer multi-GB build. 2.14.1 with torchvision 0.29.1
# (the pair this machine holds; the CPU-only 2.13.0 wheel cannot import torchvision, which timm needs): the tests
# build ResNet, MobileNet, ViT and DeiT from configs. Override TORCH_SPEC for another build.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PORT ?= 5006

.PHONY: demo test test-fast lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml
	$(BIN)/pip install $(TORCH_SPEC)
	$(BIN)/pip install -e ".[all]"
	touch $@

demo: $(VENV)/.installed-dev
	$(BIN)/kdviz demo --port $(PORT)

# the whole suite, as CI runs it; the 25 slowest tests are listed at the end
test: $(VENV)/.installed-dev
	$(BIN)/ruff check kdviz tests benchmarks
	$(BIN)/python -m pytest -q --durations=25

# the fast set for development (a few minutes): no browser, no torchrun, nothing marked slow
test-fast: $(VENV)/.installed-dev
	$(BIN)/ruff check kdviz tests benchmarks
	$(BIN)/python -m pytest -q -m "not slow and not browser and not distributed"

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check kdviz tests benchmarks

bench: $(VENV)/.installed-dev
	for script in benchmarks/*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) runs tests/artifacts .pytest_cache
