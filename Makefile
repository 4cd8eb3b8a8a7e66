# Set-up and entry points. `make demo` and `make test` set up what they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
DEMO_DIR := outputs/demo/$(shell date +%Y-%m-%d_%H-%M-%S)
FVR_DIR := multirun/found_vs_random/$(shell date +%Y-%m-%d_%H-%M-%S)
PARETO_DIR := multirun/pareto/$(shell date +%Y-%m-%d_%H-%M-%S)
# Graphviz's dot draws the cell pictures: any dot on PATH will do, else apt installs /usr/bin/dot.
DOT := $(or $(shell command -v dot),/usr/bin/dot)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup demo test test-slow bench found-vs-random pareto clean

$(VENV)/.installed: requirements.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt pytest pytest-xdist import-linter
	touch $@

$(FASHION_MNIST):
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get install -y -qq dataset-fashion-mnist

$(DOT):
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get install -y -qq graphviz

setup: $(VENV)/.installed $(FASHION_MNIST) $(DOT)

# DEVICE=cuda runs the same demo on a GPU (make bench DEVICE=cuda likewise times the steps there).
DEVICE_OVERRIDE := $(if $(DEVICE),device=$(DEVICE))

demo: setup
	OMP_NUM_THREADS=$$(nproc) $(PY) train_search.py experiment=fashion_mnist_cpu $(DEVICE_OVERRIDE) \
		hydra.run.dir=$(DEMO_DIR)/search
	OMP_NUM_THREADS=$$(nproc) $(PY) train_final.py experiment=fashion_mnist_cpu $(DEVICE_OVERRIDE) \
		genotype=$(DEMO_DIR)/search hydra.run.dir=$(DEMO_DIR)/final
	$(PY) -m darts.summary $(DEMO_DIR)/search $(DEMO_DIR)/final

# The found cells of 3 searches against 5 random cells of the same space, same final training
# (conf/experiment/found_vs_random.yaml), then the report: $(FVR_DIR)/report.md and report.png.
found-vs-random: setup
	OMP_NUM_THREADS=$$(nproc) $(PY) -m darts.found_vs_random --dir $(FVR_DIR)

# Searches over the cost weight (conf/experiment/pareto_fashion_mnist.yaml), each found cell trained, then
# the accuracy-against-cost table and Pareto plots: $(PARETO_DIR)/report.md, pareto_*.png. SWEEP= picks the sweep.
pareto: setup
	OMP_NUM_THREADS=$$(nproc) $(PY) -m darts.pareto --dir $(PARETO_DIR) $(if $(SWEEP),--sweep $(SWEEP))

# The step benchmarks in one table (bench/run_all.py); ORIGINAL=path/to/darts/cnn adds the original code's step.
bench: setup
	OMP_NUM_THREADS=$$(nproc) $(PY) bench/run_all.py --out outputs/bench/$(shell date +%Y-%m-%d_%H-%M-%S) \
		$(if $(ORIGINAL),--original $(ORIGINAL)) $(if $(DEVICE),--device $(DEVICE))

# Two or more workers (pytest-xdist, one per core, a file per worker at a time; tests/conftest.py keeps each to one thread).
test: setup
	$(PY) -m pytest -q -n auto --dist loadfile

test-slow: setup
	$(PY) -m pytest -q -m slow

clean:
	rm -rf outputs multirun
