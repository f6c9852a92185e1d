"""The review web app: FastAPI routes rendering server-side pages over the review tables.

``create_review_app(db, settings)`` builds it. Every route but ``/login`` needs a
session (a page asked for without one redirects to the sign-in page; a form posted
without one is 401); roles decide the rest (``tunelab.review.app.pages``,
``tunelab.review.app.oversight``). Database work runs on the thread pool, so one slow
write (or a throttled sign-in) never stalls other reviewers' pages.

This package knows nothing of models or training: it shows items and stores answers.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException
from starlette.responses import RedirectResponse, Response

from tunelab.config.review import ReviewSettings
from tunelab.db.database import Database
from tunelab.db.review import ReviewRefused
from tunelab.errors import DatabaseError
from tunelab.review.app.auth import Forbidden, NotFound, NotSignedIn
from tunelab.review.app.render import page

log = logging.getLogger("tunelab.review")
VERIFY_SLOTS = 2  # password checks at once: each argon2 check takes 64 MiB and a core


def create_review_app(db: Database, settings: ReviewSettings) -> FastAPI:
    """The review app over an open database.

    Args:
        db: the database (migrated on open).
        settings: sign-in throttling and session lifetime.
    """
    from tunelab.review.app import oversight, pages

    app = FastAPI(title="tunelab review", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.db = db
    app.state.settings = settings
    app.state.verify_slots = asyncio.Semaphore(VERIFY_SLOTS)
    app.include_router(pages.router)
    app.include_router(oversight.router)

    @app.exception_handler(NotSignedIn)
    async def _not_signed_in(request: Request, exc: NotSignedIn) -> Response:
        if request.method == "GET":
            return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
        return page("message.html", 401, user=None, title="Signed out",
                    message="You are not signed in (or your session ended). Sign in and try again.")

    @app.exception_handler(Forbidden)
    async def _forbidden(request: Request, exc: Forbidden) -> Response:
        return page("message.html", 403, user=None, title="Not allowed", message=exc.message)

    @app.exception_handler(ReviewRefused)
    async def _refused(request: Request, exc: ReviewRefused) -> Response:
        return page("message.html", 409, user=None, title="Not done",
                    message=str(exc), hint=exc.hint)

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> Response:
        return page("message.html", 404, user=None, title="Not found", message=exc.message)

    # A malformed address (an item id that is not a number, or too large for the
    # database) or an unknown route: the same page as any other, not a JSON error.
    @app.exception_handler(RequestValidationError)
    async def _malformed(request: Request, exc: RequestValidationError) -> Response:
        return page("message.html", 404, user=None, title="Not found",
                    message="There is no such page: the address is malformed.")

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        title = "Not found" if exc.status_code == 404 else "Not allowed"
        return page("message.html", exc.status_code, user=None, title=title,
                    message="There is no such page." if exc.status_code == 404
                    else f"{request.method} is not allowed here.")

    @app.exception_handler(DatabaseError)
    @app.exception_handler(SQLAlchemyError)
    async def _database(request: Request, exc: Exception) -> Response:
        # the driver's message may hold row values; the class says enough for the operator
        log.error("database error on %s %s: %s", request.method, request.url.path,
                  type(exc).__name__)
        return page("message.html", 503, user=None, title="Database unavailable",
                    message="The review database cannot be reached; try again in a moment.")

    return app
