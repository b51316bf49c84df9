# The two commands: `make run` and `make test`. Both create .venv and install on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/python -m pip --disable-pip-version-check
# options for `metarl demo` (make run ARGS="--port 8001 --dashboard-port 8266")
ARGS   ?=
# options for pytest (make test PYTEST_ARGS='-m "not topology"' skips the cluster-topology tests)
PYTEST_ARGS ?=

export MLFLOW_DISABLE_TELEMETRY := true
export OMP_NUM_THREADS ?= 2

.PHONY: install run test test-fast lint bench clean

$(STAMP): pyproject.toml
	@echo "==> [1/4] virtualenv $(VENV) ($(PYTHON))"
	$(PYTHON) -m venv $(VENV)
	@echo "==> [2/4] torch 2.13.0, CPU build (pinned: never a multi-GB CUDA build)"
	$(PIP) install torch==2.13.0
	@echo "==> [3/4] pip"
	$(PIP) install -U pip
	@echo "==> [4/4] metarl and its dependencies (Ray, MLflow, gymnasium, MuJoCo, Meta-World, FastAPI; about 2 GB)"
	$(PIP) install -e '.[dev,cluster]'
	@touch $(STAMP)
	@echo "==> installed into $(VENV)"

install: $(STAMP)

# metarl up (local Ray head + job server + API), submit the demo job, watch it live, print the
# model URI and how to load it; the service keeps running (`.venv/bin/metarl down` stops it)
run: install
	$(BIN)/metarl demo $(ARGS)

test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check algorithms workers service tests benchmarks

# the benchmarks, with the RLlib peer that the sampling benchmark compares against
bench: install
	@echo "==> the rllib extra (RLlib, the sampling benchmark's peer)"
	$(PIP) install -e '.[dev,cluster,rllib]'
	$(BIN)/python benchmarks/maml_update.py
	$(BIN)/python benchmarks/sampling.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
