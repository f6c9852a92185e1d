#!/bin/sh
# Installs tunelab into a virtual environment: the image runs this (Dockerfile), and so does
# tests/integration/test_container_install.py in a fresh venv, so the two cannot drift apart.
#
#   docker/install.sh torch   VENV      make VENV (if missing) and install torch alone
#   docker/install.sh project VENV SRC  install the project at SRC, torch held where it is
#
# Two steps so the image keeps torch (the largest layer) cached while the source changes.
# Settings, from the environment (the Dockerfile passes its build args):
#   TORCH_REQUIREMENT  default torch==2.13.0, the version the test suite passes on
#   TORCH_INDEX_URL    default empty: pip's own indexes; the image gives the PyTorch CPU
#                      index, since a bare `torch` from PyPI pulls the CUDA build (GBs)
#   TUNELAB_EXTRAS     optional extras, comma-separated (e.g. llamacpp); default none
#   PYTHON             the interpreter that makes the venv; default python3
set -eu

step=${1:?usage: install.sh torch VENV | install.sh project VENV SRC}
venv=${2:?usage: install.sh torch VENV | install.sh project VENV SRC}

case "$step" in
  torch)
    if [ ! -x "$venv/bin/python" ]; then
      "${PYTHON:-python3}" -m venv "$venv"
    fi
    if [ -n "${TORCH_INDEX_URL:-}" ]; then
      "$venv/bin/python" -m pip install --index-url "$TORCH_INDEX_URL" \
        "${TORCH_REQUIREMENT:-torch==2.13.0}"
    else
      "$venv/bin/python" -m pip install "${TORCH_REQUIREMENT:-torch==2.13.0}"
    fi
    ;;
  project)
    src=${3:?usage: install.sh project VENV SRC}
    # Hold torch at the build just installed (e.g. 2.13.0+cpu): an extra asking for torch
    # must not swap it for a CUDA wheel from PyPI.
    constraints=$(mktemp)
    "$venv/bin/python" -c \
      'import importlib.metadata as m; print("torch==" + m.version("torch"))' >"$constraints"
    case ",${TUNELAB_EXTRAS:-}," in
      *,llamacpp,*)
        # llama-cpp-python builds llama.cpp from source: it needs a C++ compiler and cmake,
        # which the slim image lacks (they stay in the image: about 250 MB more)
        # a portable build: llama.cpp's default is tuned to the building machine's CPU, and
        # an image built on an AVX-512 host would stop with "illegal instruction" elsewhere
        CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}"
        export CMAKE_ARGS
        if ! command -v c++ >/dev/null 2>&1 || ! command -v cmake >/dev/null 2>&1; then
          if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
            apt-get update
            apt-get install -y --no-install-recommends build-essential cmake
            rm -rf /var/lib/apt/lists/*
          else
            echo "install.sh: the llamacpp extra builds llama.cpp from source; install a" \
              "C++ compiler and cmake first" >&2
            exit 2
          fi
        fi
        ;;
    esac
    target=$src
    if [ -n "${TUNELAB_EXTRAS:-}" ]; then
      target="${src}[${TUNELAB_EXTRAS}]"
    fi
    "$venv/bin/python" -m pip install --constraint "$constraints" "$target"
    rm -f "$constraints"
    # the console script is what the entry point runs; fail the build here, not at start
    "$venv/bin/tunelab" --help >/dev/null
    ;;
  *)
    echo "install.sh: unknown step '$step' (torch or project)" >&2
    exit 2
    ;;
esac
