"""`tunelab retrain`: arguments, the comparison table, the decision and the exit code.

Exit 0 when the new run is not worse than the old one (and was promoted, if asked); 1
when it is worse (nothing is promoted, the run folder stays for inspection). Errors that
stop the command (an unknown run, a missing data file, an experiment the serve file
lacks) are raised as ``TunelabError`` for ``tunelab.cli.main`` to print. The work is in
``tunelab.recipes.retrain``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tunelab.cli import exits
from tunelab.cli.args import positive_int, rate
from tunelab.config.schema import DEFAULT_RUNS_DIR


def _epochs(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number (given: {text!r})") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0 (given: {text!r})")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``retrain`` to the top-level sub-parsers."""
    r = sub.add_parser(
        "retrain", help="continue a run on new data; promote it only if it is not worse",
        description="Train a new run from RUN's LoRA adapter on --data, evaluate both runs on "
                    "the held-out set (RUN's validation file, or --eval) with a paired "
                    "bootstrap, and refuse a new run whose primary statistic is worse (the "
                    "whole confidence interval on the worse side): exit 1. A run that is not "
                    "worse can be added to an experiment of a serve config as a canary.")
    r.add_argument("run", help="the served run: a run folder, or a run name under --runs-dir")
    r.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE",
                   help="dotted overrides of the new run's config, e.g. train.learning_rate=1e-4")
    r.add_argument("--data", required=True, metavar="FILE",
                   help="the new training rows, e.g. sft.jsonl (or pairs.jsonl with --method "
                        "dpo) from `tunelab feedback export`")
    r.add_argument("--method", choices=("sft", "dpo"), default="sft",
                   help="sft: supervised rows (default); dpo: preference pairs")
    length = r.add_mutually_exclusive_group()
    length.add_argument("--steps", type=positive_int, default=None, metavar="N",
                        help="optimizer steps (default: the old run's epochs over the new data)")
    length.add_argument("--epochs", type=_epochs, default=None, metavar="E",
                        help="passes over the new data")
    r.add_argument("--out", default=None, metavar="NAME",
                   help="the new run's name under --runs-dir (default: RUN-retrain-<time>)")
    r.add_argument("--eval", default=None, metavar="FILE",
                   help="the held-out file both runs are judged on (default: RUN's validation "
                        "file); preference pairs are judged by how strongly each run prefers "
                        "the chosen answers, other rows by the task or the answers' loss")
    r.add_argument("--runs-dir", default=DEFAULT_RUNS_DIR,
                   help=f"where runs are looked up and the new run goes (default: {DEFAULT_RUNS_DIR})")
    r.add_argument("--promote", default=None, metavar="EXPERIMENT",
                   help="add the new run, if not worse, to this experiment of --config as a canary")
    r.add_argument("--weight", type=rate, default=None, metavar="W",
                   help="the canary's share of new users, between 0 and 1 (the other variants "
                        "are scaled by 1 - W and keep their ratios)")
    r.add_argument("--config", default=None, metavar="FILE",
                   help="the serve config file the experiment is in (edited in place; the old "
                        "file is kept as FILE.bak)")
    r.add_argument("--json", action="store_true", help="print the result as JSON")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.set_defaults(func=cmd_retrain)


def cmd_retrain(a: argparse.Namespace) -> int:
    """Run `tunelab retrain`; returns the exit code."""
    from tunelab.cli.reporter import StderrReporter
    from tunelab.errors import UsageError
    from tunelab.eval.compare import format_comparison
    from tunelab.recipes.retrain import Promotion, run_retrain

    promote = None
    if a.promote is not None or a.weight is not None:
        if a.promote is None or a.weight is None or a.config is None:
            raise UsageError("promotion needs --promote EXPERIMENT, --weight W and --config "
                             "FILE together",
                             hint="e.g. --promote EXPERIMENT --weight 0.1 --config serve.yaml")
        promote = Promotion(Path(a.config), a.promote, a.weight)
    result = run_retrain(a.run, a.data, a.method, a.steps, a.epochs, a.out, a.eval, a.runs_dir,
                         promote, a.overrides, StderrReporter(bars=not a.no_progress))
    code = exits.PROBLEMS if result.worse else exits.OK
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if a.json:
        json.dump(result.as_dict(), sys.stdout, ensure_ascii=False, indent=2, default=str)
        print()
        return code
    print(f"new run: {result.new_run}")
    print(format_comparison(result.comparison))
    if result.worse:
        print(f"refused: {result.new_run.name} is {result.reason}")
        if promote is not None:
            print(f"not promoted: {promote.config} is unchanged")
        return code
    print(f"promotable: {result.new_run.name} is {result.reason}")
    p = result.promoted
    if p is not None:
        weights = ", ".join(f"{v} {w:g}" for v, w in p.weights.items())
        print(f"promoted: {p.variant} is a variant of {p.experiment} in {p.config} "
              f"(weights: {weights}; the old file is {p.backup}; comments are not kept)")
        if p.model_added:
            print(f"restart the server to load the new model (`tunelab serve --config "
                  f"{p.config}`): SIGHUP rereads experiments, but a new model loads only at start")
        else:
            print("the model was served already: `kill -HUP <server pid>` rereads the weights")
    return code
