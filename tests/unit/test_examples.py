"""Every shipped example config loads and validates (found recursively)."""

from pathlib import Path

import pytest

from tunelab.config import load_config

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").rglob("*.yaml"))


def test_there_are_examples():
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_config_is_valid(path):
    cfg = load_config(path)
    assert cfg.data.train
