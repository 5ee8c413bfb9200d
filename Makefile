# voltha-gevent: `make run` runs a node, `make test` runs every test (unit + real Consul).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONSUL_CACHE := .cache/consul/usr/bin/consul

.PHONY: help install consul prometheus run test test-unit test-integration lint bench bench-quick clean

help:
	@echo "make run    - run one node (starts a local Consul dev agent if none answers on localhost:8500)"
	@echo "make test   - install what is needed, then run unit and integration tests"
	@echo "make lint | make bench | make bench-quick | make install | make clean"

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

install: $(STAMP)

# Prints nothing but errors; the binary path is exported to the test and run targets.
consul:
	@./scripts/install-consul.sh >/dev/null

# Prometheus + promtool (Debian bookworm's package) for the alert-rule and monitoring tests.
prometheus:
	@./scripts/install-prometheus.sh >/dev/null

run: install consul
	CONSUL_BIN="$$(./scripts/install-consul.sh)" $(BIN)/voltha-gevent run $(ARGS)

test: install consul prometheus
	CONSUL_BIN="$$(./scripts/install-consul.sh)" PROMETHEUS_BIN="$$(./scripts/install-prometheus.sh)" $(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: install prometheus
	PROMETHEUS_BIN="$$(./scripts/install-prometheus.sh)" $(BIN)/python -m pytest -m "not consul" $(PYTEST_ARGS)

test-integration: install consul prometheus
	CONSUL_BIN="$$(./scripts/install-consul.sh)" PROMETHEUS_BIN="$$(./scripts/install-prometheus.sh)" $(BIN)/python -m pytest -m consul $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check voltha_gevent tests bench $(wildcard examples)

bench: install consul
	CONSUL_BIN="$$(./scripts/install-consul.sh)" $(BIN)/python -m bench $(BENCH_ARGS)

bench-quick: install consul
	CONSUL_BIN="$$(./scripts/install-consul.sh)" $(BIN)/python -m bench --quick $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache build *.egg-info
