"""`tunelab serve`: load the models, open the request log, run the HTTP app until drained.

The order makes every user mistake cheap: the settings are validated by the CLI, the
address is bound before any model loads (a taken port fails in a second), then the
models load (an unknown model or a template mismatch fails before anything listens),
then the database opens. The engine's batching settings are built here from the serve
settings, where their defaults live. On SIGTERM the server drains
(``tunelab.serve.app.server``) and this returns; the engines, the log writer (flushing
what is pending) and the database close on the way out, also after an error. SIGHUP
rereads the ``--config`` file's experiments (``ExperimentRouter.reload``) on a thread of
its own, so neither the engines nor the requests wait for the file.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from types import FrameType
from typing import TYPE_CHECKING

from tunelab.config.serve import ServeSettings
from tunelab.errors import UsageError
from tunelab.tracking.reporter import SILENT, Reporter

if TYPE_CHECKING:
    from tunelab.serve.app.server import DrainingServer
    from tunelab.serve.batching import EngineSettings
    from tunelab.serve.registry import ModelRegistry

log = logging.getLogger("tunelab.serve")

CLOSE_GRACE_SECONDS = 5.0  # after the drain: for cancelled responses to end and sockets to close


def engine_settings(s: ServeSettings) -> EngineSettings:
    """The engine's batching settings, from the serve settings (their one home)."""
    from tunelab.serve.batching import EngineSettings

    return EngineSettings(max_batch_size=s.max_batch_size, max_queue=s.max_queue,
                          prefill_tokens=s.prefill_tokens)


def run_serve(settings: ServeSettings, api_keys: list[str],
              on_ready: Callable[[str, list[str]], None] | None = None,
              reporter: Reporter = SILENT, admin_key: str | None = None,
              config_path: str | None = None) -> bool | None:
    """Serve ``settings.models`` until a signal drains the server.

    Args:
        settings: the validated serve settings (flags already applied).
        api_keys: the valid keys (at least one).
        on_ready: called with the base URL and the served names once the server listens.
        reporter: progress and warnings (loading, a non-loopback address).
        admin_key: the key of the /admin/ routes (experiment weights); None: they are off.
        config_path: the serve config file, reread on SIGHUP (its experiments only).

    Returns:
        None when no drain ran (the server stopped otherwise), else whether every
        in-flight request finished within ``drain_timeout``.

    Raises:
        UsageError: no model named, or the address cannot be bound.
        ModelError, StoreError, ConfigError: a model cannot be loaded or served, or an
            experiment's variant names a model that is not served.
    """
    if not settings.models and not settings.aliases:
        raise UsageError("no model to serve",
                         hint="name one or more: `tunelab serve RUN_OR_MODEL`, or list them "
                              "under `models:` in --config")
    if not api_keys:
        raise UsageError("no API key: the server refuses to run open",
                         hint="set TUNELAB_API_KEYS or give --api-key-file")
    import uvicorn  # here, after the cheap checks: these pull in torch and SQLAlchemy

    from tunelab.db import RequestLogWriter, open_database
    from tunelab.serve.app.api import create_app
    from tunelab.serve.app.drift_watch import watch_drift
    from tunelab.serve.app.server import DrainingServer, bind_socket, is_loopback
    from tunelab.serve.registry import load_registry

    if not is_loopback(settings.host):
        reporter.warning(f"listening on {settings.host}: other machines can reach this server "
                         "(every route but /health and /ready needs a key)")
    with ExitStack() as stack:
        sock = bind_socket(settings.host, settings.port)
        stack.callback(sock.close)
        registry = load_registry(settings.models, settings.aliases, settings.runs_dir,
                                 engine_settings(settings), reporter)
        stack.callback(registry.close)
        db = open_database(settings.db)
        stack.callback(db.close)
        writer = RequestLogWriter(db)
        writer.start()
        stack.callback(writer.close)
        app = create_app(registry, settings, writer, api_keys, db, admin_key)
        state = app.state.serve
        router = app.state.experiments
        # drift and feedback gauges (tunelab.serve.app.drift_watch): a thread of their own
        stack.enter_context(watch_drift(state.metrics.registry, registry, db, settings))

        async def drain(timeout: float) -> bool:
            state.start_draining()
            started = time.monotonic()
            engines_done = await asyncio.to_thread(registry.drain, timeout)
            left = max(0.0, timeout - (time.monotonic() - started))
            sent = await state.wait_idle(left)  # the answers still being written out
            if not (engines_done and sent):
                # Out of time: cancel what is left, so each open response ends now (with a
                # 503 error event) instead of uvicorn waiting for it to finish generating.
                await asyncio.to_thread(registry.close)
                await state.wait_idle(CLOSE_GRACE_SECONDS)
            return bool(engines_done and sent)

        config = uvicorn.Config(app, log_level=settings.log_level, access_log=False,
                                loop="asyncio", lifespan="off",
                                timeout_graceful_shutdown=CLOSE_GRACE_SECONDS)
        host, port = sock.getsockname()[:2]
        url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        names = sorted(registry.models)
        server = DrainingServer(config, drain, settings.drain_timeout,
                                on_started=None if on_ready is None else lambda: on_ready(url, names))
        def reload() -> None:
            if config_path is None:
                log.warning("SIGHUP: the server was started without --config; nothing to reload")
            else:
                router.reload(config_path)

        _serve_with_engines_on_this_thread(server, sock, registry, reload)
        return server.drained
    return None  # not reached: the `with` returns or raises


def _serve_with_engines_on_this_thread(server: DrainingServer, sock: socket.socket,
                                       registry: ModelRegistry, reload: Callable[[], None]) -> None:
    """uvicorn on a thread, the engines on this (the main) thread, where torch runs fastest
    (``tunelab.serve.batching.ServingEngine``). uvicorn installs no signal handlers off the
    main thread, so SIGTERM/SIGINT are routed here to the server's drain, and SIGHUP to
    ``reload`` on a short thread (reading a file must not stall the engines)."""
    failure: list[BaseException] = []

    def http() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as e:  # re-raised on this thread once the engines stop
            failure.append(e)

    thread = threading.Thread(target=http, name="tunelab-http", daemon=True)
    previous = {sig: signal.signal(sig, server.handle_exit) for sig in (signal.SIGTERM, signal.SIGINT)}

    def on_hup(_sig: int, _frame: FrameType | None) -> None:
        threading.Thread(target=reload, name="tunelab-reload", daemon=True).start()
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hup)
    try:
        thread.start()
        registry.run(until=lambda: not thread.is_alive())
        thread.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failure:
        raise failure[0]
