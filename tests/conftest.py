"""Shared fixtures: the tiny model factory, an isolated TUNELAB_HOME, ../shared paths, and a
throwaway PostgreSQL server (``postgres_url``, ``fresh_postgres_url``: tests/pg.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from pg import fresh_postgres_url, postgres_url  # noqa: E402,F401 - fixtures, re-exported
from shared_data import SHARED_DATA, shared_file  # noqa: E402,F401 - re-exported
from tiny import make_tiny_model, make_tiny_tokenizer, save_tiny_model_dir  # noqa: E402


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return make_tiny_tokenizer()


@pytest.fixture
def tiny_model(tiny_tokenizer):
    return make_tiny_model(tiny_tokenizer)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture(scope="session")
def lively_model_dir(tmp_path_factory) -> Path:
    """A tiny model folder whose answers depend on the prompt (see ``save_tiny_model_dir``)."""
    return save_tiny_model_dir(tmp_path_factory.mktemp("lively") / "lively-llama", lively=True)


@pytest.fixture
def default_model():
    """The real default model, pulled into the store (for ``real_model`` tests); skips if it cannot be."""
    from tunelab.errors import ModelError
    from tunelab.models.catalog import DEFAULT_MODEL
    from tunelab.models.pull import pull

    try:
        return pull(DEFAULT_MODEL)
    except ModelError as e:
        pytest.skip(f"cannot pull {DEFAULT_MODEL}: {e.message}")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch, request):
    """Each test gets its own model store unless it asks for the real one."""
    if request.node.get_closest_marker("real_model"):
        return
    monkeypatch.setenv("TUNELAB_HOME", str(tmp_path / "tunelab_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def umask_027():
    """A umask under which both 0600 and a hard-coded 0644 are wrong (file-mode tests)."""
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)
