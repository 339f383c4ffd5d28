# Set-up is part of every target: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench

setup: $(STAMP)

# torch is pinned first: a loose torch spec may pull a multi-GB CUDA build; 2.13.0 is a CPU wheel.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/carrygate demo

# The suite talks to real PostgreSQL, Redis and headless Chromium: start or install them when missing.
test: $(STAMP)
	bash scripts/test_services.sh
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q
	$(VENV)/bin/mkdocs build --strict --site-dir build/site  # no -q: it hides --strict's warnings

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	$(PY) bench/engine_step.py
