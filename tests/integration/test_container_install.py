"""The image's install and start, run outside a container (no engine runs here).

The build context is copied as the Dockerfile copies it (its COPY sources, with what
.dockerignore keeps out left out), ``docker/install.sh`` installs torch and then the
project into a fresh venv in a temporary folder, and the Dockerfile's ENTRYPOINT starts
the server with the image's environment, three paths moved: the venv (/opt/tunelab),
the tunelab home (/data), and the address (127.0.0.1 here; the image listens on every
interface). The differences from a real build: torch comes from pip's configured
indexes (this machine has the CPU wheel on disk; the image names the PyTorch CPU index),
pip keeps its cache, the Python is this machine's, and nothing runs as uid 10001.

The slow test then imports a tiny model into the store through the entry point, waits
for /health, runs the image's HEALTHCHECK command, makes one authorised chat completion
with the ``openai`` client (and sees an unauthorised one refused), finds it in the
PostgreSQL request log (the URL without a password, the password from a file, as
compose.yaml does), and stops the server with SIGTERM: exit 0.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from container_files import (
    ROOT,
    copy_sources,
    exec_form,
    healthcheck_command,
    in_context,
    pairs,
)

pytestmark = pytest.mark.slow

KEY = "container-test-key"
PG_PASSWORD = "from-the-secret-file"  # the test server trusts loopback; it checks no password
INSTALL_TIMEOUT = 900  # seconds, both steps; 80 s + 123 s here with a warm pip cache
START_TIMEOUT = 180  # seconds until /health answers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _build_context(dest: Path) -> Path:
    """The files a `docker build .` context holds for the Dockerfile's COPY lines."""
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for source in copy_sources():
        src, out = ROOT / source, dest / source
        if src.is_dir():
            shutil.copytree(src, out, ignore=skip, dirs_exist_ok=True)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, out)
    return dest


def _image_env(venv: Path, home: Path, port: int) -> dict[str, str]:
    """The Dockerfile's ENV with its paths moved here, on this machine's environment less
    anything that would reach the worktree's tunelab (PYTHONPATH) or another venv."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
            and not k.startswith("TUNELAB_")}
    env = {**base, **pairs("ENV")}
    env.pop("PIP_NO_CACHE_DIR")  # the image keeps no cache; this test reuses pip's
    assert env["PATH"].startswith("/opt/tunelab/bin:$PATH")
    env["PATH"] = f"{venv / 'bin'}:{base['PATH']}"
    env.update(TUNELAB_HOME=str(home), TUNELAB_HOST="127.0.0.1", TUNELAB_PORT=str(port),
               HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return env


def _install(context: Path, venv: Path, env: dict[str, str]) -> None:
    script = str(context / "docker" / "install.sh")
    args = pairs("ARG")
    # as the Dockerfile's RUN lines pass them, but the torch index: this machine cannot
    # reach the PyTorch index and takes torch==2.13.0 from its own CPU wheel
    steps = [({"TORCH_REQUIREMENT": args["TORCH_REQUIREMENT"], "TORCH_INDEX_URL": "",
               "PYTHON": sys.executable}, ["torch", str(venv)]),
             ({"TUNELAB_EXTRAS": args["TUNELAB_EXTRAS"]}, ["project", str(venv), str(context)])]
    deadline = time.monotonic() + INSTALL_TIMEOUT
    for extra, argv in steps:
        proc = subprocess.run(["sh", script, *argv], env={**env, **extra}, cwd=context,
                              capture_output=True, text=True,
                              timeout=max(1.0, deadline - time.monotonic()))
        assert proc.returncode == 0, f"install.sh {argv[0]}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def _entrypoint(context: Path) -> list[str]:
    return [str(in_context(p, context)) if p.startswith("/app/") else p
            for p in exec_form("ENTRYPOINT")]


def _healthcheck(context: Path, env: dict[str, str]) -> int:
    argv = [str(in_context(p, context)) if p.startswith("/app/") else p
            for p in healthcheck_command()]
    return subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode


def _wait_for_health(proc: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"/health did not answer in {START_TIMEOUT} s:\n{log.read_text()}")


def test_image_install_and_entry_point_serve_a_model(tmp_path, fresh_postgres_url):
    import openai
    from sqlalchemy.engine import make_url

    from tiny import save_tiny_model_dir
    from tunelab.db import open_database, recent_requests

    context = _build_context(tmp_path / "context")
    venv, home, port = tmp_path / "opt-tunelab", tmp_path / "data", _free_port()
    env = _image_env(venv, home, port)
    _install(context, venv, env)
    # the server runs the installed package, not this worktree's source
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import tunelab, torch; print(tunelab.__file__, torch.__version__)"],
                           env=env, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert where.returncode == 0, where.stderr
    assert where.stdout.startswith(str(venv)) and "2.13.0" in where.stdout

    # `docker run IMAGE tunelab models import ...`: any tunelab command through the entry point
    model = save_tiny_model_dir(tmp_path / "tiny-llama")
    imported = subprocess.run([*_entrypoint(context), "tunelab", "models", "import",
                               str(model), "--name", "tiny"], env=env, capture_output=True,
                              text=True, cwd=tmp_path, timeout=300)
    assert imported.returncode == 0, imported.stderr

    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "api_keys").write_text(f"# mounted as /run/secrets/tunelab_api_keys\n{KEY}\n")
    (secrets / "postgres_password").write_text(PG_PASSWORD + "\n")
    db_url = make_url(fresh_postgres_url)
    assert db_url.password is None  # as in compose.yaml: the password comes from the file
    serve_env = {**env, "TUNELAB_API_KEY_FILE": str(secrets / "api_keys"),
                 "TUNELAB_DB_PASSWORD_FILE": str(secrets / "postgres_password")}
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*_entrypoint(context), "tiny", "--db", fresh_postgres_url],
                                env=serve_env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        _wait_for_health(proc, port, log)
        # the entry point exec'd tunelab (same pid: it gets SIGTERM), with the password set
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert b"serve" in cmdline and b"127.0.0.1" in cmdline
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
        assert f"PGPASSWORD={PG_PASSWORD}".encode() in environ
        assert _healthcheck(context, serve_env) == 0

        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY,
                               max_retries=0, timeout=60)
        answer = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Hello"}], max_tokens=4,
            temperature=0)
        assert answer.model == "tiny" and answer.usage.completion_tokens > 0
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="wrong",
                          max_retries=0, timeout=60).models.list()

        db = open_database(fresh_postgres_url)
        try:
            rows: list = []
            deadline = time.monotonic() + 15
            while not rows and time.monotonic() < deadline:  # the log flushes every second
                rows = recent_requests(db)
                time.sleep(0.3)
        finally:
            db.close()
        assert [r.request_id for r in rows] == [answer.id]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # what `docker stop` sends
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(10)
    assert code == 0, log.read_text()
    assert "stopped" in log.read_text()
    assert _healthcheck(context, serve_env) == 1  # and the check does fail when no one answers


def test_entry_point_refuses_to_start_without_a_key(tmp_path):
    context = _build_context(tmp_path / "context")
    env = {"PATH": "/usr/bin:/bin", "TUNELAB_HOST": "127.0.0.1", "TUNELAB_PORT": "1",
           "TUNELAB_API_KEY_FILE": str(tmp_path / "missing"), "TUNELAB_API_KEYS": " , "}
    proc = subprocess.run(_entrypoint(context), env=env, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2
    assert "no API key" in proc.stderr and str(tmp_path / "missing") in proc.stderr
    env.update(TUNELAB_API_KEYS=KEY, TUNELAB_DB_PASSWORD_FILE=str(tmp_path / "absent"))
    proc = subprocess.run(_entrypoint(context), env=env, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2 and "TUNELAB_DB_PASSWORD_FILE" in proc.stderr
