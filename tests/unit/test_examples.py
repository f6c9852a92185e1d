"""Every shipped example config loads and validates (found recursively).

``*.accelerate.yaml`` files are `accelerate launch` configs, not tunelab configs: they
are loaded by accelerate's own config reader instead.
"""

from pathlib import Path

import pytest

from tunelab.config import load_config

ROOT = Path(__file__).resolve().parents[2] / "examples"
ACCELERATE = sorted(ROOT.rglob("*.accelerate.yaml"))
EXAMPLES = sorted(p for p in ROOT.rglob("*.yaml") if p not in ACCELERATE)


def test_there_are_examples():
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_config_is_valid(path):
    cfg = load_config(path)
    assert cfg.data.train


@pytest.mark.parametrize("path", ACCELERATE, ids=[p.name for p in ACCELERATE])
def test_accelerate_config_is_valid(path):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(path))
    assert cfg.num_processes >= 2 and cfg.distributed_type.value == "MULTI_GPU"
