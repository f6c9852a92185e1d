"""Promises 1, 2 and 5: exact resume, atomic checkpoints under SIGKILL, determinism."""

import json
from pathlib import Path

import pytest
import torch

from train_runs import SIGKILLED, adapter, child_env, train, train_losses, tree_hashes, write_config

GOLDEN = Path(__file__).parent / "golden_tiny_lora_losses.json"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model_dir):
    """The uninterrupted run every other run must equal."""
    tmp = tmp_path_factory.mktemp("ref")
    proc = train(write_config(tmp, tiny_model_dir))
    assert proc.returncode == 0, proc.stderr
    return tmp / "runs" / "run"


def test_same_seed_same_losses_and_golden(reference, tmp_path, tiny_model_dir):
    proc = train(write_config(tmp_path, tiny_model_dir))
    assert proc.returncode == 0, proc.stderr
    again = train_losses(tmp_path / "runs" / "run")
    assert again == train_losses(reference)
    # Golden losses of the tiny model; changing them needs a reason in the commit.
    golden = json.loads(GOLDEN.read_text())
    assert [s for s, _, _ in again] == [s for s, _ in golden["steps"]]
    for (_, loss, _), (_, want) in zip(again, golden["steps"], strict=True):
        assert loss == pytest.approx(want, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("stage", ["after_weights", "after_optimizer", "before_marker",
                                   "before_rename", "after_rename"])
def test_sigkill_during_save_then_auto_resume_equals_uninterrupted(stage, reference, tmp_path,
                                                                    tiny_model_dir):
    cfg = write_config(tmp_path, tiny_model_dir)
    ckpts = tmp_path / "runs" / "run" / "checkpoints"
    killed = train(cfg, env=child_env(TUNELAB_FAILPOINT=f"{stage}@6"))
    assert killed.returncode == SIGKILLED, killed.stderr
    good = "step-00000006" if stage == "after_rename" else "step-00000003"
    before = tree_hashes(ckpts / "step-00000003")
    assert before and (ckpts / good / "COMPLETE").is_file()

    resumed = train(cfg, "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr
    assert f"from {good}" in resumed.stderr
    assert tree_hashes(ckpts / "step-00000003") == before  # the good checkpoint was not touched
    assert not [p.name for p in ckpts.iterdir() if p.name.startswith(".tmp")]  # no strays remain
    run = tmp_path / "runs" / "run"
    assert train_losses(run) == train_losses(reference)  # same losses, same rows, same order
    want, got = adapter(reference), adapter(run)
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
