"""Shared fixtures: the tiny model factory, an isolated TUNELAB_HOME, and ../shared paths."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny import make_tiny_model, make_tiny_tokenizer, save_tiny_model_dir  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TUNELAB_SHARED", REPO.parent / "shared"))
SHARED_DATA = SHARED / "data"


def shared_file(rel: str) -> Path:
    """Path of a file in ../shared/data, or skip the test with the reason."""
    p = SHARED_DATA / rel
    if not p.exists():
        pytest.skip(f"{p} is absent: ../shared/data is only beside the project checkout in CI")
    return p


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return make_tiny_tokenizer()


@pytest.fixture
def tiny_model(tiny_tokenizer):
    return make_tiny_model(tiny_tokenizer)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch, request):
    """Each test gets its own model store unless it asks for the real one."""
    if request.node.get_closest_marker("real_model"):
        return
    monkeypatch.setenv("TUNELAB_HOME", str(tmp_path / "tunelab_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
