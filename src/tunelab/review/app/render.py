"""Rendering the review app's pages: Jinja2 templates, guideline Markdown, security headers.

Every page gets a fresh nonce: the Content-Security-Policy allows only the page's own
inline style and script carrying it (no other scripts, no framing, forms posting only
to this origin). Guidelines are Markdown rendered by markdown-it in CommonMark mode with
raw HTML off, so a guideline cannot inject markup. Templates escape every value.

This module knows nothing of the database or of who is signed in.
"""

from __future__ import annotations

import secrets
from functools import cache
from importlib import resources

from jinja2 import Environment, PackageLoader, select_autoescape
from markdown_it import MarkdownIt
from markupsafe import Markup
from starlette.responses import HTMLResponse

_ENV = Environment(loader=PackageLoader("tunelab.review.app", "templates"),
                   autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
_MD = MarkdownIt("commonmark", {"html": False}).enable("table")


def _markdown(text: str) -> Markup:
    return Markup(_MD.render(text or ""))  # noqa: S704 - markdown-it escapes; raw HTML is off


_ENV.filters["markdown"] = _markdown


@cache
def _asset(name: str) -> str:
    return resources.files("tunelab.review.app").joinpath("static").joinpath(name).read_text("utf-8")


def page(template: str, status: int = 200, **context: object) -> HTMLResponse:
    """Render a template into a response with the app's security headers."""
    nonce = secrets.token_urlsafe(16)
    html = _ENV.get_template(template).render(nonce=nonce, style=Markup(_asset("review.css")),
                                              script=Markup(_asset("review.js")), **context)
    response = HTMLResponse(html, status_code=status)
    response.headers.update({
        "Content-Security-Policy": (f"default-src 'none'; style-src 'nonce-{nonce}'; "
                                    f"script-src 'nonce-{nonce}'; img-src 'self' data:; "
                                    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    })
    return response
