"""The face of `tunelab`: help, version, the one exit-code table, the last-resort handler,
and hinted commands that parse.
"""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import pytest
import yaml
from cli_commands import commands, hinted_commands, parse_problem
from rundata import write_rows

import tunelab
from tunelab import errors
from tunelab.cli import exits
from tunelab.cli import main as cli_main
from tunelab.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "tunelab"


def test_version(capsys):
    assert main(["--version"]) == exits.OK
    assert capsys.readouterr().out.strip() == f"tunelab {tunelab.__version__}"


def test_bare_tunelab_prints_the_help(capsys):
    assert main([]) == exits.OK
    captured = capsys.readouterr()
    assert captured.out.startswith("usage: tunelab") and "train" in captured.out
    assert "serve" in captured.out
    assert captured.err == ""


@pytest.mark.parametrize(("path", "parser"), commands(),
                         ids=lambda x: " ".join(x) if isinstance(x, tuple) else "")
def test_every_option_and_positional_has_help(path, parser):
    missing = []
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            missing += [f"{c.dest}" for c in a._choices_actions if not c.help]
        elif not a.help or a.help == argparse.SUPPRESS:
            missing.append(a.option_strings[-1] if a.option_strings else a.dest)
    assert not missing, f"tunelab {' '.join(path)}: no help for {missing}"


def test_models_pull_help_lists_the_known_models():
    from tunelab.models.catalog import KNOWN_MODELS

    pull = dict(commands())[("models", "pull")]
    assert all(name in pull.format_help() for name in KNOWN_MODELS)


def _error_classes() -> list[type[errors.TunelabError]]:
    found, todo = [], [errors.TunelabError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo += cls.__subclasses__()
    return [c for c in found if c.__module__ == errors.__name__]


@pytest.mark.parametrize(("cls", "code"), [
    (errors.ConfigError, exits.USAGE), (errors.UsageError, exits.USAGE),
    (errors.DataError, exits.DATA), (errors.ModelError, exits.MODEL),
    (errors.ModelNotFoundError, exits.MODEL), (errors.UnsafeModelError, exits.MODEL),
    (errors.StoreError, exits.STORE), (errors.TrainingError, exits.TRAINING),
    (errors.DatabaseError, exits.DATABASE),
])
def test_each_error_class_has_its_code(cls, code):
    error = cls(["a problem"]) if cls is errors.ConfigError else cls("a problem")
    assert exits.exit_code(error) == code


def test_every_error_class_maps_to_a_documented_code():
    classes = _error_classes()
    assert len(classes) >= 9  # the tree in errors.py
    for cls in classes:
        error = cls(["x"]) if issubclass(cls, errors.ConfigError) else cls("x")
        assert exits.exit_code(error) in exits.DOCUMENTED
        assert exits.exit_code(error) != exits.INTERNAL


def test_readme_documents_exactly_the_codes():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Exit codes\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d+) \|", section, re.MULTILINE)
    assert [int(r) for r in rows] == list(exits.DOCUMENTED)


def test_exit_codes_are_defined_only_in_exits_py():
    """No CLI module returns a number of its own or defines EXIT_ constants."""
    offenders = []
    for path in sorted((SRC / "cli").glob("*.py")):
        if path.name == "exits.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Return) and isinstance(node.value, ast.Constant) \
                    and isinstance(node.value.value, int):
                offenders.append(f"{path.name}:{node.lineno} returns {node.value.value}")
            if isinstance(node, ast.Name) and node.id.startswith("EXIT_"):
                offenders.append(f"{path.name}:{node.lineno} {node.id}")
    assert not offenders


def test_an_unexpected_exception_is_one_line_and_exit_70(monkeypatch, capsys, tmp_path):
    def boom(_):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(cli_main, "_cmd_runs_list", boom)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.delenv("TUNELAB_DEBUG", raising=False)
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    assert main(["runs", "list"]) == exits.INTERNAL
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith("internal error: RuntimeError: boom (a bug in tunelab;")
    saved = Path(re.search(r"the traceback is in (\S+);", err).group(1))
    assert saved.parent == tmp_path
    assert "Traceback" in saved.read_text() and "second line" in saved.read_text()

    monkeypatch.setenv("TUNELAB_DEBUG", "1")
    assert main(["runs", "list"]) == exits.INTERNAL
    assert "Traceback" in capsys.readouterr().err


def test_ctrl_c_exits_130_without_a_traceback(monkeypatch, capsys):
    def interrupted(_):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main, "_cmd_runs_list", interrupted)
    assert main(["runs", "list"]) == exits.INTERRUPTED
    assert capsys.readouterr().err == "interrupted\n"


def _source_strings(path: Path) -> list[str]:
    """Every string a module can print (docstrings left out), f-string fields as ``{x}``."""
    out = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}  # bare strings
    for node in ast.walk(tree):
        if id(node) in docs:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            out.append(node.value)
        elif isinstance(node, ast.JoinedStr):
            out.append("".join(v.value if isinstance(v, ast.Constant) else "{x}"
                               for v in node.values))
    return out


HINTED_IN_SOURCE = sorted({(str(p.relative_to(SRC)), cmd) for p in SRC.rglob("*.py")
                           for s in _source_strings(p) for cmd in hinted_commands(s)})


def test_the_source_hints_at_commands():
    assert len(HINTED_IN_SOURCE) >= 15
    assert any("models import" in cmd for _, cmd in HINTED_IN_SOURCE)


@pytest.mark.parametrize(("module", "command"), HINTED_IN_SOURCE,
                         ids=[f"{m}: {c}" for m, c in HINTED_IN_SOURCE])
def test_every_hinted_command_in_the_source_parses(module, command):
    assert parse_problem(command) is None


def _hints_of(argv: list[str], capsys) -> tuple[int, list[str]]:
    code = main(argv)
    return code, hinted_commands(capsys.readouterr().err)


def test_hints_of_real_errors_parse(tmp_path, capsys, monkeypatch):
    """Trigger the errors whose hints are commands; each hinted command parses."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    no_config = tmp_path / "folder"
    no_config.mkdir()
    write_rows(tmp_path / "d.jsonl", 12)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"train": "d.jsonl"}}))
    cases = [
        (["generate", "smollm2-135m-instruct", "--prompt", "hi"], exits.MODEL),  # not pulled
        (["generate", "no-such-model", "--prompt", "hi"], exits.MODEL),
        (["generate", str(gguf), "--prompt", "hi"], exits.MODEL),  # a file, not a folder
        (["generate", str(no_config), "--prompt", "hi"], exits.MODEL),
        (["models", "pull", "no-such-model"], exits.MODEL),
        (["runs", "show", "nope", "--dir", str(tmp_path / "my runs")], exits.STORE),
        (["export", "nope", "--merge", str(tmp_path / "out")], exits.STORE),
        (["train", str(cfg)], exits.MODEL),  # the default model is not in the store
    ]
    for argv, code in cases:
        got, hinted = _hints_of(argv, capsys)
        assert got == code, argv
        assert hinted, f"{argv}: no command hinted"
        for command in hinted:
            assert parse_problem(command) is None
    assert _hints_of(["runs", "show", "nope", "--dir", str(tmp_path / "my runs")], capsys)[1] \
        == [f"tunelab runs list --dir '{tmp_path / 'my runs'}'"]


def test_override_paths_start_from_the_current_folder(tmp_path, monkeypatch, capsys):
    """The config lives elsewhere; a relative override path is found in the current folder."""
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    write_rows(here / "mine.jsonl", 12)
    (there / "run.yaml").write_text(yaml.safe_dump({"data": {"train": "theirs.jsonl"}}))
    monkeypatch.chdir(here)
    assert main(["train", str(there / "run.yaml")]) == exits.USAGE
    assert f"relative paths in {there / 'run.yaml'} start from {there}" in capsys.readouterr().err
    # found: the run goes on to the model, which is not in the (empty) store
    assert main(["train", str(there / "run.yaml"), "data.train=mine.jsonl"]) == exits.MODEL
    assert main(["train", str(there / "run.yaml"), "data.train=theirs.jsonl"]) == exits.USAGE
    assert f"on the command line start from the current folder {here}" in capsys.readouterr().err


def test_a_closed_pipe_ends_quietly(tmp_path):
    """`tunelab data check FILE --all | head -1`: no BrokenPipeError traceback, exit 141."""
    import subprocess
    import sys

    data = tmp_path / "bad.jsonl"
    data.write_text("".join('{"messages": [{"role": "bot", "content": "x"}]}\n' for _ in range(3000)))
    proc = subprocess.Popen([sys.executable, "-m", "tunelab", "data", "check", str(data), "--all"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader goes away before the command writes
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == exits.BROKEN_PIPE, err
    assert "Traceback" not in err
