"""The `tunelab` command: argument parsing and printing; the only place with exit codes.

Exit codes: 0 success; 1 a runtime problem (data, model, training); 2 a usage or
config problem; 130 interrupted. A ``TunelabError`` becomes its message and hint on
stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from tunelab.cli.reporter import library_bars
from tunelab.errors import ConfigError, TunelabError

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _cmd_train(a: argparse.Namespace) -> int:
    from tunelab.cli.reporter import StderrReporter
    from tunelab.config.loader import load_config
    from tunelab.recipes.train import run_train
    from tunelab.train.phased import launch_target

    cfg = load_config(a.config, a.overrides)
    if a.nproc > 1 and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        from tunelab.cli.launch import relaunch

        return relaunch(a, *launch_target(cfg, a.resume))  # every rank gets the same run folder
    run_dir = run_train(cfg, StderrReporter(bars=not a.no_progress), resume=a.resume,
                        force_resume=a.force_resume)
    if int(os.environ.get("RANK", "0")) != 0:
        return EXIT_OK  # rank 0 reports for all
    if not (run_dir / "summary.json").is_file():
        print(f"run: {run_dir} (stopped; resume with --resume {run_dir})")
        return EXIT_OK
    summary = json.loads((run_dir / "summary.json").read_text())
    print(f"run: {run_dir}")
    print(f"steps {summary['steps']}, train loss {summary['train_loss']:.4f}, "
          f"validation loss {_fmt(summary['final_val_loss'])}, {summary['tokens_per_second']} tokens/s")
    return EXIT_OK


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _cmd_models(a: argparse.Namespace) -> int:
    from tunelab.cli.reporter import StderrReporter
    from tunelab.models.store import ModelStore

    store = ModelStore(reporter=StderrReporter())
    if a.models_cmd == "pull":
        from tunelab.models.pull import pull

        rec = pull(a.name, store, progress=lambda msg: store.reporter.info(f"tunelab: {msg}"))
        print(f"{rec.name}: {rec.path}")
    elif a.models_cmd == "import":
        from tunelab.models.pull import import_model

        rec = import_model(Path(a.source), a.name, store, replace=a.replace)
        print(f"{rec.name}: {rec.path}")
    else:
        recs = store.list()
        if not recs:
            print("no models in the store; run `tunelab models pull smollm2-135m-instruct`")
        for r in recs:
            print(f"{r.name:32} {r.architecture:24} {r.num_parameters / 1e6:8.1f}M  {r.source}")
    return EXIT_OK


def _cmd_runs(a: argparse.Namespace) -> int:
    from tunelab.tracking.run_dir import find_run, list_runs, read_run

    if a.runs_cmd == "show":
        path = find_run(a.run, a.dir)
        if path is None:
            raise TunelabError(f"no run {a.run!r} (looked for a folder and under {a.dir}/)",
                               hint="`tunelab runs list` shows the runs")
        info = read_run(path)
        print(json.dumps({"run": str(path), **info.summary}, indent=2, default=str))
        return EXIT_OK
    runs = list_runs(a.dir)
    if not runs:
        print(f"no runs under {a.dir}/")
    for r in runs:
        s = r.summary
        status = s.get("status", "incomplete")
        print(f"{r.name:40} {status:10} steps={s.get('steps', '-')!s:6} "
              f"val_loss={_fmt(s.get('final_val_loss'))} {s.get('model', '')}")
    return EXIT_OK


def _engine(ref: str, runs_dir: str):
    from tunelab.models.runs import load_for_inference
    from tunelab.serve.engine import GenerationEngine

    loaded = load_for_inference(ref, runs_dir)
    return GenerationEngine(loaded.model, loaded.tokenizer, loaded.chat_template)


def _cmd_generate(a: argparse.Namespace) -> int:
    engine = _engine(a.run, a.runs_dir)
    convs = []
    for p in a.prompt:
        msgs = [{"role": "system", "content": a.system}] if a.system else []
        convs.append(msgs + [{"role": "user", "content": p}])
    outs = engine.generate(convs, max_new_tokens=a.max_new_tokens, do_sample=a.temperature > 0,
                           temperature=max(a.temperature, 1e-5), seed=a.seed)
    for o in outs:
        print(o)
    return EXIT_OK


def _cmd_chat(a: argparse.Namespace) -> int:
    engine = _engine(a.run, a.runs_dir)
    history = [{"role": "system", "content": a.system}] if a.system else []
    print("chat: type a message; /reset clears the history, /exit or Ctrl-D quits", file=sys.stderr)
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            print(file=sys.stderr)
            return EXIT_OK
        if line in ("/exit", "/quit"):
            return EXIT_OK
        if line == "/reset":
            history = history[:1] if a.system else []
            continue
        if not line:
            continue
        history.append({"role": "user", "content": line})
        reply = engine.generate([history], max_new_tokens=a.max_new_tokens)[0]
        history.append({"role": "assistant", "content": reply})
        print(f"model> {reply}", flush=True)


def _cmd_export(a: argparse.Namespace) -> int:
    from tunelab.models.runs import export_merged

    out = export_merged(a.run, Path(a.merge), a.runs_dir, overwrite=a.overwrite)
    print(f"merged model: {out}")
    return EXIT_OK


def _cmd_quickstart(a: argparse.Namespace) -> int:
    from tunelab.cli.reporter import StderrReporter
    from tunelab.recipes.quickstart import format_table, run_quickstart

    results = run_quickstart(Path(a.workdir), model=a.model,
                             reporter=StderrReporter(bars=not a.no_progress))
    print(format_table(results))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tunelab", description="Fine-tune, evaluate and serve language models.")
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="fine-tune a model from a YAML config")
    t.add_argument("config", help="the run config (YAML)")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.learning_rate=1e-4")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--resume", default=None, metavar="auto|PATH",
                   help="continue from the newest complete checkpoint (auto) or a run/checkpoint folder")
    t.add_argument("--force-resume", action="store_true",
                   help="resume even if model, data, batch size, accumulation or seed changed (logged)")
    t.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="data-parallel processes on this machine (same global batch and loss)")
    t.set_defaults(func=_cmd_train)

    from tunelab.cli import tune

    tune.register(sub)

    from tunelab.cli import evaluate

    evaluate.register(sub)

    from tunelab.cli import data_check, data_ops

    d = sub.add_parser("data", help="the data gate: check, profile, dedup, split, clean, ...")
    dsub = d.add_subparsers(dest="data_cmd", required=True)
    data_check.register(dsub)
    data_ops.register(dsub)

    m = sub.add_parser("models", help="the model store: pull, import, list")
    ms = m.add_subparsers(dest="models_cmd", required=True)
    mp = ms.add_parser("pull", help="fetch a known model into the store")
    mp.add_argument("name")
    mi = ms.add_parser("import", help="add a .gguf file or a Hugging Face folder to the store")
    mi.add_argument("source")
    mi.add_argument("--name", required=True)
    mi.add_argument("--replace", action="store_true", help="replace a model of the same name")
    ms.add_parser("list", help="models in the store")
    m.set_defaults(func=_cmd_models)

    r = sub.add_parser("runs", help="list and inspect training runs")
    rs = r.add_subparsers(dest="runs_cmd", required=True)
    rl = rs.add_parser("list")
    rl.add_argument("--dir", default="runs")
    rsh = rs.add_parser("show")
    rsh.add_argument("run")
    rsh.add_argument("--dir", default="runs")
    r.set_defaults(func=_cmd_runs)

    for name, func, helptext in (("generate", _cmd_generate, "generate answers to prompts"),
                                 ("chat", _cmd_chat, "talk to a model interactively")):
        g = sub.add_parser(name, help=helptext)
        g.add_argument("run", help="a run folder or name, or a model reference")
        if name == "generate":
            g.add_argument("--prompt", action="append", required=True, help="repeat for several")
            g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
            g.add_argument("--seed", type=int, default=0)
        g.add_argument("--system", default=None, help="a system message")
        g.add_argument("--max-new-tokens", type=int, default=256)
        g.add_argument("--runs-dir", default="runs")
        g.set_defaults(func=func)

    e = sub.add_parser("export", help="write a standalone merged model folder")
    e.add_argument("run")
    e.add_argument("--merge", required=True, metavar="OUT", help="output folder")
    e.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    e.add_argument("--runs-dir", default="runs")
    e.set_defaults(func=_cmd_export)

    q = sub.add_parser("quickstart", help="generate a task, fine-tune the default model, compare")
    q.add_argument("--workdir", default="quickstart", help="where data and the run go")
    q.add_argument("--model", default="smollm2-135m-instruct")
    q.add_argument("--no-progress", action="store_true")
    q.set_defaults(func=_cmd_quickstart)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tunelab` command; returns the exit code."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub at run time
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # Overrides may follow options (`train run.yaml --no-progress lora.r=8`).
    if extra and args.cmd in ("train", "tune") and all("=" in x and not x.startswith("-") for x in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        with library_bars(shown=not getattr(args, "no_progress", False)):
            return args.func(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except TunelabError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
