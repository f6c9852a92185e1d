"""`tunelab train --nproc N`: start the same command as N data-parallel processes.

The command re-launches itself under ``python -m torch.distributed.run --standalone``
(one machine; see examples/accelerate/ for several machines). The run folder's name is
fixed here first, so every rank agrees on it; the ranks themselves then split each
optimizer step's rows and sum gradients (``tunelab.train.distributed``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys


def launch_command(a: argparse.Namespace, run_name: str | None, resume: str | None) -> list[str]:
    """The torch.distributed.run command line for ``tunelab train`` arguments ``a``."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", str(a.nproc), "-m", "tunelab", "train", a.config, *a.overrides]
    if run_name is not None:
        cmd.append(f"output.name={run_name}")
    if a.no_progress:
        cmd.append("--no-progress")
    if resume is not None:
        cmd += ["--resume", resume]
    if a.force_resume:
        cmd.append("--force-resume")
    return cmd


def relaunch(a: argparse.Namespace, run_name: str | None, resume: str | None) -> int:
    """Run the command as ``a.nproc`` processes and return their exit code.

    Args:
        a: the parsed ``tunelab train`` arguments.
        run_name: the run folder name every rank must use (None: keep the config's).
        resume: the ``--resume`` value to pass on (a path once ``auto`` is resolved).
    """
    cmd = launch_command(a, run_name, resume)
    print(f"launching {a.nproc} processes: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    proc = subprocess.Popen(cmd)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        # The ranks got the same SIGINT: they finish their step and save a checkpoint.
        return proc.wait()
