# lmpbench: `make demo` and `make test` install whatever is missing first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
JOBS ?= $(shell nproc)
STAMP := $(VENV)/.lmpbench-installed
PLUGIN := $(VENV)/share/lmpbench/plugin/mlffplugin.so
PLUGIN_SOURCES := $(wildcard pair_styles/*.cpp pair_styles/*.h) pair_styles/CMakeLists.txt
DEBIAN_PACKAGES := cmake g++ make

.PHONY: all setup plugin test test-slow demo bench debian-packages clean

all: setup

setup: $(PLUGIN)

# Debian packages the plugin build needs, installed only when a tool is missing.
debian-packages:
	@missing=""; for tool in cmake g++ make; do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages ($(DEBIAN_PACKAGES)) for:$$missing"; \
	  sudo=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  $$sudo apt-get update -q && $$sudo apt-get install -y -q $(DEBIAN_PACKAGES); \
	fi

# torch first: an unpinned torch pulled in by another package would be a CUDA build of several GB.
# PYTHONWARNINGS hides the notice setuptools prints on every editable install ("Editable installation").
$(STAMP): requirements.txt pyproject.toml | debian-packages
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip || true
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps openmmtools==0.27.0  # only its alanine-dipeptide input files are used
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/pip install -q --no-deps -e .
	touch $@

$(PLUGIN): $(STAMP) $(PLUGIN_SOURCES)
	$(BIN)/lmpbench plugin build -j $(JOBS)

plugin: $(PLUGIN)

# `make test` leaves out tests marked slow (deploying a pretrained universal model, extra
# AOTInductor variants: minutes each); `make test-slow` runs them
test: setup
	$(BIN)/python -m pytest -q -m "not slow" tests

test-slow: setup
	$(BIN)/python -m pytest -q -m slow tests

demo: setup
	$(BIN)/lmpbench demo --out demo_output

bench: setup
	$(BIN)/python benchmarks/pair_overhead.py
	$(BIN)/python benchmarks/deploy_speed.py
	$(BIN)/python benchmarks/analysis_speed.py
	$(BIN)/python benchmarks/collapse_overhead.py

clean:
	rm -rf $(VENV) build demo_output .pytest_cache
