# The two commands: `make demo` (set up and run the demo) and `make test` (the whole suite).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 3000
export DAGSTER_HOME := $(CURDIR)/dagster_home

.PHONY: demo demo-cluster servers test lint venv bench clean-demo settings-docs

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,mlflow]'
	touch $(STAMP)

# The demo's days of records, up to today (UTC), and its first day. Its partitions start on that day
# (BATCH_PREDICT_START, exported to every command below and to `dagster dev`), so the UI shows
# no months of empty partitions before the data; a BATCH_PREDICT_START in the environment wins.
DEMO_DAYS ?= 30
demo: DEMO_START := $(shell $(PYTHON) -c 'import datetime as d; print(d.datetime.now(d.UTC).date() - d.timedelta(days=$(DEMO_DAYS) - 1))')

# The demo's model was "trained" 45 days ago on the iris data; the records drift away from it.
# After the first batch, training on the labelled recent days promotes a better model, and
# the partitions the old model predicted are re-predicted.
demo: export BATCH_PREDICT_START ?= $(DEMO_START)
demo: $(STAMP)
	$(BIN)/batch-predict demo-data --start $(DEMO_START) --days $(DEMO_DAYS) --rows-per-day 2000
	$(BIN)/batch-predict model train-demo --age-days 45 --keep-alias
	$(BIN)/batch-predict materialize --last 21
	$(BIN)/batch-predict status --last 7
	$(BIN)/batch-predict model train
	$(BIN)/batch-predict repredict
	$(BIN)/batch-predict status --last 7
	@if [ -z "$(NO_UI)" ]; then \
		echo "Dagster UI on http://127.0.0.1:$(PORT) (Ctrl-C stops it)"; \
		PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p $(PORT); \
	fi

# The same app as a cluster on this machine (deploy/): PostgreSQL, Redis, two Celery run workers,
# the daemon and the UI on 127.0.0.1 and free ports; a GraphQL backfill of 14 partitions; the UI
# until Ctrl-C. `NO_UI=1` stops everything after the check and exits 0 only if every count adds up.
demo-cluster: $(STAMP)
	NO_UI="$(NO_UI)" PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m batch_predict.cluster

# Debian's PostgreSQL and Redis for the tests and demo-cluster, and Chromium for the UI test
# (driven by Playwright from the dev extras, which downloads no browser), installed with apt when missing (root).
servers: $(STAMP)
	$(BIN)/python -m batch_predict.servers

# .env.example and docs/settings.md, written from the settings spec (batch_predict/settings.py).
settings-docs: $(STAMP)
	$(BIN)/python -m batch_predict.settings --write

lint: $(STAMP)
	$(BIN)/ruff check batch_predict batch_predict_tests benchmarks
	$(BIN)/ruff format --check batch_predict batch_predict_tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

# Throughput, peak memory, overhead per partition and backfill time (in-process and from the UI of a
# real `dagster dev`), each against its baseline in the same process run: an hour or more on 2 cores.
# Writes benchmarks/results.json and prints the table. Not part of `make test`. Parts alone:
# `make bench ONLY=overhead,ui`; every part at small sizes: `make bench BENCH_ARGS=--quick`.
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py $(if $(ONLY),--only $(ONLY)) $(BENCH_ARGS)

clean-demo:
	rm -rf data/landing data/labels data/models data/staging data/staging.thresholds data/warehouse.duckdb* dagster_home/storage dagster_home/history dagster_home/schedules dagster_home/logs data/cluster
