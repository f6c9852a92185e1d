"""Every shipped example trains for 2 steps on a tiny model, through its own command.

Configs are found recursively under ``examples/`` (tests/example_files.py; serve configs
are not run configs) and run as shipped, with the data that ships beside them (or that the
``make_data.py`` beside them makes from ../shared/data, in a work folder); only the model,
the run length and the output folder are overridden, with dotted overrides as a user would:

* a plain config: ``tunelab train CONFIG model.name=TINY train.max_steps=2 ...``;
* a config with ``search:``: ``tunelab tune CONFIG --trials 2`` with the same overrides;
* a config with ``phases:``: ``tunelab train`` on a copy whose phases are cut to 2 steps
  each (a phase may set its own ``max_steps``, and dotted overrides cannot reach into the
  ``phases`` list), with its data paths made absolute so they still name the shipped files;
* an ``*.accelerate.yaml`` launch config: ``accelerate launch --config_file FILE -m tunelab
  train examples/lora_chat.yaml ...`` on this machine's CPU with 2 processes in all; a
  config for several machines runs one launcher per machine, all on 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rundata import child_env, metrics, summary, write_yaml

from example_files import ACCELERATE, CONFIGS, prepared
from example_files import EXAMPLES_DIR as EXAMPLES
from tunelab.cli.main import main
from tunelab.config import load_config
from tunelab.config.compose import phase_config
from tunelab.config.schema import ADAPTER_METHODS

LAUNCHED = EXAMPLES / "lora_chat.yaml"  # the tunelab config the launch configs start
STEPS = 2


def _overrides(model_dir: Path, out: Path) -> list[str]:
    return [f"model.name={model_dir}", f"train.max_steps={STEPS}", f"output.dir={out}"]


def _artifact(method: str) -> str:
    adapter = method in ADAPTER_METHODS  # dpo trains a LoRA adapter too
    return "adapter/adapter_model.safetensors" if adapter else "model/model.safetensors"


def _assert_run(run: Path, method: str, steps: int = STEPS) -> None:
    # a phased run keeps its metrics in each phase's folder, not at the top
    own = ("metrics.jsonl",) if not (run / "phases").is_dir() else ()
    for f in ("config.yaml", "summary.json", "tokenizer/tokenizer_config.json", _artifact(method), *own):
        assert (run / f).is_file(), f"{run}: {f} is missing"
    done = summary(run)
    assert done["status"] == "complete" and done["steps"] == steps, done


def _absolute(value, base: Path):
    """A data source value (path, source dict, or a list of them) with absolute paths."""
    if isinstance(value, str):
        return str((base / value).resolve())
    if isinstance(value, dict):
        return {**value, "path": str((base / value["path"]).resolve())}
    return [_absolute(v, base) for v in value]


def _phases_cut_short(path: Path, tmp: Path) -> Path:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    sections = [raw["data"], *(p.get("data", {}) for p in raw["phases"])]
    for data in sections:
        for key in ("train", "validation"):
            if key in data:
                data[key] = _absolute(data[key], path.parent)
    for phase in raw["phases"]:
        phase.setdefault("train", {})["max_steps"] = STEPS
    return write_yaml(tmp / path.name, raw)


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(EXAMPLES)) for p in CONFIGS])
def test_example_trains_two_steps(path, tmp_path, tiny_model_dir, capsys):
    path = prepared(path, tmp_path / "work")
    cfg = load_config(path)
    absent = [s.path for s in cfg.data.train if not Path(s.path).is_file()]
    if absent:  # an example that reads ../shared/data, where that folder is not beside us
        pytest.skip(f"{path.name} reads {absent}, which is absent here")
    out = tmp_path / "runs"
    overrides = _overrides(tiny_model_dir, out)
    if cfg.search is not None:
        assert main(["tune", str(path), "--trials", "2", *overrides]) == 0, capsys.readouterr().err
        study = out / (cfg.search.study or path.stem)
        trials = sorted((study / "trials").iterdir())
        assert [t.name for t in trials] == ["trial-0000", "trial-0001"]
        for trial in trials:
            _assert_run(trial, cfg.train.method)
        assert (study / "best.yaml").is_file() and (study / "results.csv").is_file()
        return
    if cfg.phases:
        copy = _phases_cut_short(path, tmp_path)
        assert main(["train", str(copy), "--no-progress", *overrides, "output.name=run"]) == 0, \
            capsys.readouterr().err
        run = out / "run"
        last = phase_config(cfg, len(cfg.phases) - 1).train.method
        _assert_run(run, last, steps=STEPS * len(cfg.phases))
        for i in range(1, len(cfg.phases) + 1):
            phase = run / "phases" / f"phase-{i}"
            assert summary(phase)["steps"] == STEPS
            assert [m["step"] for m in metrics(phase, "train")] == [1, 2]
        return
    assert main(["train", str(path), "--no-progress", *overrides, "output.name=run"]) == 0, \
        capsys.readouterr().err
    run = out / "run"
    _assert_run(run, cfg.train.method)
    assert [m["step"] for m in metrics(run, "train")] == [1, 2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("path", ACCELERATE, ids=[p.name for p in ACCELERATE])
def test_accelerate_config_launches_two_processes(path, tmp_path, tiny_model_dir):
    machines = int(yaml.safe_load(path.read_text(encoding="utf-8"))["num_machines"])
    total = 2 if machines == 1 else machines  # 2 processes on one machine, else 1 per machine
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(path),
              "--num_processes", str(total),
              # every "machine" is this one; a free port, not the default another run may hold
              "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port())]
    train = ["-m", "tunelab", "train", str(LAUNCHED), "--no-progress",
             *_overrides(tiny_model_dir, tmp_path / "runs"), "output.name=run"]
    procs = [subprocess.Popen([*launch, "--machine_rank", str(rank), *train], env=child_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
             for rank in range(machines)]
    try:
        results = [(p, *p.communicate(timeout=300)) for p in procs]
    finally:
        for p in procs:  # a launcher left waiting for a failed peer must not outlive the test
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)  # its own group: the launcher and its workers
    for p, _, err in results:
        assert p.returncode == 0, err[-3000:]
    assert f"data parallel: {total} processes" in results[0][2]
    run = tmp_path / "runs" / "run"
    _assert_run(run, load_config(LAUNCHED).train.method)
    assert [m["step"] for m in metrics(run, "train")] == [1, 2]  # rank 0 alone writes
