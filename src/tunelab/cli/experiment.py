"""`tunelab experiment report`: arguments, the table and the JSON of an experiment report.

The experiment's weights, control and unit come from the serve config (``--config``) or
from ``--weights``/``--control``/``--unit``; the database is ``--db``, else the serve
config's, else the default SQLite file. The command exits 0 when the report was made
(a sample-ratio alarm is printed, on stdout and stderr, but is a finding, not a
failure); errors are raised as ``TunelabError`` and printed by ``tunelab.cli.main``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tunelab.cli import exits
from tunelab.cli.args import rate, show_help, since_time
from tunelab.errors import UsageError
from tunelab.eval.abtest import ALPHA


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``experiment`` (with ``report``) to the top-level sub-parsers."""
    e = sub.add_parser("experiment", help="A/B experiments of the server: the report")
    e.set_defaults(func=show_help(e))
    es = e.add_subparsers(dest="experiment_cmd", metavar="COMMAND")
    r = es.add_parser(
        "report", help="per-variant metrics, differences, sample-ratio check and a verdict",
        description="Compare an experiment's variants from the request log and feedback: "
                    "requests, errors, latency, thumbs-up rate, mean score, correction rate; "
                    "each difference from the control with an interval and a test; the "
                    "sample-ratio check; and an always-valid verdict on the thumbs-up rate.")
    r.add_argument("name", metavar="NAME", help="the experiment (what requests put in `model`)")
    r.add_argument("--config", default=None, metavar="YAML",
                   help="the serve config that defines the experiment (weights, control, unit, db)")
    r.add_argument("--weights", default=None, metavar="a=0.5,b=0.5",
                   help="the variants' weights, instead of the serve config's")
    r.add_argument("--control", default=None, metavar="VARIANT",
                   help="the variant others are compared with (with --weights; default: the first)")
    r.add_argument("--unit", choices=("user", "request"), default=None,
                   help="what was randomised (with --weights; default: user)")
    r.add_argument("--db", default=None, metavar="URL",
                   help="the database (default: the serve config's, else SQLite under the "
                        "tunelab home)")
    r.add_argument("--since", type=since_time, default=None, metavar="WHEN",
                   help="only requests from then on: 2026-01-31, 2026-01-31T12:00 (UTC unless "
                        "a zone is given), or 7d, 12h, 30m ago")
    r.add_argument("--alpha", type=rate, default=ALPHA, metavar="P",
                   help=f"1 - the intervals' coverage; the verdict's error rate (default {ALPHA})")
    r.add_argument("--html", default=None, metavar="DIR", help="write the report page here")
    r.add_argument("--json", action="store_true", help="print the report as one JSON line last")
    r.set_defaults(func=cmd_report)


def _weights(text: str) -> list[dict[str, Any]]:
    out, bad = [], []
    for part in [x.strip() for x in text.split(",") if x.strip()]:
        name, sep, value = part.partition("=")
        try:
            weight = float(value) if sep and name.strip() else None
        except ValueError:
            weight = None
        if weight is None:
            bad.append(part)
        else:
            out.append({"name": name.strip(), "model": "(from --weights)", "weight": weight})
    if bad or len(out) < 2:
        raise UsageError(f"--weights: {text!r} is not two or more VARIANT=WEIGHT pairs"
                         + (f" (cannot read {', '.join(map(repr, bad))})" if bad else ""),
                         hint="write it as a=0.5,b=0.5 (the variant names the server logs)")
    return out


def _experiment(a: argparse.Namespace):
    """The experiment's settings and the database URL, from the flags and the serve config."""
    from tunelab.config.serve import ExperimentSettings, load_serve_settings
    from tunelab.db import default_database_url
    from tunelab.errors import ConfigError

    settings = load_serve_settings(a.config) if a.config else None
    db = a.db or (settings.db if settings else None) or default_database_url()
    if a.weights is not None:
        data = {"name": a.name, "variants": _weights(a.weights), "control": a.control}
        if a.unit:
            data["unit"] = a.unit
        try:
            return ExperimentSettings.model_validate(data), db
        except ValueError as e:  # pydantic's ValidationError: a control that is no variant
            problems = [f"{'.'.join(map(str, x['loc']))}: {x['msg']}"
                        for x in getattr(e, "errors", lambda: [])()] or [str(e)]
            raise ConfigError(problems, "--weights/--control") from None
    if settings is None:
        raise UsageError(f"experiment {a.name!r}: the report needs the configured weights "
                         "and control, and none were given",
                         hint=f"give the serve config: `tunelab experiment report {a.name} "
                              "--config serve.yaml`, or the weights: --weights a=0.5,b=0.5 "
                              "--control a")
    found = {x.name: x for x in settings.experiments}
    if a.name not in found:
        listing = ", ".join(found) or "none"
        raise UsageError(f"experiment {a.name!r} is not in {a.config} (its experiments: {listing})",
                         hint="check the name, or give the weights: --weights a=0.5,b=0.5")
    return found[a.name], db


def cmd_report(a: argparse.Namespace) -> int:
    from tunelab.recipes.experiment import run_experiment_report

    since = a.since
    experiment, db = _experiment(a)
    result = run_experiment_report(experiment, db, since, a.alpha, a.html,
                                   progress=lambda m: print(f"tunelab: {m}", file=sys.stderr))
    report = result.report
    print(format_report(report))
    if report["srm"]["alarm"]:
        print("warning: sample ratio mismatch: the split does not match the weights; find "
              "out why before trusting any difference", file=sys.stderr)
        print("hint: if the weights changed during the experiment (a promoted canary, an "
              "admin change), users assigned before keep their variant: judge the split "
              "from the change on with --since <time of the change>", file=sys.stderr)
    if result.html is not None:
        print(f"report: {result.html}")
    if a.json:
        print(json.dumps(report, default=str))
    return exits.OK


def _num(v: float | int | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def format_report(report: dict[str, Any]) -> str:
    """The table: one line per variant, per difference, the sample-ratio line, the verdicts."""
    from tunelab.eval.abtest_report import srm_text

    lines = [f"experiment {report['experiment']} (control {report['control']}, unit "
             f"{report['unit']}) in {report['db']}"
             + (f" since {report['since']}" if report.get("since") else ""),
             f"{'variant':<20}{'requests':>10}{'errors':>8}{'p50 ms':>10}{'p99 ms':>10}"
             f"{'rated':>8}{'up rate':>9}{'scored':>8}{'score':>7}{'feedback':>9}{'corr':>7}"]
    for v in report["variants"]:
        lines.append(f"{v['variant'][:19]:<20}{v['requests']:>10,}{v['errors']:>8,}"
                     f"{_num(v['latency_p50_ms'], '.1f'):>10}{_num(v['latency_p99_ms'], '.1f'):>10}"
                     f"{v['rated']:>8,}{_num(v['thumbs_up_rate'], '.3f'):>9}{v['scored']:>8,}"
                     f"{_num(v['mean_score'], '.2f'):>7}{v['feedback']:>9,}"
                     f"{_num(v['correction_rate'], '.3f'):>7}")
    coverage = f"{1 - report['alpha']:.1%}".replace(".0%", "%")
    for d in report["differences"]:
        interval = "n/a" if d["low"] is None else f"[{d['low']:+.4f}, {d['high']:+.4f}]"
        lines.append(f"{d['treatment']} - {d['control']} {d['metric']:<16} "
                     f"{_num(d['estimate'], '+.4f'):>9}  {coverage} {interval:<20} "
                     f"p={_num(d['p_value'], '.3g'):<9} {d['method']}")
    lines.append(f"sample ratio: {srm_text(report['srm'])}")
    lines += [f"verdict: {v['text']}" for v in report["verdicts"]]
    return "\n".join(lines)
