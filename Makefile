# One entry point for everything: `make run`, `make test`, `make check`, `make bench`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= config.example.toml
STAMP  := $(VENV)/.installed

.PHONY: run test check lint typecheck bench stress stress-suite venv sysdeps clean install uninstall docs \
        fleet-demo

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test,bench,uvloop]'
	touch $(STAMP)

venv: $(STAMP)

# Debian packages the tests and benchmarks need; installed only when missing (CI runs as root).
sysdeps:
	@sh deploy/sysdeps.sh

## The daemon on config.example.toml (monitors 127.0.0.1; state in ./state). Ctrl-C stops it.
run: $(STAMP)
	$(BIN)/exposuremon run -c $(CONFIG)

## Three nodes of one fleet on a throwaway PostgreSQL cluster, loopback targets (root; see
## docs/fleet.md "Trying it: make fleet-demo"). Ctrl-C stops the nodes and removes the cluster.
fleet-demo: $(STAMP) sysdeps
	$(BIN)/python -m bench.fleet_demo

test: $(STAMP) sysdeps
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

## Everything: lint, types, and the tests with a coverage report (a report, not a gate).
check: lint typecheck sysdeps
	$(BIN)/python -m pytest --cov --cov-report=term

bench: $(STAMP) sysdeps
	$(BIN)/python -m bench.scan_bench
	$(BIN)/python -m bench.daemon_bench
	$(BIN)/python -m bench.daemon_bench --targets 10000 --seconds 420
	$(BIN)/python -m bench.ratelimit_bench
	$(BIN)/python -m bench.metrics_bench
	$(BIN)/python -m bench.page_bench
	$(BIN)/python -m bench.store_bench
	$(BIN)/python -m bench.fleet_bench
	$(BIN)/python -m bench.vantage_bench
	$(BIN)/python -m bench.vantage_reopen_bench

## Issue 13: the outage, incident and loss tests 20 times in a row, one busy loop per core.
stress: $(STAMP) sysdeps
	$(BIN)/python -m bench.stress --runs 20

## The whole suite 3 times in a row with one busy loop per core (root, test bed).
stress-suite: $(STAMP) sysdeps
	$(BIN)/python -m bench.stress --suite --runs 3 --timeout 1800

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

## The systemd service (as root): a venv in PREFIX, the unit, /etc/exposuremon/config.toml.
## See docs/install.md; DESTDIR stages into another root, PIP_SPEC=wheel installs a wheel.
PREFIX      ?= /opt/exposuremon
DESTDIR     ?=
SYSTEMD_DIR ?= /etc/systemd/system
CONF_DIR    ?= /etc/exposuremon
BIN_DIR     ?= /usr/local/bin
INSTALL_ENV  = PREFIX='$(PREFIX)' DESTDIR='$(DESTDIR)' SYSTEMD_DIR='$(SYSTEMD_DIR)' \
               CONF_DIR='$(CONF_DIR)' BIN_DIR='$(BIN_DIR)' PYTHON='$(PYTHON)'

install:
	$(INSTALL_ENV) sh deploy/install.sh install

uninstall:
	$(INSTALL_ENV) sh deploy/install.sh uninstall

## docs/config.md is generated from the config models (a test checks it is current).
docs: $(STAMP)
	$(BIN)/python -m exposuremon.config.reference > docs/config.md
