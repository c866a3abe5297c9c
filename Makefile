# The README's two commands: `make run` and `make test`. Everything they need is set up here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8080
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck check bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

## run: set up, then start zeroscale with its embedded defaults (SQLite and local artifacts in .zeroscale/)
run: $(STAMP)
	$(BIN)/zeroscale serve --port $(PORT)

## test: set up, then run the whole suite, plus the linters and the type checker
test: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/mypy
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .zeroscale .mypy_cache .ruff_cache .pytest_cache

## bench: cold-start and warm-invoke latency against baselines measured in the same run
bench: $(STAMP)
	$(BIN)/python bench/latency.py
