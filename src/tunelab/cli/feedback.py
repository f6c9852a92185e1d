"""`tunelab feedback export`: arguments, the summary on stdout, and the exit code.

``register`` adds the ``feedback`` group and its ``export`` command. The command exits 0
when the gate passed the written rows and 1 when it found errors (like `tunelab data
check`); errors that stop it (no approved feedback without --include-unreviewed, a
database that cannot be opened) are raised as ``TunelabError`` for ``tunelab.cli.main``
to print. The work is in ``tunelab.recipes.feedback``.
"""

from __future__ import annotations

import argparse
import json
import sys

from tunelab.cli import exits
from tunelab.cli.args import show_help, since_time
from tunelab.config.schema import DEFAULT_RUNS_DIR
from tunelab.data.findings import cap_per_code


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``feedback`` and ``feedback export`` to the top-level sub-parsers."""
    f = sub.add_parser("feedback", help="user feedback from the server: export it as training data")
    f.set_defaults(func=show_help(f))
    fsub = f.add_subparsers(dest="feedback_cmd", metavar="COMMAND")
    e = fsub.add_parser(
        "export", help="corrections and ratings as supervised rows and preference pairs, gated",
        description="Write sft.jsonl (corrected answers as chat rows) and pairs.jsonl (the "
                    "correction or the up-rated answer preferred over the logged or down-rated "
                    "one) from feedback in the database, run them through the data gate "
                    "(duplicates, personal data, leakage against the evaluation set) and write "
                    "its report beside them. Exit 0 when the gate passed, 1 when it found errors.")
    e.add_argument("--out", required=True, metavar="DIR", help="the folder the files go to")
    e.add_argument("--db", default=None, metavar="URL",
                   help="the database the server logged to (default: SQLite under the tunelab home)")
    e.add_argument("--since", type=since_time, default=None, metavar="WHEN",
                   help="only feedback given since then: a date or time (UTC unless it says), "
                        "or an age such as 7d or 12h")
    e.add_argument("--model", default=None, metavar="NAME",
                   help="only feedback on answers of this served model; a run's name also makes "
                        "its validation files the held-out set")
    e.add_argument("--experiment", default=None, metavar="NAME",
                   help="only feedback on requests that named this experiment")
    e.add_argument("--include-unreviewed", action="store_true",
                   help="also export feedback no one has reviewed (default: only feedback "
                        "a review project approved; rejected feedback is never exported)")
    e.add_argument("--eval", default=None, metavar="FILE",
                   help="the held-out file to check leakage against (default: the --model "
                        "run's validation files)")
    e.add_argument("--runs-dir", default=DEFAULT_RUNS_DIR,
                   help=f"where --model is looked up as a run (default: {DEFAULT_RUNS_DIR})")
    e.add_argument("--json", action="store_true", help="print the summary as JSON")
    e.set_defaults(func=cmd_export)


def cmd_export(a: argparse.Namespace) -> int:
    """Run `tunelab feedback export`; returns the exit code."""
    from tunelab.cli.reporter import StderrReporter
    from tunelab.recipes.feedback import GATE_FILE, SKIP_REASONS, export_feedback

    result = export_feedback(a.out, a.db, a.since, a.model, a.experiment,
                             a.include_unreviewed, a.eval, a.runs_dir, StderrReporter())
    if a.json:
        json.dump(result.as_dict(), sys.stdout, ensure_ascii=False, indent=2, default=str)
        print()
        return exits.OK if result.ok else exits.PROBLEMS
    if a.include_unreviewed:
        print("warning: feedback no one reviewed is included (--include-unreviewed)",
              file=sys.stderr)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"feedback: {result.feedback_rows} row(s) read; wrote {result.sft_rows} supervised "
          f"row(s) and {result.pair_rows} preference pair(s) to {result.out}")
    skipped = sum(result.skipped.values())
    print(f"skipped: {skipped} feedback row(s)" + (":" if skipped else ""))
    for reason, n in result.skipped.items():
        print(f"  {n:6}  {SKIP_REASONS[reason]}")
    for g in result.gate:
        shown, hidden = cap_per_code(g.findings)
        for f in shown:
            print(f"{f.severity}: {f}")
        for (severity, code), n in hidden.items():
            print(f"{severity}: ... and {n:,} more [{code}] (see {GATE_FILE})")
        for note in g.notes:
            print(f"note: {g.path}: {note}")
        errors = sum(f.is_error for f in g.findings)
        print(f"{g.path}: {'ok' if g.ok else 'FAILED'}: {g.rows} row(s), {errors} error(s), "
              f"{len(g.findings) - errors} warning(s)")
    verdict = "passed" if result.ok else "FAILED: fix or drop the rows named above, then export again"
    print(f"gate: {verdict}; report: {result.out / GATE_FILE}")
    return exits.OK if result.ok else exits.PROBLEMS
