"""`tunelab review add` and `tunelab review export`: arguments and printing.

``add_review_data_commands`` adds both to the ``review`` sub-parsers (``tunelab.cli.review``
calls it). Errors (an unknown project, a source that does not fit it, nothing to
export) are raised as ``TunelabError`` for ``tunelab.cli.main`` to print. The work is in
``tunelab.recipes.review_add`` and ``tunelab.recipes.review_export``.
"""

from __future__ import annotations

import argparse
import json
import sys

from tunelab.cli import exits
from tunelab.cli.args import non_negative_int, positive_int, since_time

_DB_HELP = "the database (default: SQLite under the tunelab home)"


def add_review_data_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``add`` and ``export`` to the ``review`` sub-parsers."""
    a = sub.add_parser(
        "add", help="add items to a review project: a review sheet, a data file, the "
                    "request log, an experiment's answers or feedback",
        description="Add items to a review project. FILE is a review sheet of `tunelab eval "
                    "MODEL --data FILE --review N` (review.csv with review_key.json beside it) or a training data "
                    "file; the options add items from the database the server logs to. "
                    "Items already in the project are skipped; rows that give no item (text "
                    "not logged, rows with errors) are counted.")
    a.add_argument("project", metavar="PROJECT", help="the review project")
    a.add_argument("file", nargs="?", default=None, metavar="FILE",
                   help="a review sheet (review.csv) or a data file")
    a.add_argument("--key", default=None, metavar="FILE",
                   help="the sheet's review_key.json when it is not beside the sheet")
    a.add_argument("--db", default=None, metavar="URL", help=_DB_HELP)
    a.add_argument("--from-log", action="store_true",
                   help="a seeded sample of answered requests (needs --sample)")
    a.add_argument("--sample", type=positive_int, default=None, metavar="N",
                   help="requests to sample with --from-log; pairs at most with --experiment")
    a.add_argument("--model", default=None, metavar="NAME",
                   help="with --from-log: only requests answered by this served model")
    a.add_argument("--negative", action="store_true",
                   help="every request with negative feedback (a down rating or a score of 2 "
                        "or less)")
    a.add_argument("--experiment", default=None, metavar="NAME",
                   help="blinded A/B pairs: the same prompt answered by two variants")
    a.add_argument("--feedback", action="store_true",
                   help="feedback with a correction or a negative rating, to approve or reject")
    a.add_argument("--since", type=since_time, default=None, metavar="WHEN",
                   help="only requests or feedback since then: a date or time (UTC unless it "
                        "says), or an age such as 7d or 12h")
    a.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed of the sample and of the order of a pair's answers (default 0)")
    a.add_argument("--json", action="store_true", help="print the result as JSON")
    a.set_defaults(func=cmd_add)

    e = sub.add_parser(
        "export", help="export a project's agreed and adjudicated items",
        description="Write the project's agreed and adjudicated items (never open or "
                    "disagreed ones) as training rows (JSONL), preference pairs (JSONL), "
                    "verdicts (win rates with 95%% intervals, JSON) or feedback decisions "
                    "(JSON; the feedback rows are marked approved or rejected, which "
                    "`tunelab feedback export` reads). OUT.provenance.json records the "
                    "reviewers, adjudicators and guideline versions behind it.")
    e.add_argument("project", metavar="PROJECT", help="the review project")
    e.add_argument("--as", dest="kind", required=True,
                   choices=("rows", "pairs", "verdicts", "feedback"), help="what to export")
    e.add_argument("--out", required=True, metavar="PATH",
                   help="the file to write (.jsonl for rows and pairs, .json otherwise)")
    e.add_argument("--db", default=None, metavar="URL", help=_DB_HELP)
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    e.set_defaults(func=cmd_export)


def _reasons(counts: dict[str, int], texts: dict[str, str]) -> None:
    for reason, n in counts.items():
        print(f"  {n:6}  {texts.get(reason, reason)}")


def cmd_add(a: argparse.Namespace) -> int:
    """Run `tunelab review add`; returns the exit code."""
    from tunelab.recipes.review_add import add_to_project
    from tunelab.review.sources import SKIP_REASONS

    result = add_to_project(a.project, a.file, db_url=a.db, from_log=a.from_log,
                            sample=a.sample, negative=a.negative, experiment=a.experiment,
                            feedback=a.feedback, since=a.since, seed=a.seed, model=a.model,
                            key_path=a.key)
    if a.json:
        json.dump(result.as_dict(), sys.stdout, ensure_ascii=False, indent=2)
        print()
        return exits.OK
    print(f"{result.project}: added {result.added} item(s) from {', '.join(result.sources)}; "
          f"{result.already_there} already in the project")
    left = sum(result.not_added.values())
    if left:
        print(f"not added: {left} row(s) gave no item:")
        _reasons(result.not_added, SKIP_REASONS)
    return exits.OK


def cmd_export(a: argparse.Namespace) -> int:
    """Run `tunelab review export`; returns the exit code."""
    from tunelab.recipes.review_export import export_project
    from tunelab.review.export import SKIP_REASONS

    result = export_project(a.project, a.kind, a.out, a.db)
    if a.json:
        json.dump(result.as_dict(), sys.stdout, ensure_ascii=False, indent=2)
        print()
        return exits.OK
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"{result.project}: exported {result.records} record(s) as {a.kind} from "
          f"{result.items} reviewed item(s) to {result.out}")
    for model, r in result.summary.get("per_model", {}).items():
        print(f"  {model[:31]:<32} win rate {r['win_rate']:.1%} [{r['low']:.1%}, "
              f"{r['high']:.1%}]  {r['wins']} wins, {r['losses']} losses, {r['ties']} ties")
    if result.feedback_marked is not None:
        print(f"marked {result.feedback_marked} feedback row(s) reviewed; `tunelab feedback "
              "export` now takes the approved ones")
    left = sum(result.skipped.values())
    if left:
        print(f"left out: {left} reviewed item(s):")
        _reasons(result.skipped, SKIP_REASONS)
    waiting = sum(result.in_review.values())
    if waiting:
        print(f"still in review (not exported): {result.in_review['open']} open, "
              f"{result.in_review['disagreed']} waiting for adjudication")
    print(f"provenance: {result.provenance_path}")
    return exits.OK
