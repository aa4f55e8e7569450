# EdgeTier developer targets. `make up` runs the node on the demo repository;
# `make test` installs everything the tests need and runs them.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install -q -c constraints.txt
DEMO_REPO ?= var/demo-models
HOST ?= 127.0.0.1

.PHONY: venv install install-test demo-repo up test lint typecheck bench bench-docs clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

venv: $(BIN)/python

install: venv
	$(PIP) -e '.[video]'

install-test: venv
	$(PIP) -e '.[video,test]'

system-deps:
	@command -v mosquitto >/dev/null 2>&1 || ( \
	  (apt-get update -qq || sudo apt-get update -qq) && \
	  (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto || \
	   sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto) )

demo-repo: install
	$(BIN)/edgetier model demo $(DEMO_REPO)

up: demo-repo
	$(BIN)/edgetier serve --model-repository $(DEMO_REPO) --host $(HOST) --print-examples

test: install-test system-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var build dist .pytest_cache .mypy_cache .ruff_cache
