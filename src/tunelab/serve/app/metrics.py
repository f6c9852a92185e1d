"""Prometheus metrics of one server app, in a registry of its own (two apps in one
process, as in tests, never share or collide).

Per model (the name a request uses): requests by endpoint and status code, errors by
type, time to first token, request latency, generated tokens, per-request decode speed,
and the engine's waiting and running sequences (read when scraped). Per engine: the
batch size and duration of each decode step (``ServingEngine.on_step``). Feedback by
the model that answered and its kind (up, down, score, correction, comment). A name that is
not served is counted as ``model="unknown"``, so a client cannot grow the label set.
Per experiment and variant (names from the config, never from a client): requests by
status code.
This module knows nothing of HTTP routes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

UNKNOWN_MODEL = "unknown"
_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128)
_RATE = (1, 5, 10, 25, 50, 100, 250, 500, 1000)


class ServeMetrics:
    """The collectors of one app."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("tunelab_requests", "Requests by model, endpoint and status code",
                                ["model", "endpoint", "status"], registry=r)
        self.errors = Counter("tunelab_request_errors", "Failed requests by model and error type",
                              ["model", "type"], registry=r)
        self.waiting = Gauge("tunelab_queue_depth", "Requests waiting for a slot in the engine",
                             ["model"], registry=r)
        self.running = Gauge("tunelab_running_sequences", "Sequences decoding in the engine",
                             ["model"], registry=r)
        self.ttft = Histogram("tunelab_time_to_first_token_seconds",
                              "Seconds from arrival to the first generated token", ["model"],
                              buckets=_SECONDS, registry=r)
        self.latency = Histogram("tunelab_request_latency_seconds",
                                 "Seconds from arrival to the last byte of the answer",
                                 ["model"], buckets=_SECONDS, registry=r)
        self.tokens = Counter("tunelab_generated_tokens", "Tokens generated", ["model"],
                              registry=r)
        self.tokens_per_second = Histogram("tunelab_request_tokens_per_second",
                                           "Decode speed of one request after its first token",
                                           ["model"], buckets=_RATE, registry=r)
        self.experiment_requests = Counter(
            "tunelab_experiment_requests", "Requests routed by an experiment, by variant and "
            "status code", ["experiment", "variant", "status"], registry=r)
        self.batch = Histogram("tunelab_batch_size", "Sequences in each decode step",
                               ["engine"], buckets=_BATCH, registry=r)
        self.step_seconds = Histogram("tunelab_step_seconds", "Seconds per decode step",
                                      ["engine"], buckets=_SECONDS, registry=r)
        # exposed as tunelab_feedback_total; a replayed Idempotency-Key is not counted again
        self.feedback = Counter("tunelab_feedback", "Feedback stored, by the model that "
                                "answered and kind (up, down, score, correction, comment)",
                                ["model", "kind"], registry=r)

    def watch_engine(self, names: Iterable[str], waiting: Callable[[], float],
                     running: Callable[[], float]) -> None:
        """Read the engine's queue and batch when scraped, for each model name it serves."""
        for name in names:
            self.waiting.labels(model=name).set_function(waiting)
            self.running.labels(model=name).set_function(running)

    def step_observer(self, engine: str) -> Callable[[int, int, float], None]:
        """An ``on_step(batch_size, new_tokens, seconds)`` callback for one engine."""
        batch = self.batch.labels(engine=engine)
        seconds = self.step_seconds.labels(engine=engine)

        def on_step(batch_size: int, new_tokens: int, step_seconds: float) -> None:
            batch.observe(batch_size)
            seconds.observe(step_seconds)
        return on_step

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
