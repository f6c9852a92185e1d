"""A throwaway PostgreSQL server for tests: ``postgres_url`` (session) and ``fresh_postgres_url``.

The server binaries (``initdb``, ``pg_ctl``, ``createdb``) are the distribution's, under
``/usr/lib/postgresql/<version>/bin`` (the newest version wins). ``initdb`` refuses to
run as root, so as root the server runs as the ``postgres`` user (``runuser``) in a
temporary folder it owns; as anyone else it runs as that user. Trust authentication,
listening on 127.0.0.1 only, on a free port, its socket in the same folder. The server
is stopped (``pg_ctl stop -m fast``) and the folder removed when the session ends.

Tests skip only when the binaries are not installed.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_USER = "postgres"  # the database superuser initdb makes (and the OS user as root)


def postgres_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` that has initdb and pg_ctl, or None."""
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")
             if (Path(p).parent / "pg_ctl").exists()]

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in path.parent.name.split(".") if x.isdigit())

    return max(found, key=version) if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", PG_USER, "--", *argv] if os.geteuid() == 0 else argv


def _run(argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(_as_server_user(argv), capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n"
                           f"{proc.stdout}\n{proc.stderr}")
    return proc


def create_database(server_url: str, name: str) -> str:
    """Create database ``name`` on the server of ``server_url``; returns its URL."""
    import psycopg

    host_port = server_url.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.split(":")
    with psycopg.connect(host=host, port=int(port), user=PG_USER, dbname="postgres",
                         autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://{PG_USER}@{host}:{port}/{name}"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A running throwaway PostgreSQL server and one empty database on it (its URL).

    The URL is ``postgresql+psycopg://postgres@127.0.0.1:PORT/tunelab_test``; the
    database is shared by the session's tests (use ``fresh_postgres_url`` for an
    empty one).
    """
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries are not installed "
                    "(no /usr/lib/postgresql/*/bin/initdb); apt-get install postgresql")
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam(PG_USER)
        except KeyError:
            pytest.fail(f"running as root, and there is no {PG_USER!r} user to run "
                        "initdb as (the postgresql package makes one)")
    # not under pytest's tmp_path: that folder is root's, 0700, out of the server user's reach
    folder = Path(tempfile.mkdtemp(prefix="tunelab-pg-"))
    if os.geteuid() == 0:
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    data, log = folder / "data", folder / "server.log"
    try:
        _run([str(bindir / "initdb"), "-D", str(data), "-U", PG_USER, "--auth=trust",
              "--encoding=UTF8", "--locale=C", "--no-sync"])
        for attempt in range(3):  # another process may take the free port meanwhile
            port = _free_port()
            options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
            try:
                _run([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w",
                      "-t", "60", "-o", options, "start"])
                break
            except RuntimeError:
                if attempt == 2:
                    raise RuntimeError(log.read_text() if log.exists() else "no log") from None
        server = f"postgresql+psycopg://{PG_USER}@127.0.0.1:{port}/postgres"
        yield create_database(server, "tunelab_test")
    finally:
        subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-w",
                                        "-m", "fast", "stop"]),
                       capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def fresh_postgres_url(postgres_url: str) -> str:
    """A new, empty database on the session's server (its URL)."""
    return create_database(postgres_url, f"t_{uuid.uuid4().hex[:12]}")
