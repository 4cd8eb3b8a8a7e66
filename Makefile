# Set-up and entry points. `make demo` and `make test` set up what they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
DEMO_DIR := outputs/demo/$(shell date +%Y-%m-%d_%H-%M-%S)
# Graphviz's dot draws the cell pictures: any dot on PATH will do, else apt installs /usr/bin/dot.
DOT := $(or $(shell command -v dot),/usr/bin/dot)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup demo test test-slow bench clean

$(VENV)/.installed: requirements.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt pytest import-linter
	touch $@

$(FASHION_MNIST):
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get install -y -qq dataset-fashion-mnist

$(DOT):
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get install -y -qq graphviz

setup: $(VENV)/.installed $(FASHION_MNIST) $(DOT)

demo: setup
	OMP_NUM_THREADS=$$(nproc) $(PY) train_search.py experiment=fashion_mnist_cpu hydra.run.dir=$(DEMO_DIR)/search
	OMP_NUM_THREADS=$$(nproc) $(PY) train_final.py experiment=fashion_mnist_cpu genotype=$(DEMO_DIR)/search \
		hydra.run.dir=$(DEMO_DIR)/final
	$(PY) -m darts.summary $(DEMO_DIR)/search $(DEMO_DIR)/final

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

clean:
	rm -rf outputs multirun
