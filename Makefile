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

.PHONY: all setup plugin test test-slow demo demo-scaling bench browser debian-packages clean

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

# The report test opens the page in headless Chromium; without it (or apt) that one test skips.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  sudo=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  { $$sudo apt-get update -q && $$sudo apt-get install -y -q chromium; } >/dev/null 2>&1 || \
	  echo "chromium could not be installed: the report's browser test will skip"; }

# `make test` leaves out tests marked slow (deploying a pretrained universal model, extra
# AOTInductor variants: minutes each); `make test-slow` runs them
test: setup browser
	$(BIN)/python -m pytest -q -m "not slow" --durations=15 tests

test-slow: setup
	$(BIN)/python -m pytest -q -m slow tests

# the benchmark end to end on shipped data: deploy, run, analyse, report
demo: setup
	$(BIN)/lmpbench demo --out demo_output

# deploy targets and multi-rank runs of a tiny CuAu model
demo-scaling: setup
	$(BIN)/lmpbench demo-scaling --out demo_scaling_output

bench: setup
	$(BIN)/python benchmarks/pair_overhead.py
	$(BIN)/python benchmarks/deploy_speed.py
	$(BIN)/python benchmarks/analysis_speed.py
	$(BIN)/python benchmarks/collapse_overhead.py

clean:
	rm -rf $(VENV) build demo_output demo_scaling_output .pytest_cache
