"""Reading the container files for tests: the Dockerfile's instructions, compose.yaml.

No container engine runs where tunelab is developed, so the tests take what the image
would do from the Dockerfile itself (its COPY sources, ARG and ENV values, ENTRYPOINT,
CMD and HEALTHCHECK) and run the same commands outside a container. The parser covers
the subset of Dockerfile syntax ours uses: ``\\`` continuations, ``#`` comment lines,
``KEY=VALUE`` pairs, JSON (exec) form; it knows nothing of variable expansion beyond
``$PATH`` in ENV, which the tests handle where they use it.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "compose.yaml"
DOCKERIGNORE = ROOT / ".dockerignore"
IMAGE_APP = "/app"  # the Dockerfile's WORKDIR: where COPY puts the build context's files


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs in order, continuations joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comment lines inside a continuation are dropped too, as Docker does
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continuation"
    return out


def all_of(kind: str, path: Path = DOCKERFILE) -> list[str]:
    return [rest for word, rest in instructions(path) if word == kind]


def one(kind: str, path: Path = DOCKERFILE) -> str:
    found = all_of(kind, path)
    assert len(found) == 1, f"{kind}: {len(found)} in the Dockerfile, expected one"
    return found[0]


def pairs(kind: str, path: Path = DOCKERFILE) -> dict[str, str]:
    """The KEY=VALUE pairs of every ARG or ENV (an ARG without a default maps to '')."""
    values: dict[str, str] = {}
    for rest in all_of(kind, path):
        for item in shlex.split(rest):
            key, _, value = item.partition("=")
            values[key] = value
    return values


def exec_form(kind: str, path: Path = DOCKERFILE) -> list[str]:
    """ENTRYPOINT or CMD in JSON form (the shell form would put a shell in front of PID 1)."""
    value = json.loads(one(kind, path))
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


def healthcheck_command(path: Path = DOCKERFILE) -> list[str]:
    """The HEALTHCHECK's CMD, exec form."""
    _, _, cmd = one("HEALTHCHECK", path).partition(" CMD ")
    value = json.loads(cmd)
    assert isinstance(value, list)
    return value


def copy_sources(path: Path = DOCKERFILE) -> list[str]:
    """Every path a COPY takes from the build context (no --from copies here)."""
    sources: list[str] = []
    for rest in all_of("COPY", path):
        parts = shlex.split(rest)
        assert not any(p.startswith("--") for p in parts), f"COPY flags are not read: {rest}"
        sources += parts[:-1]
    return sources


def in_context(image_path: str, context: Path) -> Path:
    """Where a path under the image's /app lies in a build context copied to ``context``."""
    assert image_path.startswith(IMAGE_APP + "/"), image_path
    return context / image_path[len(IMAGE_APP) + 1:]
