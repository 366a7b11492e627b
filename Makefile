# Two entry points for a fresh machine with Python 3.11: `make repro` and `make test`.
# Each creates .venv with pip (torch pinned to the CPU wheel) the first time.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: repro test bench first-look

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# DVC runs stages as `python -m ...`: put the venv first on PATH.
export PATH := $(abspath $(BIN)):$(PATH)

repro: $(BIN)/.installed  ## run the pipeline
	dvc repro

first-look: $(BIN)/.installed  ## every study at small scale (see README for its time)
	dvc exp run -n first-look -S 'seeds=[0]' -S 'tasks=[x_plus_y]' -S 'baseline.tasks=[x_plus_y]' \
	  -S train.steps=3000 -S train.stop_after_grok=200 \
	  -S 'studies.augmentation.tasks=[x_plus_y]' -S 'studies.augmentation.values=[negation,combined30]' \
	  -S 'studies.curriculum.tasks=[x_plus_y]' -S 'studies.curriculum.values=[linear]' \
	  -S 'studies.architecture.tasks=[x_plus_y]' -S 'studies.architecture.values=[mlp]' \
	  -S 'studies.optimizer.tasks=[x_plus_y]' -S 'studies.optimizer.values=[sgd_nesterov]' \
	  -S 'studies.data_fraction.values=[0.3,0.8]' -S 'studies.data_fraction.value_settings={}' \
	  -S 'studies.batch_size.values=[128]' \
	  -S 'studies.concealment.values=[4,8]' -S studies.concealment.settings.train.steps=12000

test: $(BIN)/.installed  ## lint and run the tests
	$(BIN)/ruff check .
	$(BIN)/pytest -q

bench: $(BIN)/.installed  ## training speed of the base configuration
	$(BIN)/python benchmarks/train_speed.py
