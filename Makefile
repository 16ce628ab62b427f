# One place for every command. `make run` is the main job, `make test` the full check.
# Both create or reuse the virtual environment at .venv and install everything.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
SHARED ?= ../shared/data
STAMP := $(VENV)/.installed
# Code folders mapped under the import root imr_outcome (see pyproject.toml).
CODE_DIRS := core data model train serve

.PHONY: install run dataset test lint typecheck unit bench-parse bench-cv bench-predict \
	bench-faithfulness clean

# Reinstall when dependencies change or a module is added/removed (folder mtimes):
# the editable install is "strict" (a link tree), so new modules need a reinstall.
$(STAMP): pyproject.toml $(CODE_DIRS)
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first, pinned: the CPU build from local disk. A looser pin pulls CUDA wheels.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev,offline,spark]" --config-settings editable_mode=strict
	touch $(STAMP)

install: $(STAMP)

dataset: install
	$(BIN)/imr-outcome data build $(SHARED) --out artifacts/dataset \
	  --time-split-cutoff dwc=2017-01-01 --time-split-cutoff dmhc=2015-01-01

# The main job: dataset -> train the config with the best measured CV on the training
# folds -> evaluate on the held-out fold -> register (first version becomes @champion).
# The config is the DWC one with the highest 5-fold grouped CV AUROC among the reports in
# experiments/reports measured on this code (experiments/cv_table.py --best); default.yaml
# (the fine-tuned MiniLM) when none is. RUN_CONFIG=name overrides it.
run: dataset
	config="$${RUN_CONFIG:-$$($(PY) experiments/cv_table.py --best)}"; \
	echo "make run: registering experiments/$$config.yaml"; \
	$(BIN)/imr-outcome train --config "experiments/$$config.yaml" --register

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	# Import contracts (pyproject [tool.importlinter]): layers cli -> serve -> train -> model
	# -> data -> errors/logs/console; serve never imports train; no cycles in model/, train/.
	$(BIN)/lint-imports

# mypy skips symlinked files, so the modules are named explicitly (found via the link tree).
typecheck: install
	$(BIN)/mypy $$(find $(CODE_DIRS) -name '*.py' | sed -E -e 's#^core/#imr_outcome/#' \
	  -e 's#^(data|model|train|serve)/#imr_outcome/\1/#' -e 's#/__init__\.py$$##' -e 's#\.py$$##' \
	  -e 's#/#.#g' | sort | sed 's/^/-m /')
	$(BIN)/mypy tests

unit: install
	$(BIN)/pytest

test: lint typecheck unit

bench-parse: install
	$(PY) experiments/bench_parse.py $(SHARED)/dwc-imr-letters/pdf $(SHARED)/seed-letters

# The figures in experiments/README.md: 5x5 grouped CV of every DWC model and the DMHC
# metadata model (long: the fine-tuned MiniLM alone fits 25 times).
BENCH_CONFIGS ?= majority tfidf_lr tfidf_lr_grid tfidf_lr_fixed_c tfidf_lr_summary tfidf_lr_summary_mtus \
  nblr_summary frozen_minilm_lr two_stage default dmhc_metadata_lr
bench-cv: dataset
	for c in $(BENCH_CONFIGS); do \
	  $(BIN)/imr-outcome evaluate --config experiments/$$c.yaml \
	    --report experiments/reports/$$c.json || exit 1; \
	done
	$(PY) experiments/cv_table.py

# Inference figures for the champion of `make run`: latency (p50/p95), latency with
# evidence, batch items/s, peak memory; then evidence faithfulness on its held-out fold.
bench-predict: install
	$(PY) experiments/bench_predict.py --model "models:/imr-outcome@champion"

bench-faithfulness: install
	$(PY) experiments/bench_faithfulness.py --model "models:/imr-outcome@champion"

clean:
	rm -rf build *.egg-info .pytest_cache .mypy_cache .ruff_cache
