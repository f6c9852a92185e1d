"""The FastAPI app: OpenAI-compatible routes, probes, metrics, and the key check around all.

``create_app(registry, settings, log_writer, api_keys)`` builds one app over models that
are already loaded (``tunelab.serve.registry``); it starts and stops nothing (the serve
recipe owns the engines, the log writer and uvicorn). Routes:

* ``POST /v1/chat/completions``, ``POST /v1/completions``: answers, JSON or SSE;
* ``GET /v1/models`` (and ``/v1/models/{name}``): the names a request may use;
* ``GET /health``: the process answers (no key); ``GET /ready``: 200 while models are
  loaded and the server is not draining, else 503 (no key);
* ``GET /metrics``: Prometheus text; needs a key unless ``public_metrics``;
* ``GET /admin/experiments``, ``PUT /admin/experiments/{name}``: experiment weights,
  with the admin key only (``tunelab.serve.app.experiments``).
* ``POST /v1/feedback``: a user's rating, score, correction or comment on a response
  (``tunelab.serve.app.feedback``).

``/v1/models`` lists the experiments beside the models: a request may name either.

Every error body has the OpenAI shape (``tunelab.serve.app.errors``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunelab.config.serve import ServeSettings
from tunelab.db import Database
from tunelab.serve.app import schemas
from tunelab.serve.app.auth import OPEN_PATHS, KeyCheck
from tunelab.serve.app.errors import (
    UNAVAILABLE,
    APIError,
    on_api_error,
    on_http_error,
    on_unexpected,
    validation_error,
)
from tunelab.serve.app.experiments import ExperimentRouter, add_admin_routes
from tunelab.serve.app.feedback import RecentResponses, add_feedback_route
from tunelab.serve.app.limits import BodyLimit
from tunelab.serve.app.metrics import UNKNOWN_MODEL, ServeMetrics
from tunelab.serve.app.service import CHAT, COMPLETIONS, Job, LogWriter, Outcome, ServeApp
from tunelab.serve.registry import ModelRegistry

_ENDPOINTS = {"/v1/chat/completions": CHAT, "/v1/completions": COMPLETIONS}


def create_app(registry: ModelRegistry, settings: ServeSettings, log_writer: LogWriter | None,
               api_keys: list[str], db: Database | None = None,
               admin_key: str | None = None) -> FastAPI:
    """The server app over a loaded registry.

    Args:
        registry: the served models (started by the caller).
        settings: the serve settings (limits, filters, log_text, public_metrics).
        log_writer: where request records go (``tunelab.db.RequestLogWriter``); None: nowhere.
        api_keys: the valid keys; at least one (the CLI generates one when none is configured).
        db: the open database: experiment assignments (needed when experiments
            are declared) and feedback (None: feedback gets 503).
        admin_key: the key of the /admin/ routes; None: they are off.

    Returns:
        The app; its ``state.serve`` is the ``ServeApp`` (draining flag, in-flight count),
        its ``state.experiments`` the ``ExperimentRouter`` (reload on SIGHUP).

    Raises:
        ConfigError: an experiment's variant names a model that is not served.
        UsageError: experiments are declared but ``db`` is None.
    """
    app = FastAPI(title="tunelab", docs_url=None, redoc_url=None, openapi_url=None)
    metrics = ServeMetrics()
    experiments = ExperimentRouter(settings.experiments, registry.models, db)
    # the feedback route must know the responses answered but not yet in the log
    recent = RecentResponses(log_writer) if log_writer is not None else None
    serve = ServeApp(registry, settings, recent, metrics, experiments)
    app.state.serve = serve
    app.state.experiments = experiments
    _watch_engines(registry, metrics)

    async def on_bad_body(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        err = validation_error(exc)
        endpoint = _ENDPOINTS.get(request.url.path)
        if endpoint is not None:  # a model route: counted and logged like any request
            serve.finish(Job(endpoint, schemas.new_id("chatcmpl" if endpoint == CHAT else "cmpl"),
                             UNKNOWN_MODEL, "", None, None, False),
                         Outcome(err.status, error_type=err.type))
        return err.response()

    app.add_exception_handler(RequestValidationError, on_bad_body)
    app.add_exception_handler(APIError, on_api_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
    open_paths = OPEN_PATHS | ({"/metrics"} if settings.public_metrics else set())
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)
    # Added last, so it runs first: a request without a key is refused before its body is read.
    app.add_middleware(KeyCheck, keys=list(api_keys), open_paths=frozenset(open_paths),
                       admin_key=admin_key)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: schemas.ChatRequest, request: Request) -> Response:
        return await serve.handle(request, body)

    @app.post("/v1/completions")
    async def completions(body: schemas.CompletionRequest, request: Request) -> Response:
        return await serve.handle(request, body)

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return schemas.models_list([(m.name, m.created) for m in registry.models.values()]
                                   + [(n, experiments.created(n)) for n in experiments.names()])

    @app.get("/v1/models/{name:path}")
    async def get_model(name: str) -> dict[str, Any]:
        if experiments.get(name) is not None:
            return schemas.models_list([(name, experiments.created(name))])["data"][0]
        m = serve.model(name)
        return schemas.models_list([(m.name, m.created)])["data"][0]

    add_feedback_route(app, db, recent, metrics)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> Response:
        if serve.draining:
            return APIError(503, "draining: the server is shutting down", UNAVAILABLE,
                            code="server_draining").response()
        if not registry.models:
            return APIError(503, "no model is loaded", UNAVAILABLE, code="not_ready").response()
        return JSONResponse({"status": "ready", "models": sorted(registry.models)})

    @app.get("/metrics")
    async def metrics_route() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    add_admin_routes(app, experiments)

    return app


def _watch_engines(registry: ModelRegistry, metrics: ServeMetrics) -> None:
    """Queue depth and batch gauges per model, and the step observer of each engine."""
    by_engine: dict[int, list[Any]] = {}
    for m in registry.models.values():
        by_engine.setdefault(id(m.engine), []).append(m)
    for served in by_engine.values():
        engine = served[0].engine
        names = [m.name for m in served]
        metrics.watch_engine(names, _reader(engine, "waiting"), _reader(engine, "running"))
        observe = metrics.step_observer("+".join(sorted(names)))
        before = engine.on_step

        def on_step(batch: int, tokens: int, seconds: float, before: Any = before,
                    observe: Any = observe) -> None:
            observe(batch, tokens, seconds)
            if before is not None:
                before(batch, tokens, seconds)
        engine.on_step = on_step


def _reader(engine: Any, attribute: str) -> Callable[[], float]:
    return lambda: float(getattr(engine, attribute))
