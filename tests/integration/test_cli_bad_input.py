"""Every command and sub-command, run with bad input, ends in a message and a documented code.

The commands are found by walking the real parser, so a new command or option is covered
here without being listed. Each runs with no arguments, with inputs that do not exist,
with 0, -1 and "abc" for every numeric option, and with a malformed or misspelt YAML file
wherever it takes one. Nothing may print a traceback, end with the internal-error code
(70: that would hide a bug) or another undocumented code, or print a hinted command
that does not parse. The model store is empty, so no model is ever loaded: bad input is
refused before that. A few cases go through a real `python -m tunelab` process.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest
from cli_commands import commands, hinted_commands, is_group, parse_problem

from tunelab.cli import args as arg_types
from tunelab.cli import exits
from tunelab.cli.main import main

TMP = "@TMP@"  # replaced by the test's temporary folder
MALFORMED_YAML = "data:\n  train: [unclosed\n"
MISSPELT_YAML = "data:\n  train: train.jsonl\ntrian:\n  max_steps: 1\n"
MISSPELT_EVAL_YAML = "tsk: classify\n"
MISSPELT_SERVE_YAML = "models: [tiny]\nprot: 8000\n"


def _is_numeric(a: argparse.Action) -> bool:
    return a.type in (int, float) or getattr(a.type, "__module__", "") == arg_types.__name__


def _takes_yaml(a: argparse.Action) -> bool:
    return "YAML" in f"{a.help or ''} {a.metavar or ''}"


def _inputs(parser: argparse.ArgumentParser) -> list[str]:
    """Required options and positionals (and a lone optional one, like `eval`'s model), each
    given a value that names nothing that exists."""
    argv: list[str] = []
    for a in parser._actions:
        if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if a.option_strings and not a.required:
            continue
        if not a.option_strings and a.nargs == "*":
            continue
        value = "hello" if a.dest == "prompt" else \
            f"{TMP}/missing/{a.dest}.{'yaml' if _takes_yaml(a) else 'jsonl'}"
        argv += [a.option_strings[-1], value] if a.option_strings else [value]
    return argv


def _cases() -> list[tuple[str, tuple[str, ...], list[str], str, str | None]]:
    """``(id, command path, argv, kind, target)`` for every command and kind of bad input."""
    cases = []
    for path, parser in commands():
        name = " ".join(("tunelab", *path))
        cases.append((f"{name}: no arguments", path, list(path), "bare", None))
        if is_group(parser) or not path:
            continue
        base = [*path, *_inputs(parser)]
        cases.append((f"{name}: missing inputs", path, base, "missing", None))
        for a in parser._actions:
            if not a.option_strings:
                continue
            opt = a.option_strings[-1]
            if _is_numeric(a):
                for value in ("0", "-1", "abc"):
                    cases.append((f"{name} {opt} {value}", path, [*base, opt, value], value, opt))
        for a in parser._actions:
            if not _takes_yaml(a):
                continue
            for kind in ("malformed", "misspelt"):
                if a.option_strings:
                    argv = [*base, a.option_strings[-1], f"{TMP}/{kind}.yaml"]
                else:
                    argv = [f"{TMP}/{kind}.yaml" if x.endswith(f"/{a.dest}.yaml") else x
                            for x in base]
                where = a.option_strings[-1] if a.option_strings else a.dest
                cases.append((f"{name} {where}: {kind} YAML", path, argv, kind, a.dest))
    return cases


CASES = _cases()
ALL_COMMANDS = commands()


def test_every_command_is_covered():
    covered = {case[1] for case in CASES if case[3] == "bare"}
    assert len(covered) == len(ALL_COMMANDS) >= 25  # every group and leaf of the parser


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty store and hub cache, run from an empty folder, with the YAML files used."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    (tmp_path / "malformed.yaml").write_text(MALFORMED_YAML)
    (tmp_path / "misspelt.yaml").write_text(MISSPELT_YAML)
    return tmp_path


def _option_rejects(parser_path: tuple[str, ...], opt: str, value: str) -> bool:
    """Whether the option's own type refuses the value (at parse time)."""
    parser = dict(ALL_COMMANDS)[parser_path]
    action = next(a for a in parser._actions if opt in a.option_strings)
    try:
        action.type(value)
    except (argparse.ArgumentTypeError, ValueError):
        return True
    return False


@pytest.mark.parametrize(("path", "argv", "kind", "target"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_gets_a_message_and_a_documented_code(path, argv, kind, target, workdir,
                                                        capsys):
    if kind == "misspelt" and target != "config":
        return  # only run and evaluation configs have a schema to misspell
    if kind == "misspelt" and "eval" in argv:
        (workdir / "misspelt.yaml").write_text(MISSPELT_EVAL_YAML)
    if kind == "misspelt" and ("serve" in argv or "experiment" in argv or "monitor" in argv):  # serve.yaml
        (workdir / "misspelt.yaml").write_text(MISSPELT_SERVE_YAML)
    argv = [x.replace(TMP, str(workdir)) for x in argv]
    code = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert code in exits.DOCUMENTED and code != exits.INTERNAL, err
    if code != exits.OK:
        assert "error" in err, f"exit {code} without an error message"
    for command in hinted_commands(err):
        assert parse_problem(command) is None

    parser = dict(ALL_COMMANDS)[path]
    if kind == "bare" and is_group(parser):
        assert code == exits.OK and out.startswith("usage: tunelab")  # the help, not an error
    elif kind == "bare" and _inputs(parser):
        assert code == exits.USAGE and "the following arguments are required" in err
    elif kind == "missing" and _inputs(parser):
        # names the path that is not there, or what else to fix first (labels: a column)
        assert code != exits.OK and ("missing" in err or "hint:" in err)
    elif kind in ("0", "-1", "abc") and _option_rejects(path, target, kind):
        assert code == exits.USAGE and f"argument {target}" in err
    elif kind == "malformed" and target == "config":
        assert code == exits.USAGE and re.search(r"malformed\.yaml:\d+:\d+: not valid YAML", err)
    elif kind == "misspelt":
        assert code == exits.USAGE and "did you mean" in err


@pytest.mark.parametrize("argv", [
    [],  # the help
    ["--version"],
    ["generate", "no-such-run", "--prompt", "hi", "--max-new-tokens", "0"],
    ["train", "malformed.yaml"],
])
def test_through_a_real_process(argv, tmp_path):
    (tmp_path / "malformed.yaml").write_text(MALFORMED_YAML)
    proc = subprocess.run([sys.executable, "-m", "tunelab", *argv], capture_output=True,
                          text=True, cwd=tmp_path, timeout=120)
    assert "Traceback" not in proc.stderr
    if argv in ([], ["--version"]):
        assert proc.returncode == exits.OK and "tunelab" in proc.stdout
    else:
        assert proc.returncode == exits.USAGE and "error" in proc.stderr
