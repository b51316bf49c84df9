# The two commands: `make run` and `make test`. Both create .venv and install on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

export MLFLOW_DISABLE_TELEMETRY := true
export OMP_NUM_THREADS ?= 2

.PHONY: install run test test-fast lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: the CPU wheel from this machine's disk, never a multi-GB CUDA build
	$(PIP) install torch==2.13.0
	$(PIP) install -U pip
	$(PIP) install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# metarl up (local Ray head + job server + API), submit the demo job, watch it live, print the
# model URI and how to load it; the service keeps running (`.venv/bin/metarl down` stops it)
run: install
	$(BIN)/metarl demo

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check algorithms workers service tests benchmarks

bench: install
	$(BIN)/python benchmarks/maml_update.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
