# GridPatrol — `make run` serves the demo, `make test` checks everything.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help run test lint typecheck pytest bench system system-test install clean distclean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

system: ## install missing Debian packages (PostGIS, pgRouting)
	@tools/ensure-system.sh

system-test: ## … plus Chromium and fonts for the browser tests
	@tools/ensure-system.sh test

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: system $(STAMP) ## create .venv with the project installed editable

run: install ## start PostGIS, migrate, load the demo, serve on http://127.0.0.1:8000
	$(BIN)/gridpatrol run

lint: $(STAMP) ## ruff
	$(BIN)/ruff check gis api tiles tests bench
	$(BIN)/ruff format --check gis api tiles tests bench

typecheck: $(STAMP) ## mypy
	$(BIN)/mypy gis api tiles bench

pytest: $(STAMP) ## the test suite against a throwaway PostGIS
	$(BIN)/pytest -q --durations=30

test: system-test install lint typecheck pytest ## ruff, mypy and pytest

bench: install ## benchmarks; results in bench/results/*.json
	$(BIN)/python -m bench

clean: ## remove caches and test output
	rm -rf .pytest_cache .mypy_cache .ruff_cache test-output
	find . -name __pycache__ -prune -exec rm -rf {} +

distclean: clean ## … and the venv and the local database (var/)
	-$(BIN)/gridpatrol db stop
	rm -rf $(VENV) var
