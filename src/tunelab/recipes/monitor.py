"""`tunelab monitor`: traffic, errors, latency and feedback per served model over time, and
drift of its production prompts against the run's training data.

The served models are the serve config's ``models`` and ``aliases``, named as the server
names them (a run by its run name; ``tunelab.serve.registry``), plus any other model with
rows in the request log. A name that is a run (found as the server finds it, under
``runs_dir``) is compared with its training data (``tunelab.eval.drift_reference``: the
run's tokenizer and data, no weights loaded); a plain store model has no training data,
and says so. The newest ``MAX_PRODUCTION_PROMPTS`` prompts since ``since`` are compared.
Embeddings are compared when the ``semantic`` extra is installed.

This recipe prints nothing: it returns a ``MonitorResult`` that the CLI shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tunelab.config.serve import ServeSettings
from tunelab.db.monitor_rows import (
    TrafficBucket,
    bucket_for,
    logged_models,
    production_prompts,
    rows_without_text,
    traffic,
)
from tunelab.errors import TunelabError, UsageError
from tunelab.eval.drift import DriftReport
from tunelab.eval.drift_reference import Embed, RunReference, run_reference
from tunelab.models.embedding import SEMANTIC_INSTALL, load_embedder, semantic_available
from tunelab.tracking.reporter import SILENT, Reporter
from tunelab.tracking.run_dir import find_run

MAX_PRODUCTION_PROMPTS = 2000  # newest prompts per model compared with the training data


@dataclass
class ModelMonitor:
    """One served model: its traffic per bucket and, for a run, its drift."""

    name: str
    run: str | None  # the run folder; None: not a run (no training data to compare with)
    traffic: list[TrafficBucket]
    drift: DriftReport | None = None
    note: str | None = None  # why there is no drift report

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.name, "run": self.run,
                "traffic": [b.as_dict() for b in self.traffic],
                "drift": None if self.drift is None else self.drift.as_dict(), "note": self.note}


@dataclass
class MonitorResult:
    """Every monitored model over one span, and the thresholds they were judged by."""

    since: datetime
    until: datetime
    bucket: str  # "hour" or "day"
    database: str  # the URL without its password
    psi_threshold: float
    p_value: float
    models: list[ModelMonitor] = field(default_factory=list)

    @property
    def alerts(self) -> list[str]:
        """One line per drifted feature of any model."""
        out = []
        for m in self.models:
            for f in m.drift.drifted if m.drift is not None else []:
                out.append(f"ALERT: {m.name}: {f.feature} drifted from the training data "
                           f"(PSI {f.psi:.3f} > {self.psi_threshold:g}, {f.test} p={f.p_value:.2g} "
                           f"< {self.p_value:g}, {f.production_n:,} prompts)")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"since": self.since.isoformat(), "until": self.until.isoformat(),
                "bucket": self.bucket, "database": self.database,
                "psi_threshold": self.psi_threshold, "p_value": self.p_value,
                "models": [m.as_dict() for m in self.models], "alerts": self.alerts}


def served_runs(settings: ServeSettings) -> dict[str, str]:
    """Served name -> reference, as the server names them: a run by its run name, any
    other reference by itself, plus the aliases. Nothing is loaded."""
    named: dict[str, str] = {}
    for ref in settings.models:
        run_dir = find_run(ref, settings.runs_dir)
        named[run_dir.name if run_dir is not None else ref] = ref
    named.update(settings.aliases)
    return named


def run_monitor(settings: ServeSettings, since: datetime, until: datetime,
                model: str | None = None, reporter: Reporter = SILENT,
                embeddings: bool = True) -> MonitorResult:
    """Traffic and drift of every served model (or one) between ``since`` and ``until``.

    Args:
        settings: the serve settings (``models``, ``aliases``, ``runs_dir``, ``db``, ``monitor``).
        since, until: the span, aware times.
        model: one served name only; None: all.
        reporter: told what is read, and why a model has no drift report.
        embeddings: compare embeddings when the ``semantic`` extra is installed.

    Raises:
        UsageError: ``model`` is neither served by the config nor in the request log.
        DatabaseError: the database cannot be opened or read.
    """
    from tunelab.db import open_database

    if since >= until:
        raise UsageError(f"--since {since.isoformat()} is not before now ({until.isoformat()})",
                         hint="give a time in the past, e.g. --since 24h")
    named = served_runs(settings)
    db = open_database(settings.db)
    try:
        names = sorted(set(named) | set(logged_models(db, since)))
        if model is not None:
            if model not in names:
                known = ", ".join(names) or "none"
                raise UsageError(f"model {model!r} is not served by the config and has no "
                                 f"requests since {since.isoformat()} (known: {known})",
                                 hint="name one of the known models, or give the serve config "
                                      "with --config")
            names = [model]
        bucket = bucket_for(since, until)
        result = MonitorResult(since, until, bucket, db.safe_url,
                               settings.monitor.psi_threshold, settings.monitor.p_value)
        rows = traffic(db, since, until, bucket, model)
        embed = _embedder(reporter) if embeddings else None
        references: dict[Path, RunReference | str] = {}  # one per run, however many names
        for name in names:
            m = ModelMonitor(name, None, [b for b in rows if b.model == name])
            _judge(m, named.get(name, name), db, settings, since, embed, references, reporter)
            result.models.append(m)
        return result
    finally:
        db.close()


def _embedder(reporter: Reporter) -> Embed | None:
    if not semantic_available():
        reporter.info(f"embeddings not compared: the semantic extra is not installed ({SEMANTIC_INSTALL})")
        return None
    return load_embedder()


def _judge(m: ModelMonitor, ref: str, db: Any, settings: ServeSettings, since: datetime,
           embed: Embed | None, references: dict[Path, RunReference | str],
           reporter: Reporter) -> None:
    """Fill ``m.drift`` (or ``m.note``) for one served name."""
    run_dir = find_run(ref, settings.runs_dir)
    if run_dir is None:
        m.note = "not a run: no training data to compare with, so no drift check"
        return
    m.run = str(run_dir)
    logged = production_prompts(db, m.name, since, MAX_PRODUCTION_PROMPTS)
    if not logged:
        hidden = rows_without_text(db, m.name, since)
        m.note = (f"{hidden:,} answered request(s) but no prompt text in the log (log_text: "
                  "false), so no drift check" if hidden else "no answered prompts to compare")
        return
    if run_dir not in references:
        try:
            references[run_dir] = run_reference(run_dir, embed, reporter)
        except TunelabError as e:
            references[run_dir] = f"no drift check: the run's training data cannot be read ({e.message})"
            reporter.warning(f"{m.name}: {references[run_dir]}")
    reference = references[run_dir]
    if isinstance(reference, str):
        m.note = reference
        return
    m.drift = reference.judge([p for p, _ in logged], [a for _, a in logged], settings.monitor,
                              embed)

