"""Promises 3 and 4: refuse changed settings; graceful stop on a real signal."""

import json
import signal
import subprocess
import sys
import time

import pytest

from train_runs import SIGKILLED, child_env, train, train_losses, write_config
from tunelab.cli import exits


def _killed_run(tmp_path, tiny_model_dir, **train_settings):
    cfg = write_config(tmp_path, tiny_model_dir, **train_settings)
    proc = train(cfg, env=child_env(TUNELAB_FAILPOINT="after_rename@6"))
    assert proc.returncode == SIGKILLED
    return cfg


def test_changed_settings_refused_with_each_field_named(tmp_path, tiny_model_dir):
    _killed_run(tmp_path, tiny_model_dir)
    changed = write_config(tmp_path, tiny_model_dir, batch_size=4, seed=7)
    proc = train(changed, "--resume", "auto")
    assert proc.returncode == exits.TRAINING
    assert "batch_size: was 2, now 4" in proc.stderr and "seed: was 0, now 7" in proc.stderr
    assert "--force-resume" in proc.stderr and "Traceback" not in proc.stderr
    # changed data is a changed fingerprint
    with open(tmp_path / "train.jsonl", "a") as f:
        f.write(json.dumps({"messages": [{"role": "user", "content": "x"},
                                         {"role": "assistant", "content": "y"}]}) + "\n")
    proc = train(write_config(tmp_path, tiny_model_dir), "--resume", "auto")
    assert proc.returncode == exits.TRAINING and "data: was" in proc.stderr


def test_force_resume_is_logged_in_the_run(tmp_path, tiny_model_dir):
    _killed_run(tmp_path, tiny_model_dir)
    proc = train(write_config(tmp_path, tiny_model_dir, seed=7), "--resume", "auto", "--force-resume")
    assert proc.returncode == 0, proc.stderr
    recs = [json.loads(x) for x in (tmp_path / "runs" / "run" / "metrics.jsonl").read_text().splitlines()]
    events = [r for r in recs if r["split"] == "event"]
    assert events and events[0]["event"] == "forced_resume" and "seed: was 0, now 7" in events[0]["changes"][0]


@pytest.mark.parametrize("missing", ["optimizer.pt", "scheduler.pt", "rng.pt"])
def test_missing_state_file_is_an_error_not_a_fresh_start(tmp_path, tiny_model_dir, missing):
    cfg = _killed_run(tmp_path, tiny_model_dir)
    ckpt = tmp_path / "runs" / "run" / "checkpoints" / "step-00000006"
    (ckpt / missing).unlink()
    proc = train(cfg, "--resume", str(ckpt))
    assert proc.returncode == exits.TRAINING
    assert f"missing {missing}" in proc.stderr


def _start(cfg):
    return subprocess.Popen([sys.executable, "-m", "tunelab", "train", str(cfg), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())


def _wait_for_step(run, step, proc, timeout=120):
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if metrics.exists() and any(json.loads(x).get("step", 0) >= step and json.loads(x)["split"] == "train"
                                    for x in metrics.read_text().splitlines()):
            return
        time.sleep(0.05)
    raise AssertionError("training did not reach the step in time")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_finishes_the_step_saves_and_exits_0(tmp_path, tiny_model_dir, sig):
    cfg = write_config(tmp_path, tiny_model_dir, max_steps=100000, save_every=0, lr_scheduler="constant")
    run = tmp_path / "runs" / "run"
    proc = _start(cfg)
    _wait_for_step(run, 3, proc)
    sent = time.monotonic()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    elapsed = time.monotonic() - sent
    assert proc.returncode == 0, err
    assert elapsed < 20  # one tiny step plus one save, with a wide margin for a loaded machine
    ckpts = sorted((run / "checkpoints").iterdir())
    assert len(ckpts) == 1 and (ckpts[0] / "COMPLETE").is_file()
    step = int(ckpts[0].name.split("-")[1])
    assert step == train_losses(run)[-1][0]  # the checkpoint is the last finished step
    assert not (run / "summary.json").exists()
    assert "--resume" in out


def test_second_signal_stops_at_once():
    """The handler only sets a flag; a second signal raises at once (exit 130 in the CLI)."""
    import os

    from tunelab.train.signals import graceful_stop

    with graceful_stop() as flag:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)  # let the interpreter run the handler
        assert flag() and flag.signal_name == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored
