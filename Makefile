# bayesmf: two commands on a fresh machine -- `make demo` and `make test`.
# Each target creates .venv with Python >= 3.12 (found by running candidates, not by
# name), installs bayesmf editable with what the target needs (idempotent: a stamp file
# keyed on pyproject.toml makes a second run fast), then does its job.

SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
PIP_FLAGS ?= -q --disable-pip-version-check
PYTEST_FLAGS ?=

# First interpreter that really runs and is >= 3.12 (pyenv shims fail without a version).
FIND_PYTHON = for c in python3.12 python3.13 python3.14 python3 \
	$$HOME/.pyenv/versions/3.12*/bin/python3 $$HOME/.pyenv/versions/3.13*/bin/python3 \
	/usr/local/bin/python3.12 /usr/bin/python3.12 /usr/local/bin/python3.13 /usr/bin/python3.13; do \
	  if command -v $$c >/dev/null 2>&1 && $$c -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; then \
	    command -v $$c; exit 0; fi; done; exit 1

.PHONY: venv dev-install demo test test-all bench notebooks clean help

help:
	@echo "make demo      - set up .venv and run the demo on the packaged MovieLens latest-small"
	@echo "make test      - set up .venv and run the fast test suite (< 15 min on 2 cores)"
	@echo "make test-all  - all tests including those marked slow"
	@echo "make bench     - benchmarks against the peers (myFM, smurff, Surprise, implicit, cornac)"

$(VENV)/.ok-python:
	@py=$$($(FIND_PYTHON)) || { echo "error: no Python >= 3.12 found (tried python3.12, python3.13, python3, pyenv versions). Install Python 3.12+ and retry." >&2; exit 1; }; \
	echo "using $$py ($$($$py --version))"; \
	rm -rf $(VENV); $$py -m venv $(VENV) && $(PY) -m pip install $(PIP_FLAGS) --upgrade pip && touch $@

$(VENV)/.ok-core: $(VENV)/.ok-python pyproject.toml
	$(PY) -m pip install $(PIP_FLAGS) -e .
	@touch $@

$(VENV)/.ok-dev: $(VENV)/.ok-core pyproject.toml
	$(PY) -m pip install $(PIP_FLAGS) -e '.[dev,spark]'
	@touch $@

$(VENV)/.ok-bench: $(VENV)/.ok-dev pyproject.toml
	$(PY) -m pip install $(PIP_FLAGS) -e '.[dev,bench]'
	@touch $@

venv: $(VENV)/.ok-core

demo: $(VENV)/.ok-core
	$(PY) -m bayesmf.demo

test: $(VENV)/.ok-dev
	$(PY) -m pytest -n 2 --dist loadfile -q $(PYTEST_FLAGS)

test-all: $(VENV)/.ok-dev
	$(PY) -m pytest -n 2 --dist loadfile -q -m "" $(PYTEST_FLAGS)

bench: $(VENV)/.ok-bench
	$(PY) -m pytest -q -m slow $(PYTEST_FLAGS)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
