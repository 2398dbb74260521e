# convexp front door. `make train` and `make test` each set up .venv first (idempotent).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Where real MNIST digits are: tests read the environment variable CONVEXP_DATA; train and
# reproduce use $(CONVEXP_DATA)/mnist-mini, or ../shared/data/mnist-mini when it is there,
# or else the configs' data/ (downloaded when online).
DATA_DIR  := $(or $(CONVEXP_DATA),$(wildcard ../shared/data))
DATA_ROOT := $(if $(DATA_DIR),--set data.root=$(DATA_DIR)/mnist-mini,)
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

# The whole study into runs/<ts>-reproduce, then its report.html and report.md beside it.
REPRO_DATA := $(if $(DATA_DIR),--set mnist_root=$(DATA_DIR)/mnist-mini,)
reproduce: setup
	$(BIN)/convexp reproduce --config configs/reproduce.yaml $(REPRO_DATA) $(ARGS)
	$(BIN)/convexp report "$$(ls -d runs/*-reproduce* | tail -n 1)"

clean-runs:
	rm -rf runs/2*
