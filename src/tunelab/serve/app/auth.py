"""API keys: where they come from, and the check every route but /health and /ready passes.

Keys come from ``TUNELAB_API_KEYS`` (comma-separated) and/or a key file (one a line;
blank lines and ``#`` comments skipped). With none configured the server makes one
(``secrets.token_urlsafe``) that lives only in memory; the CLI prints it once, as
Jupyter does, so nothing is ever served open by accident.

The check is an ASGI middleware, not a route dependency, so it also covers /metrics,
unknown paths (401 before 404: the server does not reveal its routes to strangers) and
whatever route is added later, a websocket one included (closed with 1008). ``Authorization: Bearer KEY`` is compared, case
sensitive, with ``hmac.compare_digest`` against every key without stopping at a match,
so the time taken says nothing about which key (or how much of one) was right.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from pathlib import Path
from typing import Any

from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketClose

from tunelab.errors import UsageError
from tunelab.serve.app.errors import AUTHENTICATION, error_body

KEYS_ENV = "TUNELAB_API_KEYS"
POLICY_VIOLATION = 1008  # the websocket close code for a connection without a valid key
OPEN_PATHS = frozenset({"/health", "/ready"})  # liveness and readiness probes carry no key

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
                   Awaitable[None]]


def read_key_file(path: str | Path) -> list[str]:
    """The keys in a file: one a line, blank lines and ``#`` comments skipped.

    Raises:
        UsageError: the file cannot be read, or holds no key.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read the API key file {str(p)!r} ({e.__class__.__name__})",
                         hint="give a text file with one key a line") from None
    keys = [line.strip() for line in text.splitlines()]
    keys = [k for k in keys if k and not k.startswith("#")]
    if not keys:
        raise UsageError(f"the API key file {str(p)!r} holds no key",
                         hint="write one key a line (blank lines and # comments are skipped)")
    return keys


def configured_keys(env: str | None = None, key_file: str | Path | None = None) -> list[str]:
    """The keys from ``TUNELAB_API_KEYS`` (``env``; default: the process environment) and a file.

    Raises:
        UsageError: a key holds whitespace, or the key file is unusable.
    """
    raw = os.environ.get(KEYS_ENV, "") if env is None else env
    keys = [k.strip() for k in raw.split(",") if k.strip()]
    if key_file is not None:
        keys += read_key_file(key_file)
    bad = [i for i, k in enumerate(keys) if any(ch.isspace() for ch in k)]
    if bad:
        raise UsageError(f"{len(bad)} API key(s) hold whitespace; a Bearer header cannot carry them",
                         hint=f"check {KEYS_ENV} and the key file")
    return list(dict.fromkeys(keys))


def generate_key() -> str:
    """A new random key (32 bytes, URL-safe): for a server started without one."""
    return secrets.token_urlsafe(32)


def key_matches(given: str, keys: Iterable[str]) -> bool:
    """Whether ``given`` equals one of ``keys``; compares with every key (no early exit)."""
    found = False
    given_b = given.encode()
    for k in keys:
        found |= hmac.compare_digest(given_b, k.encode())
    return found


def bearer_token(scope: Scope) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header, if the request has one."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


class KeyCheck:
    """ASGI middleware: a request without a valid key gets 401 in the OpenAI shape.

    Args:
        app: the application behind it.
        keys: the valid keys (at least one).
        open_paths: paths that need no key (/health, /ready, and /metrics when public).
    """

    def __init__(self, app: ASGIApp, keys: list[str], open_paths: frozenset[str]) -> None:
        assert keys, "a server always has a key (generated when none is configured)"
        self.app = app
        self.keys = tuple(keys)
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        # A websocket is checked too: a route added later must not be open by its kind.
        if scope["type"] not in ("http", "websocket") or scope.get("path") in self.open_paths:
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope)
        if token is not None and key_matches(token, self.keys):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":  # refused before the handshake is accepted
            await WebSocketClose(code=POLICY_VIOLATION)(scope, receive, send)
            return
        if token is None:
            msg = "no API key: send the header `Authorization: Bearer YOUR_KEY`"
        else:
            msg = "the API key is not valid"
        response = JSONResponse(error_body(msg, AUTHENTICATION, None, "invalid_api_key"),
                                status_code=401, headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)
