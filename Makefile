# feedpulse: `make demo` runs the pipeline on the embedded default, `make test` runs every check.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup setup-dev demo test lint typecheck bench clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "feedpulse needs Python 3.11 ($(PYTHON) not found)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch is pinned in pyproject.toml: the CPU build lies on local disk.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

setup-dev: $(VENV)/.installed-dev

demo: setup
	$(BIN)/feedpulse demo

lint: setup-dev
	$(BIN)/ruff check streams serving online tests bench
	$(BIN)/ruff format --check streams serving online tests bench

typecheck: setup-dev
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest

bench: setup-dev
	$(BIN)/python bench/throughput.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
