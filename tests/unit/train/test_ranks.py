"""What differs between data-parallel processes: sharding launches are refused."""

import pytest

from tunelab.errors import TrainingError
from tunelab.train.distributed import SINGLE
from tunelab.train.ranks import open_on_rank0, refuse_sharding


@pytest.mark.parametrize("env", ["ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"])
def test_a_sharding_launch_is_refused_with_the_alternative(monkeypatch, env):
    monkeypatch.setenv(env, "true")
    with pytest.raises(TrainingError) as ei:
        refuse_sharding()
    assert "ddp.accelerate.yaml" in str(ei.value)


def test_plain_launch_and_single_process_open(monkeypatch, tmp_path):
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    refuse_sharding()
    assert open_on_rank0(SINGLE, lambda: (None, tmp_path)) == (tmp_path, None)
