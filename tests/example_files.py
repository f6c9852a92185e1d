"""Which files under ``examples/`` are which, for the tests that load and run them all.

* ``*.accelerate.yaml``: `accelerate launch` configs, read by accelerate's own reader.
* ``serve.yaml`` and ``*.serve.yaml``: `tunelab serve` configs (``load_serve_settings``).
* every other ``*.yaml``: a run config (``load_config``).

A run config beside a ``make_data.py`` reads data that script makes at run time from
``../shared/data`` (``python make_data.py data --shared DIR`` in a work folder holding a
copy of the config, as the example's ``run.sh`` does); ``prepared`` makes it so for a test.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shared_data import SHARED_DATA

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
ACCELERATE = sorted(EXAMPLES_DIR.rglob("*.accelerate.yaml"))
SERVE = sorted(p for p in EXAMPLES_DIR.rglob("*.yaml")
               if p.name == "serve.yaml" or p.name.endswith(".serve.yaml"))
CONFIGS = sorted(p for p in EXAMPLES_DIR.rglob("*.yaml") if p not in ACCELERATE and p not in SERVE)
MAKE_DATA = "make_data.py"


def made_at_run_time(config: Path) -> bool:
    """Whether the config's data is written by a ``make_data.py`` beside it."""
    return (config.parent / MAKE_DATA).is_file()


def prepared(config: Path, work: Path) -> Path:
    """The config to load: itself, or a copy in ``work`` beside the data its script made.

    Skips the test, with the reason, when ``../shared/data`` is absent.
    """
    if not made_at_run_time(config):
        return config
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{config.name}'s data is made from {SHARED_DATA}, which is absent here")
    work.mkdir(parents=True, exist_ok=True)
    made = subprocess.run([sys.executable, str(config.parent / MAKE_DATA), "data",
                           "--shared", str(SHARED_DATA)],
                          cwd=work, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    return Path(shutil.copy(config, work / config.name))
