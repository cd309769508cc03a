# RepoVault developer commands. `make run` and `make test` are the whole quick start.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# REPOVAULT_HOME: where the embedded default keeps its data (docs/contract.md); the CLI called
# from any folder of this checkout finds the same one.
export REPOVAULT_HOME ?= $(CURDIR)/.repovault
export DAGSTER_HOME ?= $(REPOVAULT_HOME)/dagster_home

.PHONY: install lock run stop test lint schemas bench bench-refresh up down clean

# Exactly the lock (requirements/dev.txt: runtime, dev and bench packages, with hashes), then
# the package itself, editable, built by the locked setuptools.
$(BIN)/repovault: setup.py requirements/dev.txt
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements/dev.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

install: $(BIN)/repovault

# Embedded default: SQLite Dagster instance and lineage, local object store under .repovault/,
# and the embedded Kafka-protocol broker on 127.0.0.1:9092 unless something listens there.
# One foreground process (repovault_pipeline/devrun.py): Ctrl-C or SIGTERM stops dagster dev, all
# it started and the broker it started; `make stop` does the same from another terminal, for
# this REPOVAULT_HOME only (pid records in $(REPOVAULT_HOME)/run/).
run: install
	@mkdir -p $(DAGSTER_HOME)
	@cp -n deploy/dagster-dev.yaml $(DAGSTER_HOME)/dagster.yaml 2>/dev/null || true
	$(BIN)/python -m repovault_pipeline.devrun -- $(BIN)/dagster dev -w workspace.yaml

stop:
	$(BIN)/python -m repovault_pipeline.devrun --stop

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# docs/schemas/ from the models of the records others read (repovault_pipeline/schemas.py);
# tests/test_schemas.py fails until this is run after a change to one of them.
schemas: install
	$(BIN)/python -m repovault_pipeline.schemas

# Two pytest-xdist workers per core: the tests wait much of their time (on servers, subprocess
# startups, lease expiries, a quiet topic), so one per core left the cores half idle.
TEST_WORKERS ?= $(shell echo $$(( 2 * $$(nproc) )))
test: install lint
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist worksteal --durations=15

# Re-resolve the lock after a change to setup.py (existing pins are kept); `make lock UPGRADE=1`
# moves every package to its newest allowed release, `make lock UPGRADE=name` one package.
# Either way: review the diff, run `make test`, commit the lock with the change.
LOCK_FLAGS = --quiet --generate-hashes --universal --python-version 3.11 \
	$(if $(filter 1,$(UPGRADE)),--upgrade,$(if $(UPGRADE),--upgrade-package $(UPGRADE)))
lock: install
	$(BIN)/uv pip compile $(LOCK_FLAGS) setup.py requirements/build.in --extra dev --extra bench \
		-o requirements/dev.txt
	$(BIN)/uv pip compile $(LOCK_FLAGS) setup.py requirements/build.in -c requirements/dev.txt \
		-o requirements/runtime.txt

# Benchmark (benchmarks/README.md): `make bench` (30-45 min) writes benchmarks/RESULTS.md and
# results.png; `make bench QUICK=1` is the smoke run (small repository, one round, ~30 s);
# `make bench REAL=/path/to/bare.git,...` adds real repositories (`git clone --mirror URL`).
bench: install
	$(BIN)/python -m benchmarks.run $(if $(QUICK),--quick) $(if $(REAL),--real $(REAL))

# Refresh of 1,000 unchanged repositories vs a sample of archive runs (benchmarks/REFRESH.md).
bench-refresh: install
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
