PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-quick faults check clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

mosquitto-installed:
	@command -v mosquitto >/dev/null 2>&1 || /usr/sbin/mosquitto -h >/dev/null 2>&1 || \
	  ( command -v apt-get >/dev/null 2>&1 && (apt-get update -qq && apt-get install -y -qq mosquitto) ) || \
	  ( echo "mosquitto is missing: install it (Debian/Ubuntu: apt-get install mosquitto; macOS: brew install mosquitto)"; exit 1 )

# DEMO_ARGS passes options, e.g. DEMO_ARGS=--insecure (the plain mode, no certificates).
demo: $(STAMP) mosquitto-installed
	$(BIN)/transport-informer demo $(DEMO_ARGS)

test: $(STAMP) mosquitto-installed
	$(BIN)/python -m pytest --cov --cov-report=term --cov-fail-under=85 $(PYTEST_ARGS)

# The benchmarks (docs/benchmarks.md), then their charts. BENCH_ARGS is passed to each, so
# `make bench-quick` (BENCH_ARGS=--quick) is the same set in a few minutes; quick runs write
# bench/results/*-quick.json and leave the full results alone.
bench: $(STAMP) mosquitto-installed
	$(BIN)/python bench/ingest.py $(BENCH_ARGS)
	$(BIN)/python bench/ingest.py --database postgresql $(BENCH_ARGS)
	$(BIN)/python bench/storage.py $(BENCH_ARGS)
	$(BIN)/python bench/dashboards.py $(BENCH_ARGS)
	$(BIN)/python bench/flood.py $(BENCH_ARGS)
	$(BIN)/python bench/overview_load.py --compare ed68964 $(BENCH_ARGS)
	$(BIN)/python bench/rollout.py $(BENCH_ARGS)
	$(BIN)/python bench/fanout.py $(BENCH_ARGS)
	$(BIN)/python bench/fleet_scale.py $(BENCH_ARGS)
	$(BIN)/python bench/charts.py

bench-quick:
	$(MAKE) bench BENCH_ARGS=--quick

# The fault matrix (docs/faults.md): every row, about 9 minutes on 2 cores. FAULTS_ARGS
# passes options, e.g. FAULTS_ARGS="--rows hub-sigkill,etcd --quick".
faults: $(STAMP) mosquitto-installed
	$(BIN)/python bench/faults.py $(FAULTS_ARGS)

check: $(STAMP)
	$(BIN)/ruff format --check app tests bench
	$(BIN)/ruff check app tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
