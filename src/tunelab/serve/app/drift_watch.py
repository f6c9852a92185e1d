"""The server's drift gauges: a background thread that judges each served run's recent prompts.

Every ``monitor.interval`` seconds (and once at start) ``DriftWatch`` reads, per served
name that is a run, the newest logged prompts of the last ``monitor.window`` seconds,
compares them with the run's training data (``tunelab.eval.drift_reference``, the same
judgement as `tunelab monitor`) and sets, in the app's own metrics registry:

* ``tunelab_drift_psi{model,feature}`` and ``tunelab_drift_p_value{model,feature}``;
* ``tunelab_drift_alert{model}``: 1 when any feature drifted, else 0 (also with too few
  prompts to judge); ``tunelab_drift_prompts{model}``: the prompts judged;
* ``tunelab_feedback_up_rate{model}`` and ``tunelab_feedback_ratings{model}``: the last
  hour's share of "up" ratings and their count (the up-rate is absent without ratings);
* ``tunelab_drift_checked_timestamp_seconds``: when the last check ended.

The thread runs only tokenizers (each run's own, loaded from its folder, never the one
the request handlers use) and SQL; no torch, and so no embedding feature: the engine owns
torch on the main thread. It never logs prompt text: a failed check logs the error's
class and the run, and the next interval tries again. This module knows nothing of HTTP
routes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge

from tunelab.config.serve import ServeSettings
from tunelab.db import Database
from tunelab.db.monitor_rows import production_prompts, totals
from tunelab.errors import TunelabError
from tunelab.eval.drift_reference import RunReference, is_run_folder, run_reference
from tunelab.serve.registry import ModelRegistry

log = logging.getLogger(__name__)

FEEDBACK_WINDOW = timedelta(hours=1)  # the up-rate gauge's span
MAX_PROMPTS = 2000  # newest prompts per model judged at each check


class DriftWatch:
    """The gauges and the thread that keeps them current.

    Args:
        metrics: the app's registry (``ServeMetrics.registry``).
        runs: served name -> run folder, for the served names that are runs.
        names: every served name (for the feedback gauges).
        db: the request log.
        settings: the serve settings (``monitor``, ``log_text``).
    """

    def __init__(self, metrics: CollectorRegistry, runs: dict[str, Path], names: list[str],
                 db: Database, settings: ServeSettings) -> None:
        self.runs, self.names, self.db = runs, names, db
        self.monitor, self.log_text = settings.monitor, settings.log_text
        self._references: dict[Path, RunReference | None] = {}
        self._features: dict[str, set[str]] = {}  # the features last set per model
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.checks = 0  # finished checks (tests wait on it)
        r = metrics
        self.psi = Gauge("tunelab_drift_psi", "Population stability index of production prompts "
                         "against the training data, per feature", ["model", "feature"], registry=r)
        self.p_value = Gauge("tunelab_drift_p_value", "Two-sample test p-value of production "
                             "prompts against the training data", ["model", "feature"], registry=r)
        self.alert = Gauge("tunelab_drift_alert", "1 when a feature drifted past the monitor "
                           "thresholds, else 0", ["model"], registry=r)
        self.prompts = Gauge("tunelab_drift_prompts", "Production prompts judged at the last "
                             "drift check", ["model"], registry=r)
        self.up_rate = Gauge("tunelab_feedback_up_rate", "Share of 'up' among the last hour's "
                             "ratings of the model's responses", ["model"], registry=r)
        self.ratings = Gauge("tunelab_feedback_ratings", "Ratings of the model's responses in "
                             "the last hour", ["model"], registry=r)
        self.checked = Gauge("tunelab_drift_checked_timestamp_seconds",
                             "Unix time the last drift check ended", registry=r)

    def start(self) -> None:
        """Check now and every ``monitor.interval`` seconds, on a daemon thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="tunelab-drift-watch",
                                            daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.check()
            except Exception as e:  # never the message: it may quote a prompt
                log.warning("drift watch: the check failed (%s); trying again in %.0f s",
                            type(e).__name__, self.monitor.interval)
            self._stop.wait(max(0.0, self.monitor.interval - (time.monotonic() - started)))

    def check(self) -> None:
        """One round: the feedback gauges of every model, the drift gauges of every run."""
        now = datetime.now(timezone.utc)
        recent = totals(self.db, now - FEEDBACK_WINDOW, now)
        for name in self.names:
            t = recent.get(name)
            self.ratings.labels(model=name).set(0 if t is None else t.ratings)
            if t is not None and t.up_rate is not None:
                self.up_rate.labels(model=name).set(t.up_rate)
            else:
                _remove(self.up_rate, name)
        if self.log_text:
            since = now - timedelta(seconds=self.monitor.window)
            for name, run_dir in self.runs.items():
                self._judge(name, run_dir, since)
        self.checks += 1
        self.checked.set(time.time())

    def _reference(self, run_dir: Path) -> RunReference | None:
        if run_dir not in self._references:
            try:
                self._references[run_dir] = run_reference(run_dir)
            except TunelabError as e:
                log.warning("drift watch: no drift gauges for run %s: %s", run_dir,
                            e.message.splitlines()[0])
                self._references[run_dir] = None
        return self._references[run_dir]

    def _judge(self, name: str, run_dir: Path, since: datetime) -> None:
        reference = self._reference(run_dir)
        if reference is None:
            return
        logged = production_prompts(self.db, name, since, MAX_PROMPTS)
        report = reference.judge([p for p, _ in logged], [a for _, a in logged], self.monitor,
                                 no_embeddings="the server runs no embedding model beside "
                                               "the engine; `tunelab monitor` compares them")
        self.prompts.labels(model=name).set(report.production_prompts)
        self.alert.labels(model=name).set(1 if report.drifted else 0)
        features = {f.feature for f in report.features}
        for gone in self._features.get(name, set()) - features:  # e.g. too few prompts now:
            _remove(self.psi, name, gone)  # no stale numbers from an earlier check
            _remove(self.p_value, name, gone)
        self._features[name] = features
        for f in report.features:
            self.psi.labels(model=name, feature=f.feature).set(f.psi)
            self.p_value.labels(model=name, feature=f.feature).set(f.p_value)
        if report.drifted:
            log.warning("drift watch: %s drifted from its training data (%s)", name,
                        ", ".join(f"{f.feature} PSI {f.psi:.3f}" for f in report.drifted))


def _remove(gauge: Gauge, *labels: str) -> None:
    try:
        gauge.remove(*labels)
    except KeyError:
        pass


@contextmanager
def watch_drift(metrics: CollectorRegistry, registry: ModelRegistry, db: Database,
                settings: ServeSettings) -> Iterator[DriftWatch]:
    """Start the drift gauges of a server's models; stop them when the block ends."""
    runs = {name: Path(m.source) for name, m in registry.models.items() if is_run_folder(m.source)}
    if not settings.log_text and runs:
        log.info("drift watch: log_text is false, so no prompts to judge; only feedback gauges")
    watch = DriftWatch(metrics, runs, sorted(registry.models), db, settings)
    watch.start()
    try:
        yield watch
    finally:
        watch.close()
