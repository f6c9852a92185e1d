"""What the routes do with a request: check it, submit it, answer, log and count it.

``ServeApp`` holds the server's state (registry, settings, filters, metrics, the request
log writer, the draining flag, requests in flight) and runs one request from its body to
its response. Errors leave as ``APIError`` in the OpenAI shape: unknown model 404, a
prompt that does not fit the context 400 (checked before the request joins the queue),
malformed tools or tool turns 400 naming the field (``tunelab.serve.app.tooluse``),
a full queue 429 with ``Retry-After``, draining 503. Every request that reached a model
route and passed the key check ends as one ``RequestRecord`` handed to the log writer,
which never blocks. Logged lines (``logging``) carry ids, counts and timings, never a
prompt or an answer. A request naming an experiment is routed to a variant's served
model first (``tunelab.serve.app.experiments``); from then on its responses, errors
included, carry the ``X-Tunelab-Experiment``/``X-Tunelab-Variant`` headers, its body and
its log record name the served model, and the record keeps the experiment and variant.

A chat request with ``tools`` (and ``tool_choice`` not ``none``) has its answer read for
calls (``tooluse.answer_calls``): calls found come back as ``message.tool_calls`` with
``finish_reason: "tool_calls"``, and the log keeps the answer as text with one JSON line
per call. Such a request, when streamed, is generated whole first (a call cannot be told
from text until it is complete) and sent as one content delta (text outside the calls, if
any), one ``tool_calls`` delta holding every call, and the finish chunk.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from tunelab.config.serve import ServeSettings
from tunelab.db import RequestRecord
from tunelab.errors import TunelabError
from tunelab.serve.app import schemas
from tunelab.serve.app.errors import (
    INVALID_REQUEST,
    NOT_FOUND,
    RATE_LIMIT,
    SERVER,
    UNAVAILABLE,
    APIError,
)
from tunelab.serve.app.experiments import ExperimentRouter, variant_headers
from tunelab.serve.app.filters import OutputFilter
from tunelab.serve.app.generation import ClientGone, Generation
from tunelab.serve.app.metrics import UNKNOWN_MODEL, ServeMetrics
from tunelab.serve.app.tooluse import Answer, answer_calls
from tunelab.serve.batching import (
    ContextLengthError,
    EngineClosedError,
    QueueFullError,
    SamplingParams,
)
from tunelab.serve.registry import ModelRegistry, ServedModel

log = logging.getLogger("tunelab.serve")

CLIENT_CLOSED = 499  # the status logged for a request whose client left (nginx's convention)
CHAT = "chat.completions"
COMPLETIONS = "completions"


class LogWriter(Protocol):
    """What the app needs of ``tunelab.db.RequestLogWriter``: a write that never blocks."""

    def write(self, record: RequestRecord) -> None: ...


@dataclass
class Job:
    """One request as the log and the metrics see it."""

    endpoint: str
    rid: str
    model: str  # the requested name if served, else "unknown" (metrics) / as given (log)
    requested: str
    user: str | None
    prompt: str | None  # for the log (None when log_text is false)
    stream: bool
    arrived: float = field(default_factory=time.monotonic)
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    created: int = field(default_factory=schemas.now)
    prompt_tokens: int = 0
    experiment: str | None = None  # the experiment the request named, once routed
    variant: str | None = None
    tools: tuple[dict, ...] | None = None  # chat with tools: read calls out of the answer

    def split(self, text: str) -> Answer:
        """The answer's text and the calls in it (none unless the request gave tools)."""
        return Answer(text) if self.tools is None else answer_calls(text, self.tools)

    def headers(self) -> dict[str, str]:
        return variant_headers(self.experiment, self.variant)


@dataclass
class Outcome:
    status: int
    finish_reason: str | None = None
    answer: str | None = None
    completion_tokens: int = 0
    first_token_at: float | None = None
    filtered: list[str] = field(default_factory=list)
    error_type: str | None = None


class ServeApp:
    """The state of one server and the life of each request."""

    def __init__(self, registry: ModelRegistry, settings: ServeSettings,
                 log_writer: LogWriter | None, metrics: ServeMetrics,
                 experiments: ExperimentRouter | None = None) -> None:
        self.registry = registry
        self.experiments = experiments
        self.settings = settings
        self.log_writer = log_writer
        self.metrics = metrics
        self.filters = OutputFilter.from_settings(settings.filters)
        self.draining = False
        self.in_flight = 0  # admitted requests whose response is not complete
        self._idle: asyncio.Event | None = None

    # --- drain -------------------------------------------------------------------------

    def start_draining(self) -> None:
        """New model requests get 503 and /ready says 503 from now on."""
        self.draining = True

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no admitted request is still sending; True if none is left in time."""
        if self.in_flight == 0:
            return True
        self._idle = self._idle or asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def _enter(self) -> None:
        self.in_flight += 1
        if self._idle is not None:
            self._idle.clear()

    def _leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0 and self._idle is not None:
            self._idle.set()

    # --- checks ------------------------------------------------------------------------

    def model(self, name: str) -> ServedModel:
        """The served model ``name``.

        Raises:
            APIError: 404 ``model_not_found``, naming the models served.
        """
        try:
            return self.registry.get(name)
        except KeyError:
            names = ", ".join(sorted(self.registry.models) + (
                self.experiments.names() if self.experiments is not None else []))
            raise APIError(404, f"the model {name!r} does not exist here; served: {names}",
                           NOT_FOUND, param="model", code="model_not_found") from None

    def _max_tokens(self, requested: int | None, prompt_tokens: int, context: int,
                    param: str, prompt_param: str) -> int:
        cap = self.settings.max_tokens
        if requested is not None and requested > cap:
            raise APIError(400, f"{param} is {requested}, above this server's limit of {cap}",
                           param=param, code="max_tokens_too_large")
        if requested is None:  # not asked for: the default, within what the context leaves
            requested = min(self.settings.default_max_tokens, max(1, context - prompt_tokens))
        if prompt_tokens + requested > context:
            raise APIError(400, f"This model's maximum context length is {context} tokens. "
                                f"However, you requested {prompt_tokens + requested} tokens "
                                f"({prompt_tokens} in the {prompt_param}, {requested} in the "
                                "completion). Please reduce the length of the "
                                f"{prompt_param} or completion.",
                           param=prompt_param, code="context_length_exceeded")
        return requested

    # --- one request -------------------------------------------------------------------

    async def handle(self, request: Request, body: schemas.ChatRequest | schemas.CompletionRequest
                     ) -> Response:
        """Answer one chat or completions request (JSON, or server-sent events)."""
        chat = isinstance(body, schemas.ChatRequest)
        endpoint = CHAT if chat else COMPLETIONS
        log_prompt = body.log_prompt() if self.settings.log_text else None
        job = Job(endpoint, schemas.new_id("chatcmpl" if chat else "cmpl"), UNKNOWN_MODEL,
                  body.model, body.user, log_prompt, body.stream)
        try:
            served = await self._route(job, body, request)
            gen = self._admit(job, body, served)
        except APIError as e:
            self.finish(job, Outcome(e.status, error_type=e.type))
            return _tagged(e.response(), job)
        self._enter()
        if body.stream:
            end = _StreamEnd(self, job, gen)
            return _ClosingStream(self._stream(job, gen, body, request, end), end,
                                  media_type="text/event-stream",
                                  headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no",
                                           **job.headers()})
        try:
            return await self._complete(job, gen, request)
        finally:
            self._leave()

    async def _route(self, job: Job, body: schemas.ChatRequest | schemas.CompletionRequest,
                     request: Request) -> str:
        """The served model's name: the request's own, or its experiment variant's."""
        if self.experiments is None or self.draining:  # draining: _admit answers 503
            return body.model
        routed = await self.experiments.route(body.model, body.user, request.headers)
        if routed is None:
            return body.model
        job.experiment, job.variant = routed.experiment, routed.variant
        # a unit from the header is logged as the user, so the report groups its feedback
        job.user = job.user or routed.unit
        return routed.model

    def _admit(self, job: Job, body: schemas.ChatRequest | schemas.CompletionRequest,
               served: str) -> Generation:
        if self.draining:
            raise APIError(503, "the server is shutting down; retry on another instance",
                           UNAVAILABLE, code="server_draining")
        model = self.model(served)
        job.model = model.name
        where = body.prompt_param()
        try:
            if isinstance(body, schemas.ChatRequest):
                conv = body.conversation()
                job.tools = conv.tools if conv.read_calls else None
                ids = model.render(conv.messages, conv.tools)
            else:
                ids = model.encode(body.text())
        except TunelabError as e:
            raise APIError(400, e.message, INVALID_REQUEST, param=where) from None
        job.prompt_tokens = len(ids)
        max_tokens = self._max_tokens(body.requested_tokens(), len(ids), model.context_length,
                                      body.tokens_param(), where)
        try:
            params = SamplingParams(max_new_tokens=max_tokens, temperature=body.temperature,
                                    top_p=body.top_p, seed=body.seed)
            return Generation(model, ids, params, body.stops())
        except QueueFullError as e:
            raise APIError(429, "the server is at capacity (its request queue is full); "
                                "retry after the time in Retry-After",
                           RATE_LIMIT, code="queue_full", retry_after=e.retry_after) from None
        except ContextLengthError as e:
            raise APIError(400, f"This model's maximum context length is {e.context_length} "
                                f"tokens; the request needs {e.prompt_tokens} + "
                                f"{e.max_new_tokens}", param=where, code="context_length_exceeded") from None
        except EngineClosedError:
            raise APIError(503, "the server is shutting down; retry on another instance",
                           UNAVAILABLE, code="server_draining") from None
        except TunelabError as e:  # an empty prompt, a value the engine refuses
            raise APIError(400, e.message, INVALID_REQUEST, param=where) from None

    async def _complete(self, job: Job, gen: Generation, request: Request) -> Response:
        try:
            text = await gen.answer(request.is_disconnected)
        except ClientGone:
            self.finish(job, self._outcome(gen, CLIENT_CLOSED, "cancelled"))
            return Response(status_code=CLIENT_CLOSED, headers=job.headers())
        except asyncio.CancelledError:
            gen.cancel()
            self.finish(job, self._outcome(gen, CLIENT_CLOSED, "cancelled"))
            raise
        reason = gen.finish_reason
        failed = self._failure(reason)
        if failed is not None:
            self.finish(job, self._outcome(gen, failed.status, reason, error_type=failed.type))
            return _tagged(failed.response(), job)
        text, changed = self.filters.apply(text)
        answer = job.split(text)
        reason = _with_calls(reason or "stop", answer)
        out = self._outcome(gen, 200, reason, answer.log_text() if answer.calls else text, changed)
        self.finish(job, out)
        if job.endpoint == CHAT:
            body = schemas.chat_response(job.rid, job.created, job.model, answer.content, reason,
                                         job.prompt_tokens, gen.completion_tokens, answer.calls)
        else:
            body = schemas.completion_response(job.rid, job.created, job.model, text, reason,
                                               job.prompt_tokens, gen.completion_tokens)
        return JSONResponse(body, headers=job.headers())

    async def _stream(self, job: Job, gen: Generation, body: Any, request: Request,
                      end: _StreamEnd) -> AsyncIterator[str]:
        chat = job.endpoint == CHAT
        out = end.outcome

        def chunk(text: str, finish: str | None = None) -> str:
            if chat:
                delta = {"content": text} if text or finish is None else {}
                return _sse(schemas.chat_chunk(job.rid, job.created, job.model, delta, finish))
            return _sse(schemas.completion_chunk(job.rid, job.created, job.model, text, finish))

        try:
            if chat:
                yield _sse(schemas.chat_chunk(job.rid, job.created, job.model,
                                              {"role": "assistant", "content": ""}))
            answer = Answer(None)
            if self.filters.active or job.tools is not None:
                # A filter needs the whole answer (a match can straddle chunks), and so does
                # reading calls: generate it all, filter, then send it as one chunk.
                text = await gen.answer(request.is_disconnected)
                text, out.filtered = self.filters.apply(text)
                answer = job.split(text)
                out.answer = answer.log_text() if answer.calls else text
                if answer.content:
                    yield chunk(answer.content)
                if answer.calls:
                    yield _sse(schemas.chat_chunk(job.rid, job.created, job.model,
                                                  schemas.tool_calls_delta(answer.calls)))
            else:
                out.answer = ""
                async for piece in gen.pieces(request.is_disconnected):
                    out.answer += piece
                    yield chunk(piece)
            reason = out.finish_reason = gen.finish_reason or "stop"
            failed = self._failure(reason)
            if failed is not None:
                out.status, out.error_type = failed.status, failed.type
                yield _sse(failed.body())
            else:
                out.status = 200
                reason = out.finish_reason = _with_calls(reason, answer)
                yield chunk("", reason)
                if body.include_usage():
                    yield _sse(schemas.usage_chunk(
                        job.rid, job.created, job.model,
                        "chat.completion.chunk" if chat else "text_completion",
                        job.prompt_tokens, gen.completion_tokens))
            yield "data: [DONE]\n\n"
        except ClientGone:
            pass
        finally:  # also on cancellation or the stream being closed early
            end.close()

    def _failure(self, reason: str | None) -> APIError | None:
        if reason == "error":
            return APIError(500, "generation failed (see the server log)", SERVER)
        if reason == "cancelled":  # the engine was closed under the request (drain timeout)
            return APIError(503, "the server shut down before the answer was complete",
                            UNAVAILABLE, code="server_draining")
        return None

    def _outcome(self, gen: Generation, status: int, reason: str | None, answer: str | None = None,
                 filtered: list[str] | None = None, error_type: str | None = None) -> Outcome:
        first = gen.seq.first_token_at
        return Outcome(status, reason, answer, gen.completion_tokens, first, filtered or [],
                       error_type)

    # --- the record of a request -------------------------------------------------------

    def finish(self, job: Job, out: Outcome) -> None:
        """Count the request, log a line without text, and hand its record to the log writer."""
        done = time.monotonic()
        latency = done - job.arrived
        ttft = out.first_token_at - job.arrived if out.first_token_at is not None else None
        m = self.metrics
        m.requests.labels(model=job.model, endpoint=job.endpoint, status=str(out.status)).inc()
        if out.status >= 400 and out.status != CLIENT_CLOSED:
            m.errors.labels(model=job.model, type=out.error_type or "error").inc()
        if out.status == 200:
            m.latency.labels(model=job.model).observe(latency)
            m.tokens.labels(model=job.model).inc(out.completion_tokens)
            if ttft is not None:
                m.ttft.labels(model=job.model).observe(max(0.0, ttft))
                decode = done - out.first_token_at if out.first_token_at is not None else 0.0
                if out.completion_tokens > 1 and decode > 0:
                    m.tokens_per_second.labels(model=job.model).observe(
                        (out.completion_tokens - 1) / decode)
        if job.experiment is not None and job.variant is not None:  # names from the config only
            m.experiment_requests.labels(experiment=job.experiment, variant=job.variant,
                                         status=str(out.status)).inc()
        # the name as the client sent it, quoted (%r): a newline in it cannot forge a log line
        log.info("%s %s model=%r status=%d finish=%s prompt_tokens=%d completion_tokens=%d "
                 "latency_ms=%.1f%s%s", job.rid, job.endpoint, job.requested, out.status,
                 out.finish_reason, job.prompt_tokens, out.completion_tokens, latency * 1000,
                 f" filtered={','.join(out.filtered)}" if out.filtered else "",
                 f" variant={job.variant!r}" if job.variant is not None else "")
        if self.log_writer is None:
            return
        record = RequestRecord(
            request_id=job.rid, created_at=job.created_at, endpoint=job.endpoint,
            model=job.model if job.model != UNKNOWN_MODEL else job.requested,
            user=job.user, prompt=job.prompt if self.settings.log_text else None,
            answer=out.answer if self.settings.log_text else None,
            prompt_tokens=job.prompt_tokens, completion_tokens=out.completion_tokens,
            latency_ms=latency * 1000, time_to_first_token_ms=None if ttft is None else ttft * 1000,
            finish_reason=out.finish_reason, status_code=out.status, stream=job.stream,
            filtered=",".join(out.filtered) or None, experiment=job.experiment,
            variant=job.variant)
        try:
            self.log_writer.write(record)
        except Exception:  # the log must never take an answer down with it
            log.exception("%s: the request log writer failed", job.rid)


def _with_calls(reason: str, answer: Answer) -> str:
    """``tool_calls`` for an answer that ended by itself with calls; else ``reason``
    (an answer cut at ``length`` says so, whatever calls it holds)."""
    return "tool_calls" if answer.calls and reason == "stop" else reason


def _tagged(response: Response, job: Job) -> Response:
    """``response`` with the experiment headers of a routed request."""
    response.headers.update(job.headers())
    return response


def _sse(obj: dict[str, Any]) -> str:
    """One server-sent event: ``data: <json>`` and a blank line."""
    return f"data: {json.dumps(obj, ensure_ascii=False, separators=(',', ':'))}\n\n"


class _StreamEnd:
    """The end of a streamed request, run once: cancel the sequence (harmless when it
    finished), record the outcome, leave the in-flight count."""

    def __init__(self, app: ServeApp, job: Job, gen: Generation) -> None:
        self.app, self.job, self.gen = app, job, gen
        self.outcome = Outcome(CLIENT_CLOSED, "cancelled")
        self.done = False

    def close(self) -> None:
        if self.done:
            return
        self.done = True
        self.gen.cancel()
        out = self.outcome
        out.completion_tokens = self.gen.completion_tokens
        out.first_token_at = self.gen.seq.first_token_at
        self.app.finish(self.job, out)
        self.app._leave()


class _ClosingStream(StreamingResponse):
    """A streaming response that ends its request however sending stops: the generator is
    closed at once (its ``finally`` runs now, not when it is collected), and a stream that
    never started (the client left first) is ended too."""

    def __init__(self, content: AsyncIterator[str], end: _StreamEnd, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.end = end

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                await close()
            self.end.close()
