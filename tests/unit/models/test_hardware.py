"""model.dtype auto follows a measurement, not the checkpoint or an assumption."""

import torch

from tunelab.models import hardware


def test_auto_picks_bf16_only_when_measured_faster(monkeypatch):
    monkeypatch.setattr(hardware, "bf16_speedup", lambda: 0.2)
    assert hardware.resolve_dtype("auto") == "float32"
    monkeypatch.setattr(hardware, "bf16_speedup", lambda: 2.0)
    assert hardware.resolve_dtype("auto") == "bfloat16"
    assert hardware.resolve_dtype("float16") == "float16"


def test_speedup_is_a_real_measurement_that_leaves_the_global_rng_alone():
    torch.manual_seed(3)
    want = torch.rand(4)
    torch.manual_seed(3)
    x = hardware.bf16_speedup.__wrapped__(n=128, reps=2)
    assert 0.0 < x < 100.0
    assert torch.equal(torch.rand(4), want)  # the adapter init after loading sees the seeded RNG


def test_auto_loads_the_measured_dtype_not_the_checkpoint_dtype(tiny_model_dir, monkeypatch):
    from tunelab.models.loading import load_causal_lm

    monkeypatch.setattr(hardware, "bf16_speedup", lambda: 0.2)
    assert load_causal_lm(tiny_model_dir, dtype="auto").dtype == torch.float32
