"""`tunelab export`: a run as a merged Hugging Face folder (--merge) or a GGUF file (--gguf).

The GGUF export checks the written file against the merged model unless --no-check
(``tunelab.recipes.export``); the agreement goes to stdout, progress to stderr, and the
llama.cpp and Ollama commands follow.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tunelab.cli import exits
from tunelab.cli.args import positive_int
from tunelab.config.schema import (
    DEFAULT_RUNS_DIR,
    GGUF_CHECK_NEW_TOKENS,
    GGUF_CHECK_PROMPTS,
    GGUF_TYPES,
)
from tunelab.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``export`` to the top-level sub-parsers."""
    e = sub.add_parser(
        "export", help="write a merged model folder, or a GGUF file for llama.cpp and Ollama",
        description="Write a finished run (its adapter merged into its base) as a standalone "
                    "Hugging Face folder (--merge) or as one GGUF file (--gguf) with its "
                    "tokenizer, chat template and stop tokens. A GGUF is read back and its "
                    "greedy answers compared token for token with the merged model's before "
                    "it is kept; an Ollama Modelfile is written beside it.")
    e.add_argument("run", help="a finished run folder or name under --runs-dir; with --gguf "
                               "also a model in the store")
    to = e.add_mutually_exclusive_group()
    to.add_argument("--merge", metavar="OUT", help="output folder (Hugging Face format)")
    to.add_argument("--gguf", metavar="OUT.gguf", help="output GGUF file (its folder must exist)")
    e.add_argument("--type", choices=GGUF_TYPES, default=GGUF_TYPES[0],
                   help=f"GGUF weight type (default {GGUF_TYPES[0]}; q8_0 is about a quarter "
                        "of the size)")
    e.add_argument("--no-check", action="store_true",
                   help="write the GGUF without comparing its answers to the merged model's")
    e.add_argument("--prompts", default=None, metavar="FILE",
                   help="chats to check with (default: the run's validation data, else its "
                        "training data, else built-in prompts)")
    e.add_argument("--check-prompts", type=positive_int, default=GGUF_CHECK_PROMPTS, metavar="N",
                   help=f"prompts compared (default {GGUF_CHECK_PROMPTS})")
    e.add_argument("--check-tokens", type=positive_int, default=GGUF_CHECK_NEW_TOKENS, metavar="N",
                   help=f"greedy tokens per compared answer (default {GGUF_CHECK_NEW_TOKENS})")
    e.add_argument("--overwrite", action="store_true", help="replace an existing output")
    e.add_argument("--runs-dir", default=DEFAULT_RUNS_DIR,
                   help=f"where run names are looked up (default: {DEFAULT_RUNS_DIR})")
    e.set_defaults(func=_cmd_export)


def _cmd_export(a: argparse.Namespace) -> int:
    from tunelab.cli.reporter import StderrReporter

    if a.merge is None and a.gguf is None:
        raise UsageError(f"tunelab export {a.run}: nothing says where to write it (missing "
                         "--merge or --gguf)",
                         hint=f"add --gguf OUT.gguf (llama.cpp, Ollama) or --merge OUT (a "
                              f"Hugging Face folder): `tunelab export {a.run} --gguf OUT.gguf`")
    if a.merge is not None:
        from tunelab.models.runs import export_merged

        out = export_merged(a.run, Path(a.merge), a.runs_dir, overwrite=a.overwrite,
                            reporter=StderrReporter())
        print(f"merged model: {out}")
        return exits.OK
    from tunelab.recipes.export import export_gguf

    result = export_gguf(a.run, Path(a.gguf), a.type, a.runs_dir, check=not a.no_check,
                         prompts=Path(a.prompts) if a.prompts else None,
                         n_prompts=a.check_prompts, max_new_tokens=a.check_tokens,
                         overwrite=a.overwrite, reporter=StderrReporter())
    print(f"GGUF ({result.ftype}, {result.bytes / 1e6:,.1f} MB): {result.out}")
    for r in result.reports:
        print(f"  {'passed' if r.passed else 'FAILED'}  {r.summary()}")
    for s in result.skipped:
        print(f"  not checked  {s}")
    if a.no_check:
        print("  not checked  --no-check: the answers were not compared")
    print(f"Modelfile: {result.modelfile}")
    if not result.template_in_modelfile:
        print("  its chat template is not ChatML: Ollama will use the template stored in the GGUF")
    name = result.out.stem.lower().replace("_", "-")
    print("next:")
    for c in result.commands(name):
        print(f"  {c}")
    return exits.OK
