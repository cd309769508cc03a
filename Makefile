# RepoVault developer commands. `make run` and `make test` are the whole quick start.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.repovault/dagster_home

.PHONY: install run test lint bench up down clean

$(BIN)/repovault: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $@

install: $(BIN)/repovault

run: install
	@mkdir -p $(DAGSTER_HOME)
	@cp -n deploy/dagster-dev.yaml $(DAGSTER_HOME)/dagster.yaml 2>/dev/null || true
	$(BIN)/repovault init
	$(BIN)/dagster dev -w workspace.yaml

lint: install
	$(BIN)/ruff check repovault_pipeline tests benchmarks

test: install lint
	$(BIN)/pytest -q

clean:
	rm -rf .repovault .pytest_cache
