# RepoVault developer commands. `make run` and `make test` are the whole quick start.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.repovault/dagster_home

.PHONY: install run test lint bench bench-refresh up down clean

$(BIN)/repovault: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $@

install: $(BIN)/repovault

# Embedded default: SQLite Dagster instance and lineage, local object store under .repovault/,
# and the embedded Kafka-protocol broker on 127.0.0.1:9092 unless something listens there.
run: install
	@mkdir -p $(DAGSTER_HOME)
	@cp -n deploy/dagster-dev.yaml $(DAGSTER_HOME)/dagster.yaml 2>/dev/null || true
	$(BIN)/python -m repovault_pipeline.devbroker
	$(BIN)/repovault init
	$(BIN)/dagster dev -w workspace.yaml

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: install lint
	$(BIN)/pytest -q

# Benchmark (benchmarks/README.md): `make bench` (25-35 min) writes benchmarks/RESULTS.md and
# results.png; `make bench QUICK=1` is the smoke run (small repository, one round, ~30 s).
$(VENV)/.bench-extra: setup.py | $(BIN)/repovault
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	@touch $@

bench: install $(VENV)/.bench-extra
	$(BIN)/python -m benchmarks.run $(if $(QUICK),--quick)

# Refresh of 1,000 unchanged repositories vs a sample of archive runs (benchmarks/REFRESH.md).
bench-refresh: install $(VENV)/.bench-extra
	$(BIN)/python -m benchmarks.refresh

# Full stack in Docker (docs/deployment.md): `make up`, `make up HA=1` for three Kafka brokers.
# The first `make up` writes .env with random secrets; `make down` keeps the data volumes.
COMPOSE ?= docker compose
COMPOSE_FILES = -f docker-compose.yml $(if $(HA),-f docker-compose.ha.yml)

up:
	@sh deploy/make-env.sh
	$(COMPOSE) $(COMPOSE_FILES) up -d --build
	@echo "RepoVault UI: http://$$(sed -n 's/^REPOVAULT_PUBLIC_HOST=//p' .env):$$(sed -n 's/^REPOVAULT_UI_PORT=//p' .env)/ (sign in as the operator of .env; services need a minute: $(COMPOSE) $(COMPOSE_FILES) ps)"

down:
	$(COMPOSE) $(COMPOSE_FILES) down

clean:
	rm -rf .repovault .pytest_cache
