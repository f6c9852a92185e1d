# Two commands a new user needs: `make quickstart` (the main job on the default model)
# and `make test` (the suite). Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch first, pinned: here 2.13.0 is a local CPU build; a bare `torch` would pull CUDA.
TORCH  ?= torch==2.13.0

.PHONY: install install-dev quickstart test check lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed
# Debian's chromium for the review app's browser tests (Playwright drives it; it never
# downloads a browser of its own). `make test` fails without it instead of skipping.
install-dev: $(VENV)/.installed-dev
	test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium)

quickstart: install
	$(BIN)/tunelab models pull smollm2-135m-instruct
	$(BIN)/tunelab quickstart

# The suite also runs the llama.cpp backend: pip builds llama-cpp-python from source
# (a C++ compiler and cmake; CMAKE_BUILD_PARALLEL_LEVEL: the build's parallel jobs).
$(VENV)/.installed-llamacpp: $(VENV)/.installed-dev pyproject.toml
	CMAKE_BUILD_PARALLEL_LEVEL=2 $(BIN)/python -m pip install -q -e ".[dev,llamacpp]"
	touch $@

# TUNELAB_REQUIRE_*: the browser and llama.cpp tests fail instead of skipping when their
# part is missing, so a broken install cannot pass as skipped tests.
test: install-dev $(VENV)/.installed-llamacpp
	TUNELAB_REQUIRE_BROWSER=1 TUNELAB_REQUIRE_LLAMACPP=1 $(BIN)/python -m pytest -q

check: install-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q tests/unit/test_layering.py
	$(BIN)/mypy  # settings and files in pyproject.toml [tool.mypy]

bench: install-dev
	$(BIN)/python -m pip install -q -e ".[bench]"
	$(BIN)/python benchmarks/train_speed.py --rows 256

clean:
	rm -rf $(VENV) build dist src/*.egg-info
