"""The request-body cap: a body over ``max_request_bytes`` gets 413 before any parsing.

A chat prompt is rendered and tokenized on the event loop, so one huge authenticated
body would hold up every open stream while it is read and tokenized; the cap bounds
that work. The declared ``Content-Length`` is refused at once; a chunked body is read
up to the cap and then handed to the app unchanged. This module knows nothing of routes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import ASGIApp, Scope

from tunelab.serve.app.errors import APIError

Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]


def _too_large(limit: int) -> APIError:
    return APIError(413, f"the request body is over this server's limit of {limit:,} bytes",
                    code="request_too_large")


class BodyLimit:
    """ASGI middleware: 413 in the OpenAI error shape for a body over ``limit`` bytes."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _too_large(self.limit).response()(scope, receive, send)
            return
        if declared is not None:  # the server enforces the declared length
            await self.app(scope, receive, send)
            return
        buffered: list[Any] = []
        size = 0
        while True:  # chunked: read it all (up to the cap), then replay it
            message = await receive()
            buffered.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.limit:
                await _too_large(self.limit).response()(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Any:
            return buffered.pop(0) if buffered else await receive()

        await self.app(scope, replay, send)
