"""`tunelab data check` and `tunelab data profile`: arguments, printing and exit codes.

``register`` adds both sub-commands to the ``data`` parser's sub-parsers; each sets
``func``, which returns the exit code: 0 when every file is free of errors, 1 when any
has one. Errors that stop the command (a missing file, an unknown model) are raised as
``TunelabError`` and printed by ``tunelab.cli.main``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from tunelab.cli import exits
from tunelab.cli.args import positive_int, similarity
from tunelab.data.findings import SHOWN_PER_CODE, cap_per_code
from tunelab.data.formats import FORMATS
from tunelab.gate.check import DEFAULT_MAX_LENGTH, CheckResult
from tunelab.gate.dedup import DEFAULT_THRESHOLD


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``check`` and ``profile`` to the sub-parsers of ``tunelab data``.

    Args:
        subparsers: what ``add_subparsers`` returned on the ``data`` parser.
    """
    c = subparsers.add_parser(
        "check", help="report every problem in data files (exit 1 on errors)",
        description="Read whole data files and report every problem with its line, field "
                    "and a stable code. Exit 0 when no file has errors, 1 otherwise.")
    _common(c)
    c.add_argument("--json", action="store_true",
                   help="print a machine-readable report (every finding has a 'line')")
    c.add_argument("--report", metavar="DIR", default=None,
                   help="also write an HTML report with plots into DIR")
    c.add_argument("--no-near-dups", action="store_true",
                   help="skip the near-duplicate pass (exact duplicates are still reported)")
    c.add_argument("--threshold", type=similarity, default=DEFAULT_THRESHOLD,
                   help=f"5-gram Jaccard similarity of near duplicates (default {DEFAULT_THRESHOLD})")
    c.add_argument("--all", action="store_true",
                   help=f"print every finding (default: {SHOWN_PER_CODE} per code and file)")
    c.set_defaults(func=cmd_check)

    p = subparsers.add_parser(
        "profile", help="row counts, token lengths, turns, fields and labels as an HTML report",
        description="Profile data files into one HTML report with PNG plots.")
    _common(p)
    p.add_argument("--out", metavar="DIR", default="data_report",
                   help="the report folder (default: data_report)")
    p.add_argument("--json", action="store_true", help="print the profile summary as JSON")
    p.set_defaults(func=cmd_profile)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE",
                   help=".jsonl, .json, .csv, .tsv or .parquet data files")
    p.add_argument("--model", default=None,
                   help="the model whose tokenizer and chat template measure token lengths "
                        "(default: the default model if it is in the store; 'none' to skip)")
    p.add_argument("--format", default="auto", choices=("auto", *FORMATS),
                   help="the row format (default: detected per file)")
    p.add_argument("--template", default=None,
                   help="a chat template instead of the model's: 'chatml', a .jinja file or Jinja text")
    p.add_argument("--max-length", type=positive_int, default=DEFAULT_MAX_LENGTH,
                   help=f"tokens beyond which a row is too long (default {DEFAULT_MAX_LENGTH})")


def cmd_check(a: argparse.Namespace) -> int:
    """Run `tunelab data check`; returns the exit code."""
    from tunelab.recipes.data_gate import run_check

    run = run_check(a.files, a.model, a.format, a.template, a.max_length,
                    near_duplicates=not a.no_near_dups, threshold=a.threshold,
                    report_dir=a.report)
    if a.json:
        json.dump(run.as_dict(), sys.stdout, ensure_ascii=False, indent=2)
        print()
    else:
        for note in run.notes:
            print(f"note: {note}", file=sys.stderr)
        for result in run.results:
            print_result(result, sys.stdout, show_all=a.all)
        if run.report is not None:
            print(f"report: {run.report}")
    return exits.OK if run.ok else exits.PROBLEMS


def cmd_profile(a: argparse.Namespace) -> int:
    """Run `tunelab data profile`; returns the exit code (1 when a file has errors)."""
    from tunelab.gate.profile import profile_from_check
    from tunelab.recipes.data_gate import run_profile

    run = run_profile(a.files, a.out, a.model, a.format, a.template, a.max_length)
    if a.json:
        summary = {"model": run.model, "report": str(run.report), "notes": run.notes,
                   "files": [profile_from_check(r).summary() for r in run.results]}
        json.dump(summary, sys.stdout, ensure_ascii=False, indent=2)
        print()
    else:
        for note in run.notes:
            print(f"note: {note}", file=sys.stderr)
        for result in run.results:
            print(summary_line(result))
            _print_tools(result, sys.stdout)
        print(f"report: {run.report}")
    return exits.OK if run.ok else exits.PROBLEMS


def summary_line(result: CheckResult) -> str:
    """One line per file: format, rows and the verdict."""
    verdict = "ok" if result.ok else "FAILED"
    return (f"{result.source}: {verdict}: {result.format or 'no format'}, "
            f"{result.rows_read:,} rows read, {result.accepted:,} accepted, "
            f"{result.rejected:,} rejected; {len(result.errors):,} error(s), "
            f"{len(result.warnings):,} warning(s)")


def print_result(result: CheckResult, out: TextIO, show_all: bool = False) -> None:
    """Print a file's findings (capped per code, as training reports them) and its summary."""
    shown, hidden = (result.findings, {}) if show_all else cap_per_code(result.findings)
    for f in shown:
        print(f"{f.severity}: {f}", file=out)
    for (severity, code), n in hidden.items():
        print(f"{severity}: ... and {n:,} more [{code}] (--all or --json lists them)", file=out)
    for note in result.notes:
        print(f"note: {result.source}: {note}", file=out)
    print(summary_line(result), file=out)
    _print_tools(result, out)


def _print_tools(result: CheckResult, out: TextIO) -> None:
    """A file's tool counts, one line after its summary; nothing for files without tools."""
    from tunelab.gate.profile import tool_counts, tools_line

    tools = tool_counts(result)
    if tools is not None:
        print(f"{result.source}: {tools_line(tools)}", file=out)
