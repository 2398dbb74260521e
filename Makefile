# convexp front door. `make train` and `make test` each set up .venv first (idempotent).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Where the real MNIST digits are: tests read CONVEXP_DATA; train uses its mnist-mini when set.
DATA_ROOT := $(if $(CONVEXP_DATA),--set data.root=$(CONVEXP_DATA)/mnist-mini,)
ARGS ?=

.PHONY: setup test test-fast train bench reproduce clean-runs

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
	$(BIN)/pip install --quiet -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
	$(BIN)/python -c "import convexp.cli, torch, torchvision" && touch $@

test: setup
	$(BIN)/python -m pytest -q $(ARGS)

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" $(ARGS)

train: setup
	$(BIN)/convexp train-mnist --config configs/train-mnist.yaml $(DATA_ROOT) $(ARGS)

bench: setup
	$(BIN)/convexp bench --config configs/bench.yaml $(ARGS)

clean-runs:
	rm -rf runs/2*
