# Two entry points for a fresh machine with Python 3.11: `make repro` and `make test`.
# Each creates .venv with pip (torch pinned to the CPU wheel) the first time.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: repro test bench

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

repro: $(BIN)/.installed  ## run the pipeline
	$(BIN)/dvc repro

test: $(BIN)/.installed  ## lint and run the tests
	$(BIN)/ruff check .
	$(BIN)/pytest -q

bench: $(BIN)/.installed  ## training speed of the base configuration
	$(BIN)/python benchmarks/train_speed.py
