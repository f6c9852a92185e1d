"""`tunelab data curve CONFIG`: arguments and printing for the learning curve.

The work is ``tunelab.recipes.curve``: one training run per slice of the data, each
scored, then the report. Here: the options, the table of slices, the verdict and the
report's path on stdout (with ``--json``, the curve as one JSON line last); progress
goes to stderr.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tunelab.cli import exits
from tunelab.cli.args import checked_by, positive_int
from tunelab.eval.curve import DEFAULT_FRACTIONS, parse_fractions


def _cmd_curve(a: argparse.Namespace) -> int:
    from tunelab.cli.reporter import StderrReporter
    from tunelab.config.loader import load_config
    from tunelab.eval.curve import format_table
    from tunelab.recipes.curve import run_curve

    cfg = load_config(a.config, a.overrides, check_files=True)
    out = a.out or f"curve-{Path(a.config).stem}"
    result = run_curve(cfg, a.fractions, out, eval_data=a.eval_data,
                       eval_text_field=a.text_field, eval_limit=a.eval_limit,
                       reporter=StderrReporter(bars=not a.no_progress))
    curve = result.curve
    if curve.points:
        print(format_table(curve))
    print(f"verdict: {curve.verdict.text}")
    print(f"report: {result.report}")
    if result.stopped:
        print(f"stopped after {len(curve.points)} slice(s); the runs are in {curve.runs}")
    if a.json:
        print(json.dumps(curve.as_json(), default=str))
    return exits.INTERRUPTED if result.stopped else exits.OK


def register(sub: argparse._SubParsersAction) -> None:
    """Add `curve` to the ``data`` sub-parser group."""
    default = ",".join(f"{f:g}" for f in DEFAULT_FRACTIONS)
    p = sub.add_parser("curve", help="learning curve: train on growing slices of the data, "
                                     "plot the metric against rows and minutes")
    p.add_argument("config", help="the run config (YAML)")
    p.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE",
                   help="dotted overrides, e.g. train.max_steps=50; relative paths start "
                        "from the current folder")
    p.add_argument("--fractions", type=checked_by(parse_fractions), default=default,
                   help="shares of the training rows to train on, each in (0, 1] "
                        f"(default {default})")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="the curve's folder: runs, report, curve.json (default: "
                        "curve-<config stem>)")
    p.add_argument("--eval-data", default=None, metavar="FILE",
                   help="rows to score the task on (default: the first validation file, "
                        "else the rows the validation split held out)")
    p.add_argument("--text-field", default=None, metavar="COL",
                   help="the text column of the evaluation rows (default: the run's)")
    p.add_argument("--eval-limit", type=positive_int, default=None, metavar="N",
                   help="score only the first N evaluation rows (default: all)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the curve as one JSON line last")
    p.set_defaults(func=_cmd_curve)
