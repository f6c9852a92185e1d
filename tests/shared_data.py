"""Where ../shared/data is, and a helper that skips a test with the reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TUNELAB_SHARED", REPO.parent / "shared"))
SHARED_DATA = SHARED / "data"


def shared_file(rel: str) -> Path:
    """Path of a file in ../shared/data, or skip the test with the reason."""
    p = SHARED_DATA / rel
    if not p.exists():
        pytest.skip(f"{p} is absent: ../shared/data is only beside the project checkout in CI")
    return p
