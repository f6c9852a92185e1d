"""uvicorn with a drain: SIGTERM stops new requests, lets in-flight ones finish, exits 0.

uvicorn's own handler stops accepting at once, waits for open connections and then
raises the signal again, so the process ends "killed by SIGTERM" (143), not 0. Here the
first SIGTERM or SIGINT starts a drain instead: the app answers 503 to new model
requests and to /ready (a load balancer takes the instance out), the engines stop
admitting and finish what they hold (``ModelRegistry.drain``), and the streams still
being sent complete; then uvicorn shuts down normally, all within ``drain_timeout``. A
second signal stops at once. This module knows nothing of routes or models.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn

from tunelab.errors import UsageError

log = logging.getLogger("tunelab.serve")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (not listening yet), so a taken port fails before
    any model loads.

    Raises:
        UsageError: the address cannot be bound (in use, not this machine's, no permission).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UsageError(f"cannot listen on host {host!r}: {e.strerror}",
                         hint="give --host an address of this machine, e.g. 127.0.0.1") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        why = "is in use" if e.errno == errno.EADDRINUSE else f"cannot be bound ({e.strerror})"
        raise UsageError(f"port {port} on {host} {why}",
                         hint="choose another with --port (0 picks a free one)") from None
    sock.set_inheritable(True)
    return sock


class DrainingServer(uvicorn.Server):
    """A uvicorn server whose first SIGTERM/SIGINT drains instead of stopping.

    Args:
        config: uvicorn's config (the app, log level).
        drain: an async function run on the first signal, given the seconds it may take;
            it returns whether everything in flight finished.
        timeout: the drain timeout (seconds).
        on_started: called once the server listens.
        note: what the drain's log line says happens meanwhile.
    """

    def __init__(self, config: uvicorn.Config, drain: Callable[[float], Any], timeout: float,
                 on_started: Callable[[], None] | None = None,
                 note: str = "new requests get 503") -> None:
        super().__init__(config)
        self._note = note
        self._drain = drain
        self._timeout = timeout
        self._on_started = on_started
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False
        self.drained: bool | None = None  # None: no drain ran; else whether it finished in time

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self._on_started is not None:
            self._on_started()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not recorded as a captured signal: uvicorn would raise it again after shutdown.
        if self._draining or self._loop is None:
            self.should_exit = True
            self.force_exit = True
            return
        self._draining = True
        self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._run_drain()))

    def start_drain(self) -> None:
        """Start the drain as a signal would (for a caller on the event loop)."""
        self.handle_exit(0, None)

    async def _run_drain(self) -> None:
        started = time.monotonic()
        log.info("draining: %s; waiting up to %.0f s for the requests in flight", self._note,
                 self._timeout)
        try:
            self.drained = bool(await self._drain(self._timeout))
        except Exception:
            log.exception("the drain failed; shutting down")
            self.drained = False
        log.info("drained in %.1f s (%s)", time.monotonic() - started,
                 "all finished" if self.drained else "timed out; the rest are cancelled")
        self.should_exit = True
