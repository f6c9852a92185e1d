"""`tunelab monitor`: arguments, the tables a person reads, the alert lines and the exit code.

Per model: a table of traffic, errors, latency and feedback over time (hourly for spans
up to three days, else daily), then the drift table (PSI, test statistic, p, verdict per
feature) for a model that is a run. Each drifted feature gets an ``ALERT:`` line on
stderr; with ``--fail-on-drift`` any alert makes the exit code 1 (``exits.PROBLEMS``).
``--json`` prints the whole result as one JSON object last; ``--html DIR`` writes the
report page there.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone

from tunelab.cli import exits
from tunelab.cli.args import since_time

DEFAULT_SINCE = "24h"


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``monitor`` to the top-level sub-parsers."""
    p = sub.add_parser(
        "monitor", help="traffic, errors, latency, feedback and prompt drift of served models",
        description="Read the request log: requests, errors, latency and feedback per model "
                    "over time, and drift of production prompts against each run's training "
                    "data (prompt length, vocabulary, embeddings with the semantic extra, "
                    "and a classifier's labels). An ALERT line goes to stderr for each "
                    "drifted feature.")
    p.add_argument("--config", default=None, metavar="YAML",
                   help="the serve settings file: its models, runs_dir, db and monitor "
                        "thresholds (psi_threshold, p_value, min_prompts)")
    p.add_argument("--db", default=None, metavar="URL",
                   help="the request log database (default: the config's, else SQLite under "
                        "the tunelab home)")
    p.add_argument("--since", type=since_time, default=DEFAULT_SINCE, metavar="SPAN_OR_TIME",
                   help=f"from when: 30m, 24h, 7d, 2w ago, or an ISO time (default {DEFAULT_SINCE})")
    p.add_argument("--model", default=None, metavar="NAME", help="one served model only")
    p.add_argument("--runs-dir", default=None,
                   help="where run names are looked up (default: the config's, else runs)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line last")
    p.add_argument("--html", default=None, metavar="DIR", help="also write an HTML report there")
    p.add_argument("--fail-on-drift", action="store_true",
                   help=f"exit {exits.PROBLEMS} when any feature drifted")
    p.set_defaults(func=_cmd_monitor)


def _cmd_monitor(a: argparse.Namespace) -> int:
    from tunelab.cli.reporter import StderrReporter
    from tunelab.config.serve import load_serve_settings
    from tunelab.recipes.monitor import run_monitor

    settings = load_serve_settings(a.config, {"db": a.db, "runs_dir": a.runs_dir})
    now = datetime.now(timezone.utc)
    result = run_monitor(settings, a.since, now, a.model, StderrReporter())
    for line in _tables(result):
        print(line)
    if a.html:
        from tunelab.eval.monitor_report import write_monitor_report

        index = write_monitor_report(a.html, result.as_dict())
        print(f"report: {index}", file=sys.stderr)
    for line in result.alerts:
        print(line, file=sys.stderr)
    if a.json:
        print(json.dumps(result.as_dict(), default=str))
    return exits.PROBLEMS if a.fail_on_drift and result.alerts else exits.OK


def _num(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def _tables(result) -> list[str]:
    lines = [f"monitor: {result.since:%Y-%m-%d %H:%M} to {result.until:%Y-%m-%d %H:%M} UTC, "
             f"per {result.bucket}, {result.database}"]
    if not result.models:
        lines.append("no requests in this span, and no models in the config")
    fmt = "%Y-%m-%d %H:00" if result.bucket == "hour" else "%Y-%m-%d"
    for m in result.models:
        lines.append("")
        lines.append(f"model {m.name}" + (f" (run {m.run})" if m.run else ""))
        if m.traffic:
            lines.append(f"  {result.bucket + ' (UTC)':16} {'requests':>9} {'errors':>7} "
                         f"{'p50 ms':>8} {'p99 ms':>8} {'feedback':>9} {'up rate':>8} {'score':>6}")
            for b in m.traffic:
                lines.append(f"  {b.start.strftime(fmt):16} {b.requests:>9,} {b.errors:>7,} "
                             f"{_num(b.latency_p50_ms, '.1f'):>8} {_num(b.latency_p99_ms, '.1f'):>8} "
                             f"{b.feedback:>9,} {_num(b.up_rate, '.2f'):>8} "
                             f"{_num(b.mean_score, '.2f'):>6}")
        else:
            lines.append("  no requests in this span")
        d = m.drift
        if d is not None:
            lines.append(f"  drift of {d.production_prompts:,} prompts against the training "
                         f"data: {d.verdict}")
            if d.features:
                lines.append(f"  {'feature':16} {'PSI':>8} {'test':>5} {'statistic':>10} "
                             f"{'p':>9} {'n':>6}  verdict")
                for f in d.features:
                    verdict = "DRIFT" if f.drifted else "ok"
                    lines.append(f"  {f.feature:16} {f.psi:>8.3f} {f.test:>5} {f.statistic:>10.3f} "
                                 f"{f.p_value:>9.2g} {f.production_n:>6,}  {verdict}")
            lines += [f"  note: {n}" for n in d.notes]
        if m.note:
            lines.append(f"  note: {m.note}")
    return lines
