"""`tunelab tune CONFIG`: arguments and printing for the hyperparameter search.

The options override the config's ``search`` block (``--sampler grid`` is
``search.sampler=grid``), so every problem is reported at once by the config loader.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tunelab.cli import exits
from tunelab.cli.args import positive_int


def _cmd_tune(a: argparse.Namespace) -> int:
    from tunelab.cli.reporter import StderrReporter
    from tunelab.config.loader import load_config
    from tunelab.recipes.tune import run_tune

    overrides = list(a.overrides)
    for key, value in (("trials", a.trials), ("sampler", a.sampler), ("pruner", a.pruner)):
        if value is not None:
            overrides.append(f"search.{key}={value}")
    cfg = load_config(a.config, overrides, check_files=True)
    result = run_tune(cfg, Path(a.config).stem, workers=a.workers, reporter=StderrReporter())
    print(result.table)
    counts = ", ".join(f"{n} {state}" for state, n in sorted(result.counts.items()))
    print(f"\nstudy: {result.folder} ({counts}; total {result.total})")
    for note in result.notes:
        print(f"note: {note}")
    if result.best is None:
        print("no trial completed; nothing to recommend")
        return exits.PROBLEMS
    print(f"best: trial {result.best['trial']}, value {result.best['value']:.6g}, "
          f"{result.best['params']}")
    print(f"best config: {result.best['config']}  (tunelab train {result.best['config']})")
    return exits.OK


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `tune` command to the top-level parser."""
    t = sub.add_parser("tune", help="hyperparameter search (optuna) over the config's search: block")
    t.add_argument("config", help="a run config with a search: block")
    t.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE",
                   help="dotted overrides, e.g. train.max_steps=50; relative paths start from "
                        "the current folder")
    t.add_argument("--trials", type=int, default=None, help="total trials (default: search.trials)")
    t.add_argument("--sampler", default=None, help="grid, random or tpe (default: search.sampler)")
    t.add_argument("--pruner", default=None, help="none, median or hyperband (default: search.pruner)")
    t.add_argument("--workers", type=positive_int, default=1, metavar="N",
                   help="processes sharing the study on this machine")
    t.set_defaults(func=_cmd_tune)
