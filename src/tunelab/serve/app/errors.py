"""Errors in the OpenAI shape: ``{"error": {"message", "type", "param", "code"}}``.

Every error the server sends has this shape (clients such as the ``openai`` package read
it), including FastAPI's own: a body that fails validation (422 there) is a 400
``invalid_request_error`` naming the field, and an unknown path or method keeps its
404/405 status with the same body. This module knows nothing of models or the engine.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

INVALID_REQUEST = "invalid_request_error"
AUTHENTICATION = "authentication_error"
PERMISSION = "permission_error"  # what OpenAI sends with 403
NOT_FOUND = "not_found_error"
RATE_LIMIT = "rate_limit_error"  # what OpenAI sends with 429
SERVER = "server_error"
UNAVAILABLE = "service_unavailable_error"


class APIError(Exception):
    """An error a route answers with, in the OpenAI shape.

    Args:
        status: the HTTP status code.
        message: what happened, for the client.
        type: the OpenAI error type (``invalid_request_error``, ...).
        param: the request field at fault, if one is.
        code: a machine-readable code (``model_not_found``, ``context_length_exceeded``).
        retry_after: seconds; sent as ``Retry-After`` (429, 503).
    """

    def __init__(self, status: int, message: str, type: str = INVALID_REQUEST,
                 param: str | None = None, code: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        """The JSON body: ``{"error": {...}}``."""
        return error_body(self.message, self.type, self.param, self.code)

    def response(self) -> JSONResponse:
        """The JSON response, with ``Retry-After`` (whole seconds, at least 1) when set."""
        headers = {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def error_body(message: str, type: str, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def validation_error(exc: RequestValidationError) -> APIError:
    """A 400 naming the first field that failed (``messages.0.content``) and why."""
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request body"}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    if first.get("type") == "json_invalid":
        return APIError(400, "the request body is not valid JSON", param=None, code="invalid_json")
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if first.get("type") == "missing":
        msg = "required but missing"
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    where = f"{param}: " if param else ""
    return APIError(400, f"{where}{msg}{more}", param=param)


async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return validation_error(exc).response()


async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return exc.response()


async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's 404 (no such path), 405 (wrong method) and the like, in the OpenAI shape."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        err = APIError(404, f"no route {request.method} {request.url.path}", NOT_FOUND,
                       code="not_found")
    elif exc.status_code == 405:
        err = APIError(405, f"method {request.method} is not allowed on {request.url.path}",
                       INVALID_REQUEST, code="method_not_allowed")
    else:
        err = APIError(exc.status_code, str(exc.detail),
                       INVALID_REQUEST if exc.status_code < 500 else SERVER)
    response = err.response()
    for k, v in (exc.headers or {}).items():
        response.headers[k] = v
    return response


async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    """A bug in tunelab: a 500 in the OpenAI shape, without the exception's text."""
    return APIError(500, "internal server error (a bug in tunelab; see the server log)",
                    SERVER).response()
