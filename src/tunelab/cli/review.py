"""`tunelab review`: the review app, its users and projects, agreement, and sheet import.

``register`` adds the ``review`` group: ``serve`` (the web app), ``user add|password|
list``, ``project add|guideline|list``, ``agreement``, ``import`` (filled CSV review
sheets, as before the app), and the item commands ``add`` and ``export``
(``tunelab.cli.review_data``). The work is in ``tunelab.recipes.review_admin``,
``tunelab.recipes.review_serve`` and ``tunelab.eval.review``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys

from tunelab.cli import exits
from tunelab.cli.args import port, positive_int, show_help
from tunelab.cli.review_data import add_review_data_commands
from tunelab.config.review import DEFAULT_REVIEW_PORT
from tunelab.errors import UsageError

_DB_HELP = "the database (default: SQLite under the tunelab home; postgresql://... for a team)"


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``review`` and its commands to the top-level sub-parsers."""
    r = sub.add_parser("review", help="human review: the web app, users, projects, agreement, "
                                      "import and export")
    r.set_defaults(func=show_help(r))
    rs = r.add_subparsers(dest="review_cmd", metavar="COMMAND")

    s = rs.add_parser("serve", help="run the review web app",
                      description="Serve the review app: reviewers sign in, answer items "
                                  "blind, adjudicators settle disagreements, admins watch "
                                  "agreement and progress.")
    s.add_argument("--db", default=None, metavar="URL", help=_DB_HELP)
    s.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=port, default=None,
                   help=f"port (default {DEFAULT_REVIEW_PORT}; 0 picks a free one)")
    s.set_defaults(func=cmd_serve)

    u = rs.add_parser("user", help="review users: add, new password, list")
    u.set_defaults(func=show_help(u))
    us = u.add_subparsers(dest="user_cmd", metavar="COMMAND")
    ua = us.add_parser("add", help="create a user (asks for the password)")
    ua.add_argument("name", help="the user's sign-in name")
    ua.add_argument("--role", required=True, choices=("admin", "reviewer", "adjudicator"),
                    help="admin (users, progress, agreement), reviewer (answers items) or "
                         "adjudicator (settles disagreements)")
    ua.add_argument("--password-stdin", action="store_true",
                    help="read the password from the first line of stdin (for scripts)")
    ua.add_argument("--db", default=None, metavar="URL", help=_DB_HELP)
    ua.set_defaults(func=cmd_user_add)
    up = us.add_parser("password", help="set a new password (ends their sessions, lifts a lock)")
    up.add_argument("name", help="the user's sign-in name")
    up.add_argument("--password-stdin", action="store_true",
                    help="read the password from the first line of stdin")
    up.add_argument("--db", default=None, metavar="URL", help=_DB_HELP)
    up.set_defaults(func=cmd_user_password)
    ul = us.add_parser("list", help="list users and roles")
    ul.add_argument("--db", default=None, metavar="URL", help=_DB_HELP)
    ul.add_argument("--json", action="store_true", help="print JSON")
    ul.set_defaults(func=cmd_user_list)

    p = rs.add_parser("project", help="review projects: add, new guideline, list")
    p.set_defaults(func=show_help(p))
    ps = p.add_subparsers(dest="project_cmd", metavar="COMMAND")
    pa = ps.add_parser("add", help="create a project with a guideline",
                       description="Kinds: output (answers of a model, alone or blinded side by "
                                   "side), data (training rows), feedback (users' corrections).")
    pa.add_argument("name", help="the project's name (no spaces or slashes)")
    pa.add_argument("--kind", required=True, metavar="KIND",
                    help="output, data or feedback (checked with the other inputs)")
    pa.add_argument("--guideline", required=True, metavar="FILE.md",
                    help="the annotation guideline (Markdown), shown beside every item")
    pa.add_argument("--schema", default=None, metavar="FILE.yaml",
                    help="label schema (default: the kind's own questions; README)")
    pa.add_argument("--reviews", type=positive_int, default=2, metavar="N",
                    help="reviewers per item, 1 to 3 (default 2: double review)")
    pa.add_argument("--db", default=None, metavar="URL", help=_DB_HELP)
    pa.set_defaults(func=cmd_project_add)
    pg = ps.add_parser("guideline", help="store a new guideline version")
    pg.add_argument("name", help="the project")
    pg.add_argument("file", metavar="FILE.md", help="the new guideline (Markdown)")
    pg.add_argument("--db", default=None, metavar="URL", help=_DB_HELP)
    pg.set_defaults(func=cmd_project_guideline)
    pl = ps.add_parser("list", help="list projects with their item counts")
    pl.add_argument("--db", default=None, metavar="URL", help=_DB_HELP)
    pl.add_argument("--json", action="store_true", help="print JSON")
    pl.set_defaults(func=cmd_project_list)

    ag = rs.add_parser("agreement", help="agreement figures of a project")
    ag.add_argument("name", help="the project")
    ag.add_argument("--db", default=None, metavar="URL", help=_DB_HELP)
    ag.add_argument("--json", action="store_true", help="print the figures as JSON")
    ag.set_defaults(func=cmd_agreement)

    ri = rs.add_parser("import", help="win rate, mean score and rater agreement from CSV sheets")
    ri.add_argument("files", nargs="+", metavar="FILE", help="filled review sheets")
    ri.add_argument("--key", default=None, help="review_key.json (default: beside the first)")
    ri.add_argument("--json", action="store_true", help="print the report as one JSON line last")
    ri.set_defaults(func=cmd_review_import)
    add_review_data_commands(rs)  # review add, review export


def cmd_serve(a: argparse.Namespace) -> int:
    from tunelab.cli.reporter import StderrReporter
    from tunelab.config.review import ReviewSettings
    from tunelab.recipes.review_serve import run_review_serve

    given = {"host": a.host, "port": a.port, "db": a.db}
    settings = ReviewSettings(**{k: v for k, v in given.items() if v is not None})
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("tunelab")
    logger.addHandler(handler)
    logger.setLevel(settings.log_level.upper())

    def ready(url: str) -> None:
        print(f"review app at {url}/ (Ctrl-C or SIGTERM stops)", file=sys.stderr)
        sys.stderr.flush()

    run_review_serve(settings, ready, StderrReporter())
    print("stopped", file=sys.stderr)
    return exits.OK


def _password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    if not sys.stdin.isatty():
        raise UsageError("no terminal to ask the password on",
                         hint="pipe it in with --password-stdin")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise UsageError("the two passwords differ", hint="run the command again")
    return first


def cmd_user_add(a: argparse.Namespace) -> int:
    from tunelab.recipes.review_admin import add_review_user

    user = add_review_user(a.db, a.name, a.role, _password(a.password_stdin))
    print(f"added {user.name} ({user.role})")
    return exits.OK


def cmd_user_password(a: argparse.Namespace) -> int:
    from tunelab.recipes.review_admin import set_review_password

    set_review_password(a.db, a.name, _password(a.password_stdin))
    print(f"new password set for {a.name}; their sessions ended")
    return exits.OK


def cmd_user_list(a: argparse.Namespace) -> int:
    from tunelab.recipes.review_admin import review_users

    users = review_users(a.db)
    if a.json:
        print(json.dumps([{"name": u.name, "role": u.role, "created_at": u.created_at.isoformat()}
                          for u in users]))
    else:
        for u in users:
            print(f"{u.name}\t{u.role}")
        if not users:
            print("no users yet: `tunelab review user add NAME --role admin`")
    return exits.OK


def cmd_project_add(a: argparse.Namespace) -> int:
    from tunelab.recipes.review_admin import add_review_project

    project = add_review_project(a.db, a.name, a.kind, a.guideline, a.schema, a.reviews)
    fields = ", ".join(f["name"] for f in project.label_schema["fields"])
    print(f"created {project.name}: {project.kind} review, {project.reviews_per_item} "
          f"reviewer(s) per item, questions: {fields}")
    print(f"next: tunelab review add {project.name} FILE", file=sys.stderr)
    return exits.OK


def cmd_project_guideline(a: argparse.Namespace) -> int:
    from tunelab.recipes.review_admin import update_guideline

    version = update_guideline(a.db, a.name, a.file)
    print(f"{a.name}: guideline version {version}; answers from now on name it")
    return exits.OK


def cmd_project_list(a: argparse.Namespace) -> int:
    from tunelab.recipes.review_admin import review_projects

    rows = review_projects(a.db)
    if a.json:
        print(json.dumps(rows))
        return exits.OK
    for r in rows:
        print(f"{r['name']}\t{r['kind']}\t{r['reviews_per_item']} per item\topen {r['open']}"
              f"\tagreed {r['agreed']}\tto adjudicate {r['disagreed']}\tadjudicated "
              f"{r['adjudicated']}")
    if not rows:
        print("no projects yet: `tunelab review project add NAME --kind output --guideline G.md`")
    return exits.OK


def _num(x: float | None, pct: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{100 * x:.1f}%" if pct else f"{x:.3f}"


def cmd_agreement(a: argparse.Namespace) -> int:
    from tunelab.recipes.review_admin import review_agreement

    fig = review_agreement(a.db, a.name)
    c = fig["counts"]
    print(f"{a.name}: open {c['open']}, agreed {c['agreed']}, to adjudicate {c['disagreed']}, "
          f"adjudicated {c['adjudicated']}; reviewers: {', '.join(fig['reviewers']) or 'none'}")
    print(f"items with 2+ answers: {fig['items_compared']} ({fig['items_agreed']} agreed, "
          f"{fig['items_disagreed']} disagreed)")
    for name, f in fig["fields"].items():
        print(f"  {name}: {f['items']} items, agreement {_num(f['percent'], True)}, "
              f"Cohen's kappa {_num(f['cohen_kappa'])}, Krippendorff's alpha {_num(f['alpha'])}")
    if a.json:
        print(json.dumps(fig))
    return exits.OK


def cmd_review_import(a: argparse.Namespace) -> int:
    from tunelab.eval.review import format_reviews, import_reviews

    report = import_reviews(a.files, a.key)
    print(format_reviews(report))
    if a.json:
        print(json.dumps(report))
    return exits.OK
