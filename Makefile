# convexp front door. `make train` and `make test` each set up .venv first (idempotent).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Data: the configs say `root: auto`, which finds full MNIST and the course's mnist-varres in
# $(CONVEXP_DATA)/ or ../shared/data/, or else uses data/ (MNIST downloaded there when online);
# see convexp/data_roots.py. Tests read CONVEXP_DATA. The quick study runs on mnist-mini.
DATA_DIR  := $(or $(CONVEXP_DATA),$(wildcard ../shared/data))
MINI      := $(if $(DATA_DIR),$(DATA_DIR)/mnist-mini,data/mnist-mini)
ARGS ?=

.PHONY: setup test test-fast train bench reproduce reproduce-mini clean-runs

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
	$(BIN)/pip install --quiet -e '.[dev,ray,log,export,search]' 2>&1 | grep -v '^WARNING: Location' || true
	$(BIN)/python -c "import convexp.cli, torch, torchvision, ray, tensorboard, mlflow, onnxruntime, optuna" && touch $@

# Tests run in parallel processes, one per core (at most 4), one torch thread each; tests that
# share a module fixture (an xdist_group) stay in one process; in tests/conftest.py's order,
# slowest first. `pytest` alone runs them one by one.
PARALLEL := -n auto --maxprocesses 4 --dist loadgroup --no-loadscope-reorder

test: setup
	$(BIN)/python -m pytest -q $(PARALLEL) $(ARGS)

test-fast: setup
	$(BIN)/python -m pytest -q $(PARALLEL) -m "not slow" $(ARGS)

train: setup
	$(BIN)/convexp train-mnist --config configs/train-mnist.yaml $(ARGS)

bench: setup
	$(BIN)/convexp bench --config configs/bench.yaml $(ARGS)

# The whole study on the real data into runs/<ts>-reproduce, then report.html and report.md
# beside it. Interrupted, it goes on with `convexp resume runs/<ts>-reproduce`.
reproduce: setup
	$(BIN)/convexp reproduce --config configs/reproduce.yaml $(ARGS)
	$(BIN)/convexp report "$$(ls -td runs/*-reproduce* | head -n 1)"  # the newest study

# The same study on mnist-mini (8,000 digits) and a varres set built from it: a smoke run.
reproduce-mini: setup
	$(BIN)/convexp reproduce --config configs/reproduce.yaml --name mini --set mnist_root=$(MINI) \
		--set val_split=0.2 --set varres_root=build $(ARGS)
	$(BIN)/convexp report "$$(ls -td runs/*-reproduce-mini* | head -n 1)"

clean-runs:
	rm -rf runs/2*
