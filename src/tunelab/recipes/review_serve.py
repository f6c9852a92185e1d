"""`tunelab review serve`: open the database, bind the address, run the review app.

The address is bound first (a taken port fails at once), then the database opens (and
migrates); a database without users is refused (nobody could sign in). SIGTERM or Ctrl-C stops the server after the requests in flight (the app
holds no long work: a page is a few queries). A non-loopback address is warned about:
the app's cookies are ``Secure``, which browsers honour over plain HTTP only on
localhost, so anything else belongs behind HTTPS.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack

from tunelab.config.review import ReviewSettings
from tunelab.errors import UsageError
from tunelab.tracking.reporter import SILENT, Reporter

STOP_GRACE_SECONDS = 5.0  # after a stop signal: for in-flight pages to finish


def run_review_serve(settings: ReviewSettings, on_ready: Callable[[str], None] | None = None,
                     reporter: Reporter = SILENT) -> None:
    """Serve the review app until a signal stops it.

    Args:
        settings: address, database URL, sessions and sign-in throttling.
        on_ready: called with the URL once the server accepts connections.
        reporter: warnings (a non-loopback address).

    Raises:
        UsageError: the address cannot be bound, or no user exists.
        DatabaseError: the database cannot be opened or migrated.
    """
    import uvicorn

    from tunelab.db import open_database
    from tunelab.db.review_users import list_users
    from tunelab.review.app import create_review_app
    from tunelab.serve.app.server import DrainingServer, bind_socket, is_loopback

    if not is_loopback(settings.host):
        reporter.warning(f"listening on {settings.host}: other machines can reach the review "
                         "app; browsers send its Secure cookies only over HTTPS there, so put "
                         "it behind a TLS proxy")
    with ExitStack() as stack:
        sock = bind_socket(settings.host, settings.port)
        stack.callback(sock.close)
        db = open_database(settings.db)
        stack.callback(db.close)
        if not list_users(db):  # nobody could sign in: say how to start instead of serving
            raise UsageError("the review database has no users yet, so nobody could sign in",
                             hint="create an admin first: `tunelab review user add NAME "
                                  "--role admin`")
        app = create_review_app(db, settings)
        config = uvicorn.Config(app, log_level=settings.log_level, access_log=False,
                                loop="asyncio", lifespan="off",
                                timeout_graceful_shutdown=STOP_GRACE_SECONDS)
        host, port = sock.getsockname()[:2]
        url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

        async def nothing_to_drain(timeout: float) -> bool:
            return True

        server = DrainingServer(config, nothing_to_drain, STOP_GRACE_SECONDS,
                                on_started=None if on_ready is None else lambda: on_ready(url),
                                note="the review app stops")
        server.run(sockets=[sock])
