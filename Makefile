# Two entry points for a fresh machine with Python 3.11: `make repro` and `make test`.
# Each creates .venv with pip (torch pinned to the CPU wheel) the first time.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: repro test bench first-look first-look-report compare

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# DVC runs stages as `python -m ...`: put the venv first on PATH.
export PATH := $(abspath $(BIN)):$(PATH)
# MLflow sends usage telemetry unless told not to (groklab.mlflow_store sets this for stages).
export MLFLOW_DISABLE_TELEMETRY ?= true

# `make repro JOBS=N`: the training cells N at a time (python -m groklab.repro, which runs
# them as `dvc repro` processes side by side; docs/side_by_side.md). --allow-missing: a
# clone has the results (git) but not the checkpoints (DVC's cache); a cell whose only
# change is its missing checkpoints is not trained again.
# Default: one cell per core, one thread each. Measured on the 2-core machine
# (benchmarks/repro_jobs.py --steps 300, four base cells): 92.4 cells/hour at JOBS=2
# against 70.7 at JOBS=1 (2 threads per cell). Bytes depend on the thread count:
# JOBS=1 gives what `dvc repro` gives.
# FLEETS=1 (for a GPU): the cells that share a model and batch shape train as one batched
# model each (python -m groklab.repro --fleets; groklab.fleet). RESUMABLE=1: each cell that
# can trains as a fleet of its own, which saves a snapshot every 10 minutes, so an
# interrupted cell resumes where it stopped (for the accelerators' long cells on a CPU).
JOBS ?= $(shell nproc 2>/dev/null || echo 1)
repro: $(BIN)/.installed  ## the whole pipeline at the papers' settings (~15 hours on 2 cores)
	python -m groklab.repro --allow-missing --jobs '$(JOBS)' $(if $(filter 1,$(FLEETS)),--fleets) \
		$(if $(filter 1,$(RESUMABLE)),--resumable)

# The first look: every study at small scale, as explicit overrides of params.yaml. It
# runs in a temporary copy of the repo (`dvc exp run --temp`), so params.yaml and the
# workspace stay as they are and `dvc repro` still means the papers' settings; its
# results are kept as the DVC experiment `first-look`, and first-look-report copies them
# out. `make first-look FIRST_LOOK=...` runs other overrides.
FIRST_LOOK := -S 'seeds=[0]' -S 'tasks=[x_plus_y]' -S 'baseline.tasks=[x_plus_y]' \
  -S train.steps=3000 -S train.stop_after_grok=200 \
  -S 'studies.augmentation.tasks=[x_plus_y]' -S 'studies.augmentation.values=[negation,combined30]' \
  -S 'studies.curriculum.tasks=[x_plus_y]' -S 'studies.curriculum.values=[linear]' \
  -S 'studies.architecture.tasks=[x_plus_y]' -S 'studies.architecture.values=[mlp]' \
  -S 'studies.optimizer.tasks=[x_plus_y]' -S 'studies.optimizer.values=[sgd_nesterov]' \
  -S 'studies.data_fraction.values=[0.3,0.8]' \
  -S '~studies.data_fraction.value_settings' -S '+studies.data_fraction.value_settings={}' \
  -S 'studies.batch_size.values=[128]' \
  -S 'studies.concealment.values=[4,8]' -S studies.concealment.settings.train.steps=12000 \
  -S 'studies.mechanism.tasks=[x_plus_y]' -S studies.mechanism.settings.data.p=23 \
  -S studies.mechanism.settings.data.train_fraction=0.7 \
  -S studies.mechanism.settings.train.steps=3000 -S studies.mechanism.settings.train.eval_every=50 \
  -S 'studies.accelerators.values=[grokfast_ema,grokfast_ema_lr]' \
  -S studies.accelerators.settings.train.steps=2000 \
  -S studies.accelerators.settings.train.stop_after_grok=200

# The first look's experiment ref of this commit (DVC names it refs/exps/<sha:2>/<sha>/<name>).
THIS_FIRST_LOOK = git for-each-ref --format='%(refname)' 'refs/exps/*/*/first-look' \
  | grep "/$$(git rev-parse HEAD | cut -c3-)/first-look$$"

first-look: $(BIN)/.installed  ## every study at small scale, leaving the workspace as it is
	@if $(THIS_FIRST_LOOK) >/dev/null; then \
	  echo "This commit already has a first look: 'make first-look-report' copies it out;"; \
	  echo "'dvc exp remove first-look' first to run it again."; exit 1; fi
	@echo "First look in a temporary copy of the repo. On a fresh clone DVC opens with one"
	@echo "warning per trained output, 'No file hash info found ... It won't be created.':"
	@echo "nothing is computed yet, so there is nothing to restore. Harmless."
	dvc exp run --temp -n first-look $(FIRST_LOOK)
	@$(MAKE) --no-print-directory first-look-report

first-look-report:  ## copy the newest first look's report, metrics and figures to first-look/
	@ref=$$(git for-each-ref --sort=-creatordate --count=1 --format='%(refname)' \
	  'refs/exps/*/*/first-look'); \
	if [ -z "$$ref" ]; then echo "No first look yet: run 'make first-look'."; exit 1; fi; \
	rm -rf first-look && mkdir first-look && \
	git archive "$$ref" reports | tar -x -C first-look --strip-components=1 && \
	echo "First look ($$ref) copied out: open first-look/report.md"

compare: $(BIN)/.installed  ## this commit's experiments side by side: what differs, one row each
	python -m groklab.compare $(if $(KEEP),--keep '$(KEEP)')

test: $(BIN)/.installed  ## lint and run the tests
	$(BIN)/ruff check .
	$(BIN)/pytest -q

bench: $(BIN)/.installed  ## training speed of the base configuration
	$(BIN)/python benchmarks/train_speed.py
