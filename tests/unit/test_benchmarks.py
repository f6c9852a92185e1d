"""Each benchmark script stops with one line naming the install command when a package it
needs is missing, before any work (no traceback, no 25-minute run ending in one).

A package is made unimportable in the child process by ``sys.modules[name] = None``; the
script is run as ``python benchmarks/NAME.py`` runs it (its folder first on sys.path).
The benchmarks themselves are not run here.
"""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = 'pip install -e ".[bench]"  (or: make bench)'
CORE = "pip install -e .  (or: make install)"
DEV = 'pip install -e ".[dev]"  (or: make install-dev)'  # the review screenshots need playwright


def run_without(script: str, module: str, *args: str) -> subprocess.CompletedProcess:
    path = REPO / "benchmarks" / script
    code = (f"import runpy, sys; sys.modules[{module!r}] = None; "
            f"sys.path.insert(0, {str(path.parent)!r}); sys.argv = [{str(path)!r}, *{list(args)!r}]; "
            f"runpy.run_path({str(path)!r}, run_name='__main__')")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=REPO)


@pytest.mark.parametrize(("script", "module", "install"), [
    ("train_speed.py", "trl", BENCH),
    ("train_speed.py", "datasets", BENCH),
    ("train_speed.py", "tunelab", CORE),
    ("data_gate.py", "tunelab", CORE),
    ("eval_speed.py", "tunelab", CORE),
    ("drift_alarms.py", "tunelab", CORE),
    ("review_screenshots.py", "playwright", DEV),
])
def test_a_missing_package_is_one_line_naming_the_install(script, module, install):
    proc = run_without(script, module, *(["--rows", "256"] if script == "train_speed.py" else []))
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert module in lines[0] and lines[0].endswith(install), lines[0]


def test_tunelab_alone_needs_no_bench_extra(tmp_path):
    # --peers none trains tunelab only: no TRL. The absent --data stops it before any work.
    proc = run_without("train_speed.py", "trl", "--peers", "none", "--data", str(tmp_path / "absent.json"))
    assert proc.returncode != 0 and BENCH not in proc.stderr
