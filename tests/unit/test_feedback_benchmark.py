"""benchmarks/feedback_writes.py stops with one line naming the install command when a
package it needs is missing, before any server or database starts (as every benchmark
does, tests/unit/test_benchmarks.py). Its writers and check run in
tests/integration/test_serve_feedback.py."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "feedback_writes.py"


@pytest.mark.parametrize("module", ["tunelab", "openai"])
def test_a_missing_package_is_one_line_naming_the_install(module):
    code = (f"import runpy, sys; sys.modules[{module!r}] = None; "
            f"sys.path.insert(0, {str(SCRIPT.parent)!r}); sys.argv = [{str(SCRIPT)!r}]; "
            f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert module in lines[0] and lines[0].endswith("(or: make install-dev)"), lines[0]
