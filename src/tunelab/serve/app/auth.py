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

Paths under ``/admin/`` take the admin key (``--admin-key`` or ``TUNELAB_ADMIN_KEY``)
and nothing else: an API key gets 403 there. A server started without an admin key
answers 404 on them (to a holder of an API key; 401 to anyone else), saying how to
turn them on.
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
from tunelab.serve.app.errors import AUTHENTICATION, NOT_FOUND, PERMISSION, error_body

KEYS_ENV = "TUNELAB_API_KEYS"
POLICY_VIOLATION = 1008  # the websocket close code for a connection without a valid key
OPEN_PATHS = frozenset({"/health", "/ready"})  # liveness and readiness probes carry no key
ADMIN_KEY_ENV = "TUNELAB_ADMIN_KEY"
ADMIN_PREFIX = "/admin/"

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


def configured_admin_key(flag: str | None, api_keys: Iterable[str],
                         env: str | None = None) -> str | None:
    """The admin key: ``--admin-key`` (``flag``), else ``TUNELAB_ADMIN_KEY``; None when neither.

    Raises:
        UsageError: the key holds whitespace, or equals an API key (the admin routes
            would then be open to every client).
    """
    raw = os.environ.get(ADMIN_KEY_ENV, "") if env is None else env
    key = (flag if flag is not None else raw).strip()
    if not key:
        return None
    if any(ch.isspace() for ch in key):
        raise UsageError("the admin key holds whitespace; a Bearer header cannot carry it",
                         hint=f"check --admin-key or {ADMIN_KEY_ENV}")
    if key_matches(key, api_keys):
        raise UsageError("the admin key is also an API key; every client could change the "
                         "experiments", hint="choose an admin key of its own")
    return key


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

    def __init__(self, app: ASGIApp, keys: list[str], open_paths: frozenset[str],
                 admin_key: str | None = None) -> None:
        assert keys, "a server always has a key (generated when none is configured)"
        self.app = app
        self.keys = tuple(keys)
        self.open_paths = open_paths
        self.admin_key = admin_key

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        # A websocket is checked too: a route added later must not be open by its kind.
        if scope["type"] not in ("http", "websocket") or scope.get("path") in self.open_paths:
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope)
        if str(scope.get("path", "")).startswith(ADMIN_PREFIX):
            await self._admin(token, scope, receive, send)
            return
        if token is not None and key_matches(token, self.keys):
            await self.app(scope, receive, send)
            return
        if token is None:
            msg = "no API key: send the header `Authorization: Bearer YOUR_KEY`"
        else:
            msg = "the API key is not valid"
        await _refuse(401, msg, "invalid_api_key", scope, receive, send)

    async def _admin(self, token: str | None, scope: Scope, receive: Callable[[], Awaitable[Any]],
                     send: Callable[[Any], Awaitable[None]]) -> None:
        if self.admin_key is not None and token is not None \
                and key_matches(token, [self.admin_key]):
            await self.app(scope, receive, send)
            return
        api_key = token is not None and key_matches(token, self.keys)
        if self.admin_key is None and api_key:
            await _refuse(404, "the admin routes are off: start the server with an admin key "
                               f"(--admin-key or {ADMIN_KEY_ENV}) to turn them on", "admin_disabled",
                          scope, receive, send, NOT_FOUND)
        elif api_key:
            await _refuse(403, "this route takes the admin key, not an API key",
                          "admin_key_required", scope, receive, send, PERMISSION)
        else:
            await _refuse(401, "no admin key: send `Authorization: Bearer ADMIN_KEY`"
                          if token is None else "the admin key is not valid",
                          "invalid_admin_key", scope, receive, send)


async def _refuse(status: int, msg: str, code: str, scope: Scope,
                  receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]],
                  type: str = AUTHENTICATION) -> None:
    if scope["type"] == "websocket":  # refused before the handshake is accepted
        await WebSocketClose(code=POLICY_VIOLATION)(scope, receive, send)
        return
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    response = JSONResponse(error_body(msg, type, None, code), status_code=status,
                            headers=headers)
    await response(scope, receive, send)
