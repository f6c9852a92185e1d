"""Promises 6, 7 and 8: safe loading, no secrets in artifacts, rotation and a full disk."""

import errno
import os
import pickle

import pytest
import torch

from train_runs import SIGKILLED, child_env, train, write_config
from tunelab.cli import exits
from tunelab.errors import TrainingError
from tunelab.train import checkpoint as ck


class _WritesMarker:
    """Unpickling this object runs code: it creates a marker file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_in_a_state_file_is_refused_and_never_runs(tmp_path, tiny_model_dir):
    cfg = write_config(tmp_path, tiny_model_dir)
    assert train(cfg, env=child_env(TUNELAB_FAILPOINT="after_rename@6")).returncode == SIGKILLED
    ckpt = tmp_path / "runs" / "run" / "checkpoints" / "step-00000006"
    marker = tmp_path / "PWNED"
    with open(ckpt / "optimizer.pt", "wb") as f:
        pickle.dump(_WritesMarker(str(marker)), f)
    # the payload is real: plain unpickling would create the marker
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_WritesMarker(str(probe))))
    assert probe.exists()
    proc = train(cfg, "--resume", str(ckpt))
    assert proc.returncode != 0
    assert not marker.exists()


def test_model_with_custom_code_needs_trust_remote_code(tmp_path, tiny_model_dir):
    import json
    import shutil

    model = tmp_path / "custom"
    shutil.copytree(tiny_model_dir, model)
    conf = json.loads((model / "config.json").read_text())
    conf["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (model / "config.json").write_text(json.dumps(conf))
    (model / "modeling_evil.py").write_text("open('PWNED', 'w')\n")
    proc = train(write_config(tmp_path, model))
    assert proc.returncode == exits.MODEL and "trust_remote_code" in proc.stderr
    assert not (tmp_path / "PWNED").exists()


def test_no_secret_reaches_any_written_file(tmp_path, tiny_model_dir):
    canary = "tl-canary-5ecr3t-7f3a9c"
    env = child_env(HF_TOKEN=canary, OPENAI_API_KEY=canary, WANDB_API_KEY=canary,
                    HUGGING_FACE_HUB_TOKEN=canary, TUNELAB_SECRET=canary)
    cfg = write_config(tmp_path, tiny_model_dir, eval_every=3)
    proc = train(cfg, env=env)
    assert proc.returncode == 0, proc.stderr
    assert canary not in proc.stdout + proc.stderr
    written = [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]
    assert len(written) > 10  # checkpoints, metrics, tb events, adapter, tokenizer, summary
    leaks = [str(p) for p in written if canary.encode() in p.read_bytes()]
    assert not leaks


def _fake_ckpt(root, step):
    p = root / ck.checkpoint_name(step)
    p.mkdir(parents=True)
    for f in (*ck.STATE_FILES, ck.COMPLETE):
        (p / f).write_text("x")
    return p


def test_rotation_by_step_number_keeps_incomplete_and_protected(tmp_path):
    for s in (9, 10, 100, 2):
        _fake_ckpt(tmp_path, s)
    (tmp_path / ck.checkpoint_name(200)).mkdir()  # incomplete: not a checkpoint, not rotated
    deleted = ck.rotate(tmp_path, keep_last=2, protect=[2])
    assert deleted == [9]
    assert [s for s, _ in ck.list_checkpoints(tmp_path)] == [2, 10, 100]
    assert ck.remove_strays(tmp_path) == [ck.checkpoint_name(200)]


def test_keep_last_in_a_real_run(tmp_path, tiny_model_dir):
    cfg = write_config(tmp_path, tiny_model_dir, save_every=2, keep_last=2)
    assert train(cfg).returncode == 0
    names = sorted(p.name for p in (tmp_path / "runs" / "run" / "checkpoints").iterdir())
    assert names == ["step-00000006", "step-00000008"]


def test_full_disk_fails_the_save_cleanly_and_keeps_the_previous(tmp_path, tiny_model, monkeypatch):
    opt = torch.optim.AdamW(tiny_model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    first = ck.save_checkpoint(tmp_path, 1, tiny_model, opt, sched, {"result": {}})
    before = {f: (first / f).read_bytes() for f in ck.STATE_FILES}
    real_save = torch.save

    def disk_full(obj, f, *a, **k):
        if str(f).endswith("scheduler.pt"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(ck.torch, "save", disk_full)
    with pytest.raises(OSError):
        ck.save_checkpoint(tmp_path, 2, tiny_model, opt, sched, {"result": {}})
    assert [s for s, _ in ck.list_checkpoints(tmp_path)] == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == [ck.checkpoint_name(1)]  # no partial folder
    assert {f: (first / f).read_bytes() for f in ck.STATE_FILES} == before
    with pytest.raises(TrainingError, match="missing"):
        (first / "rng.pt").unlink()
        ck.load_checkpoint(first, tiny_model, opt, sched)
