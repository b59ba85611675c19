# Quorum — every target does its own set-up (virtual environment + dependencies).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test test-sqlite lint serve bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade "pip<26"
	$(VENV)/bin/pip install -q -e '.[safety,dev]'
	touch $@

## the main job: the whole loop on the embedded default (SQLite), offline
demo: setup
	$(VENV)/bin/quorum demo

## the test suite, on SQLite and on PostgreSQL (the machine's server, or an embedded one)
test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-sqlite: setup
	QUORUM_TEST_BACKENDS=sqlite $(PY) -m pytest -q $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check backend ml crowd tests bench

serve: setup
	$(VENV)/bin/quorum serve

clean:
	rm -rf var .pytest_cache
