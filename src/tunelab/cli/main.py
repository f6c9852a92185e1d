"""The `tunelab` command: argument parsing, dispatch, and the last-resort error handler.

Exit codes are defined in ``tunelab.cli.exits`` (README.md, "Exit codes"). A
``TunelabError`` becomes its message and hint on stderr, never a traceback. Any other
exception is a bug in tunelab: one line names it and the file that holds its traceback
(``TUNELAB_DEBUG=1`` prints the traceback too), and the command exits 70.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from tunelab import __version__
from tunelab.cli import exits
from tunelab.cli.args import non_negative_float, non_negative_int, positive_int, show_help
from tunelab.cli.reporter import library_bars
from tunelab.config.schema import DEFAULT_MODEL, DEFAULT_RUNS_DIR
from tunelab.errors import StoreError, TunelabError
from tunelab.models.catalog import KNOWN_MODELS

if TYPE_CHECKING:  # imported where used: `tunelab --help` stays quick
    from tunelab.models.store import ModelStore

MAX_NEW_TOKENS = 256  # tokens per answer of `generate` and `chat`


def _cmd_train(a: argparse.Namespace) -> int:
    from tunelab.cli.reporter import StderrReporter
    from tunelab.config.loader import load_config
    from tunelab.recipes.train import run_train
    from tunelab.train.phased import launch_target

    cfg = load_config(a.config, a.overrides, check_files=True)
    if a.nproc > 1 and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        from tunelab.cli.launch import relaunch

        return relaunch(a, *launch_target(cfg, a.resume))  # every rank gets the same run folder
    run_dir = run_train(cfg, StderrReporter(bars=not a.no_progress), resume=a.resume,
                        force_resume=a.force_resume)
    if int(os.environ.get("RANK", "0")) != 0:
        return exits.OK  # rank 0 reports for all
    if not (run_dir / "summary.json").is_file():
        print(f"run: {run_dir} (stopped; resume with --resume {run_dir})")
        return exits.OK
    summary = json.loads((run_dir / "summary.json").read_text())
    print(f"run: {run_dir}")
    print(f"steps {summary['steps']}, train loss {summary['train_loss']:.4f}, "
          f"validation loss {_fmt(summary['final_val_loss'])}, {summary['tokens_per_second']} tokens/s")
    return exits.OK


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _store() -> ModelStore:
    from tunelab.cli.reporter import StderrReporter
    from tunelab.models.store import ModelStore

    return ModelStore(reporter=StderrReporter())


def _cmd_models_pull(a: argparse.Namespace) -> int:
    from tunelab.models.pull import pull

    store = _store()
    rec = pull(a.name, store, progress=lambda msg: store.reporter.info(f"tunelab: {msg}"))
    print(f"{rec.name}: {rec.path}")
    return exits.OK


def _cmd_models_import(a: argparse.Namespace) -> int:
    from tunelab.models.pull import import_model

    rec = import_model(Path(a.source), a.name, _store(), replace=a.replace)
    print(f"{rec.name}: {rec.path}")
    return exits.OK


def _cmd_models_list(a: argparse.Namespace) -> int:
    recs = _store().list()
    if not recs:
        print(f"no models in the store; run `tunelab models pull {DEFAULT_MODEL}`")
    for r in recs:
        print(f"{r.name:32} {r.architecture:24} {r.num_parameters / 1e6:8.1f}M  {r.source}")
    return exits.OK


def _cmd_runs_show(a: argparse.Namespace) -> int:
    from tunelab.tracking.run_dir import find_run, read_run

    path = find_run(a.run, a.dir)
    if path is None:
        listing = "tunelab runs list" + ("" if a.dir == DEFAULT_RUNS_DIR else f" --dir {shlex.quote(a.dir)}")
        raise StoreError(f"no run {a.run!r} (looked for a folder and under {a.dir}/)",
                         hint=f"`{listing}` shows the runs")
    info = read_run(path)
    print(json.dumps({"run": str(path), **info.summary}, indent=2, default=str))
    return exits.OK


def _cmd_runs_list(a: argparse.Namespace) -> int:
    from tunelab.tracking.run_dir import list_runs

    runs = list_runs(a.dir)
    if not runs:
        print(f"no runs under {a.dir}/")
    for r in runs:
        s = r.summary
        status = s.get("status", "incomplete")
        print(f"{r.name:40} {status:10} steps={s.get('steps', '-')!s:6} "
              f"val_loss={_fmt(s.get('final_val_loss'))} {s.get('model', '')}")
    return exits.OK


def _answerer(a: argparse.Namespace):
    from tunelab.cli.reporter import StderrReporter
    from tunelab.recipes.generate import load_answerer

    return load_answerer(a.run, a.runs_dir, use_task=not a.no_task, reporter=StderrReporter())


def _answer_line(answer) -> str:
    """The answer, and a classifier's probabilities after a tab."""
    if not answer.probabilities:
        return answer.text
    probs = ", ".join(f"{w} {p:.3f}" for w, p in answer.probabilities.items())
    return f"{answer.text}\t({probs})"


def _cmd_generate(a: argparse.Namespace) -> int:
    from tunelab.data.example import Message

    answerer = _answerer(a)
    system = [Message("system", a.system)] if a.system else []
    convs = [[*system, Message("user", p)] for p in a.prompt]
    for answer in answerer.answer(convs, a.max_new_tokens, a.temperature, a.seed):
        print(_answer_line(answer))
    return exits.OK


def _typed_lines():
    """The lines a person types, stripped, until /exit, /quit or Ctrl-D."""
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            print(file=sys.stderr)
            return
        if line in ("/exit", "/quit"):
            return
        yield line


def _cmd_chat(a: argparse.Namespace) -> int:
    from tunelab.data.example import Message

    answerer = _answerer(a)
    if answerer.task is not None:  # a task answers each text on its own: no history
        print(f"chat: each message is one {answerer.task.type} question; /exit or Ctrl-D quits",
              file=sys.stderr)
        for line in _typed_lines():
            if line:
                answer = answerer.answer([[Message("user", line)]], a.max_new_tokens)[0]
                print(f"model> {_answer_line(answer)}", flush=True)
        return exits.OK
    engine = answerer.engine
    history = [{"role": "system", "content": a.system}] if a.system else []
    print("chat: type a message; /reset clears the history, /exit or Ctrl-D quits", file=sys.stderr)
    for line in _typed_lines():
        if line == "/reset":
            history = history[:1] if a.system else []
            continue
        if not line:
            continue
        history.append({"role": "user", "content": line})
        reply = engine.generate([history], max_new_tokens=a.max_new_tokens)[0]
        history.append({"role": "assistant", "content": reply})
        print(f"model> {reply}", flush=True)
    return exits.OK


def _cmd_quickstart(a: argparse.Namespace) -> int:
    from tunelab.cli.reporter import StderrReporter
    from tunelab.recipes.quickstart import format_table, next_steps, run_quickstart

    workdir = Path(a.workdir)
    results = run_quickstart(workdir, model=a.model,
                             reporter=StderrReporter(bars=not a.no_progress))
    print(format_table(results))
    print(next_steps(Path(results["run"]), workdir / "data" / "test.jsonl"))
    return exits.OK


def build_parser() -> argparse.ArgumentParser:
    """The whole `tunelab` argument parser; every option and positional has help text."""
    p = argparse.ArgumentParser(prog="tunelab",
                                description="Check data, fine-tune, evaluate and run language models.")
    p.add_argument("--version", action="version", version=f"tunelab {__version__}")
    p.set_defaults(func=show_help(p))
    # Not required: a bare `tunelab` (or `tunelab data`) prints the help instead of an error.
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")

    t = sub.add_parser("train", help="fine-tune a model from a YAML config")
    t.add_argument("config", help="the run config (YAML)")
    t.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE",
                   help="dotted overrides, e.g. train.learning_rate=1e-4; relative paths "
                        "start from the current folder")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--resume", default=None, metavar="auto|PATH",
                   help="continue from the newest complete checkpoint (auto) or a run/checkpoint folder")
    t.add_argument("--force-resume", action="store_true",
                   help="resume even if model, data, batch size, accumulation or seed changed (logged)")
    t.add_argument("--nproc", type=positive_int, default=1, metavar="N",
                   help="data-parallel processes on this machine (same global batch and loss)")
    t.set_defaults(func=_cmd_train)

    from tunelab.cli import tune

    tune.register(sub)

    from tunelab.cli import evaluate

    evaluate.register(sub)

    from tunelab.cli import review

    review.register(sub)

    from tunelab.cli import serve

    serve.register(sub)

    from tunelab.cli import experiment

    experiment.register(sub)

    from tunelab.cli import feedback, retrain

    feedback.register(sub)
    retrain.register(sub)

    from tunelab.cli import monitor

    monitor.register(sub)

    from tunelab.cli import curve, data_check, data_ops

    d = sub.add_parser("data", help="the data gate: check, profile, dedup, split, clean, "
                                    "... and the learning curve")
    d.set_defaults(func=show_help(d))
    dsub = d.add_subparsers(dest="data_cmd", metavar="COMMAND")
    data_check.register(dsub)
    data_ops.register(dsub)
    curve.register(dsub)

    m = sub.add_parser("models", help="the model store: pull, import, list")
    m.set_defaults(func=show_help(m))
    ms = m.add_subparsers(dest="models_cmd", metavar="COMMAND")
    mp = ms.add_parser("pull", help="fetch a known model into the store")
    mp.add_argument("name", help=f"a known model: {', '.join(KNOWN_MODELS)}")
    mp.set_defaults(func=_cmd_models_pull)
    mi = ms.add_parser("import", help="add a .gguf file or a Hugging Face folder to the store")
    mi.add_argument("source", metavar="PATH", help="a .gguf file or a Hugging Face model folder")
    mi.add_argument("--name", required=True, help="the store name to use it by")
    mi.add_argument("--replace", action="store_true", help="replace a model of the same name")
    mi.set_defaults(func=_cmd_models_import)
    ml = ms.add_parser("list", help="models in the store")
    ml.set_defaults(func=_cmd_models_list)

    r = sub.add_parser("runs", help="list and inspect training runs")
    r.set_defaults(func=show_help(r))
    rs = r.add_subparsers(dest="runs_cmd", metavar="COMMAND")
    rl = rs.add_parser("list", help="every run folder with its status, steps and loss")
    rl.add_argument("--dir", default=DEFAULT_RUNS_DIR, help=f"the runs folder (default: {DEFAULT_RUNS_DIR})")
    rl.set_defaults(func=_cmd_runs_list)
    rsh = rs.add_parser("show", help="a run's summary as JSON")
    rsh.add_argument("run", help="a run folder, or a run name under --dir")
    rsh.add_argument("--dir", default=DEFAULT_RUNS_DIR, help=f"the runs folder (default: {DEFAULT_RUNS_DIR})")
    rsh.set_defaults(func=_cmd_runs_show)

    for name, func, helptext in (("generate", _cmd_generate, "generate answers to prompts"),
                                 ("chat", _cmd_chat, "talk to a model interactively")):
        g = sub.add_parser(name, help=helptext)
        g.add_argument("run", help="a run folder or name, or a model reference")
        if name == "generate":
            g.add_argument("--prompt", action="append", required=True,
                           help="a user message to answer; repeat for several")
            g.add_argument("--temperature", type=non_negative_float, default=0.0,
                           help="sampling temperature; 0 = greedy (default)")
            g.add_argument("--seed", type=non_negative_int, default=0,
                           help="makes sampling repeatable (default 0)")
        g.add_argument("--system", default=None,
                       help="a system message (a run's task prompt is then not applied)")
        g.add_argument("--no-task", action="store_true",
                       help="send the text as it is, not through the run's task prompt")
        g.add_argument("--max-new-tokens", type=positive_int, default=MAX_NEW_TOKENS,
                       help=f"most tokens per answer (default {MAX_NEW_TOKENS})")
        g.add_argument("--runs-dir", default=DEFAULT_RUNS_DIR,
                       help=f"where run names are looked up (default: {DEFAULT_RUNS_DIR})")
        g.set_defaults(func=func)

    from tunelab.cli import export

    export.register(sub)

    q = sub.add_parser("quickstart", help="generate a task, fine-tune the default model, compare")
    q.add_argument("--workdir", default="quickstart",
                   help="where the data, config and results go (the run goes to runs/)")
    q.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"the model to fine-tune: a store name or a folder (default {DEFAULT_MODEL})")
    q.add_argument("--no-progress", action="store_true", help="no progress bars")
    q.set_defaults(func=_cmd_quickstart)
    return p


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse a command line; overrides may follow options (`train run.yaml --no-progress lora.r=8`).

    Raises:
        SystemExit: argparse's usage error (2), or 0 after --help and --version.
    """
    args, extra = parser.parse_known_args(argv)
    takes_overrides = isinstance(getattr(args, "overrides", None), list)  # train, tune, data curve
    if extra and takes_overrides and all("=" in x and not x.startswith("-") for x in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _internal_error(error: Exception) -> int:
    """Report a bug in one line with where its traceback is; the code is ``exits.INTERNAL``."""
    text = traceback.format_exc()
    if os.environ.get("TUNELAB_DEBUG") == "1":
        print(text, file=sys.stderr, end="")
    try:
        fd, path = tempfile.mkstemp(prefix="tunelab-traceback-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        where = f"the traceback is in {path}"
    except OSError:
        where = "set TUNELAB_DEBUG=1 to print the traceback"
    first = (str(error).splitlines() or [""])[0]
    print(f"internal error: {type(error).__name__}: {first} (a bug in tunelab; {where}; "
          "please report it)", file=sys.stderr)
    return exits.INTERNAL


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tunelab` command; returns the exit code (see ``tunelab.cli.exits``)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub at run time
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        try:
            args = parse_args(build_parser(), argv)
        except SystemExit as e:  # argparse: usage errors (2), --help and --version (0)
            return exits.OK if e.code is None else e.code if isinstance(e.code, int) else exits.USAGE
        with library_bars(shown=not getattr(args, "no_progress", False)):
            return args.func(args)
    except TunelabError as e:
        print(f"error: {e}", file=sys.stderr)
        return exits.exit_code(e)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return exits.INTERRUPTED
    except BrokenPipeError:
        # `tunelab ... | head`: the reader has what it wanted. Point stdout at devnull so
        # the interpreter's final flush does not fail again (Python docs, "SIGPIPE").
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return exits.BROKEN_PIPE
    except Exception as e:  # the last resort: a bug, reported without a wall of traceback
        return _internal_error(e)


if __name__ == "__main__":
    sys.exit(main())
