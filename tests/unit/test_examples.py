"""Every shipped example config loads and validates (found recursively).

``*.accelerate.yaml`` files are `accelerate launch` configs, not tunelab configs: they
are loaded by accelerate's own config reader instead; ``serve.yaml`` and ``*.serve.yaml``
files are `tunelab serve` configs (tests/example_files.py sorts them). The data the configs name ships
in ``examples/data/``, written by ``examples/data/make_data.py``; training each example
is tested in ``tests/integration/test_examples_train.py``. An example may read the public
data sets in ``../shared/data`` beside the checkout instead (SST-2 for the classifier), or
make its data from them with a ``make_data.py`` beside it (the feedback loop); its data
test skips, with the reason, where that folder is absent.
"""

import importlib.util
from pathlib import Path

import pytest

from example_files import ACCELERATE, SERVE, prepared
from example_files import CONFIGS as EXAMPLES
from example_files import EXAMPLES_DIR as ROOT
from shared_data import SHARED_DATA
from tunelab.config import load_config
from tunelab.config.serve import load_serve_settings


def test_there_are_examples():
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_config_is_valid(path):
    cfg = load_config(path)
    assert cfg.data.train


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_data_ships_with_it(path, tmp_path):
    cfg = load_config(prepared(path, tmp_path))
    sources = [*cfg.data.train, *cfg.data.validation]
    for phase in cfg.phases:
        sources += [s for key in ("train", "validation") for s in phase.data.get(key, [])]
    paths = [Path(s.path if hasattr(s, "path") else s["path"]) for s in sources]
    shared = [p for p in paths if p.is_relative_to(SHARED_DATA.resolve())]
    if shared and not SHARED_DATA.is_dir():
        pytest.skip(f"{path.name} reads {SHARED_DATA}, which is absent here")
    missing = [str(p) for p in paths if not p.is_file()]
    assert paths and not missing, f"{path.name} names data that is not there: {missing}"


def test_shipped_data_is_what_make_data_writes():
    spec = importlib.util.spec_from_file_location("make_data", ROOT / "data" / "make_data.py")
    make_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_data)
    for name, text in make_data.build().items():
        shipped = (ROOT / "data" / name).read_text(encoding="utf-8")
        assert shipped == text, f"examples/data/{name} differs; run python examples/data/make_data.py"


@pytest.mark.parametrize("path", SERVE, ids=[str(p.relative_to(ROOT)) for p in SERVE])
def test_serve_config_is_valid(path):
    settings = load_serve_settings(path)
    assert settings.models


@pytest.mark.parametrize("path", ACCELERATE, ids=[p.name for p in ACCELERATE])
def test_accelerate_config_is_valid(path):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(path))
    assert cfg.num_processes >= 2 and cfg.distributed_type.value == "MULTI_GPU"
