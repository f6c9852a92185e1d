"""Each default that code outside a config needs is written once; this AST walk finds copies.

A default lives in the config schema (``tunelab.config.schema``: the field default is the
named constant) or in one named constant of the lowest module that owns it
(``tunelab.gate.dedup``). Everything else imports the name. The walk reads every module
under ``src/tunelab`` and reports a literal copy of a default's value:

* a string default (the default model, the runs folder) anywhere but in a docstring; the
  model name also inside a longer string (a hint naming it), the runs folder as the whole
  string only (``"runs"`` is also a word);
* a number default (dedup thresholds, MinHash permutations, max_length) where it is the
  value of something whose name means that setting: a parameter default, a keyword
  argument, a positional argument of a function defined in src, an ``add_argument``
  option's ``default=``/``const=``, a field, an assignment, a dict entry. A 0.95 named
  ``confidence`` or a 1024 named ``n`` is another setting and is left alone.

The one place allowed to hold each literal is its constant's own assignment (plus the
catalogue entry of the default model, which names the model itself, and ``runs`` as the
name of the ``tunelab runs`` command).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

from tunelab.config import schema
from tunelab.gate import augment, dedup

SRC = Path(__file__).resolve().parents[2] / "src" / "tunelab"


@dataclass(frozen=True)
class Default:
    """A default, where its literal is written, and the names that mean its setting."""

    constant: str  # the name everything imports
    home: str  # the module (path under src/tunelab) whose assignment holds the literal
    value: str | int | float
    names: tuple[str, ...] = ()  # numbers: a parameter, option or field name containing one


DEFAULTS = (
    Default("DEFAULT_MODEL", "config/schema.py", schema.DEFAULT_MODEL),
    Default("DEFAULT_RUNS_DIR", "config/schema.py", schema.DEFAULT_RUNS_DIR),
    Default("DEFAULT_MAX_LENGTH", "config/schema.py", schema.DEFAULT_MAX_LENGTH, ("max_length",)),
    Default("DEFAULT_THRESHOLD", "gate/dedup.py", dedup.DEFAULT_THRESHOLD,
            ("threshold", "near", "similarity")),
    Default("DEFAULT_SEMANTIC_THRESHOLD", "gate/dedup.py", dedup.DEFAULT_SEMANTIC_THRESHOLD,
            ("threshold", "semantic", "similarity", "cosine")),
    Default("DEFAULT_NUM_PERM", "gate/dedup.py", dedup.DEFAULT_NUM_PERM, ("num_perm",)),
    Default("PARAPHRASE_MAX_NEW_TOKENS", "gate/augment.py", augment.PARAPHRASE_MAX_NEW_TOKENS,
            ("max_new_tokens",)),
    Default("PARAPHRASE_TEMPERATURE", "gate/augment.py", augment.PARAPHRASE_TEMPERATURE,
            ("temperature",)),
)
# Literals that are not a copy of the default: (module, top-level assignment or call).
NOT_A_COPY = {
    ("DEFAULT_MODEL", "models/catalog.py", "KNOWN_MODELS"),  # the catalogue entry's own name
}


def _norm(name: str) -> str:
    return name.lstrip("-").replace("-", "_").lower()


def _signatures(files: list[Path]) -> dict[str, list[str] | None]:
    """Positional parameter names of each function name defined in src (None: ambiguous)."""
    sigs: dict[str, list[str] | None] = {}
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                params = [a.arg for a in (*node.args.posonlyargs, *node.args.args)]
                if params and params[0] in ("self", "cls"):
                    params = params[1:]
                sigs[node.name] = params if sigs.get(node.name, params) == params else None
    return sigs


def _callee(call: ast.Call) -> str:
    fn = call.func
    return fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else ""


def _target_name(t: ast.expr) -> str:
    return t.id if isinstance(t, ast.Name) else t.attr if isinstance(t, ast.Attribute) else ""


def _named_values(tree: ast.AST, sigs: dict) -> list[tuple[str, ast.expr]]:
    """(the setting's name, the expression given to it) for every named position in a tree."""
    out: list[tuple[str, ast.expr]] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            a = node.args
            positional = [*a.posonlyargs, *a.args]
            out += [(p.arg, d) for p, d in zip(positional[len(positional) - len(a.defaults):],
                                                a.defaults, strict=True)]
            out += [(p.arg, d) for p, d in zip(a.kwonlyargs, a.kw_defaults, strict=True) if d]
        elif isinstance(node, ast.Call):
            options = [_norm(x.value) for x in node.args
                       if isinstance(x, ast.Constant) and isinstance(x.value, str)
                       and x.value.startswith("-")]
            for kw in node.keywords:
                if kw.arg in ("default", "const") and options:  # argparse: the option's name
                    out += [(o, kw.value) for o in options]
                elif kw.arg in ("default", "const") and _callee(node) in ("Field", "field"):
                    continue  # named by the field it is assigned to (below)
                elif kw.arg:
                    out.append((kw.arg, kw.value))
            params = sigs.get(_callee(node))
            if params:
                out += list(zip(params, node.args, strict=False))
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            value = node.value
            if isinstance(value, ast.Call) and _callee(value) in ("Field", "field"):
                given = value.args[:1] + [k.value for k in value.keywords if k.arg == "default"]
                value = given[0] if given else None
            if value is not None:
                out += [(_target_name(t), value) for t in targets if _target_name(t)]
        elif isinstance(node, ast.Dict):
            out += [(k.value, v) for k, v in zip(node.keys, node.values, strict=True)
                    if isinstance(k, ast.Constant) and isinstance(k.value, str)]
    return out


def _is_number(node: ast.expr, value) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) in (int, float) \
        and node.value == value


def _allowed(d: Default, rel: str, tree: ast.Module) -> set[int]:
    """ids of the Constant nodes allowed to hold ``d``'s literal in this module."""
    ok: set[int] = set()
    for stmt in tree.body:
        names = {_target_name(t) for t in getattr(stmt, "targets", [getattr(stmt, "target", None)])
                 if t is not None}
        if (rel == d.home and d.constant in names) \
                or any((d.constant, rel, n) in NOT_A_COPY for n in names):
            ok |= {id(n) for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            ok.add(id(node.value))  # a docstring or bare string: documentation, not a value
        elif isinstance(node, ast.Call) and _callee(node) == "add_parser" and node.args:
            ok.add(id(node.args[0]))  # a command's name (`tunelab runs`), not a folder
        elif isinstance(node, ast.Dict):
            ok |= {id(k) for k in node.keys if k is not None}  # a key names a field
    return ok


def literal_copies(src: Path) -> list[str]:
    """Every literal copy of a default in the modules under ``src``, as ``path:line: ...``."""
    files = sorted(src.rglob("*.py"))
    sigs = _signatures(files)
    found: list[str] = []
    for f in files:
        rel = f.relative_to(src).as_posix()
        tree = ast.parse(f.read_text(encoding="utf-8"))
        named = _named_values(tree, sigs)
        for d in DEFAULTS:
            ok = _allowed(d, rel, tree)
            if isinstance(d.value, str):
                hits = [n for n in ast.walk(tree) if isinstance(n, ast.Constant)
                        and isinstance(n.value, str) and id(n) not in ok
                        and (n.value == d.value or (d.value != schema.DEFAULT_RUNS_DIR
                                                    and d.value in n.value))]
                found += [f"{rel}:{n.lineno}: {n.value!r} copies {d.constant}" for n in hits]
            else:
                found += [f"{rel}:{v.lineno}: {name} = {v.value!r} copies {d.constant}"
                          for name, v in named
                          if _is_number(v, d.value) and id(v) not in ok
                          and any(k in _norm(name) for k in d.names)]
    return sorted(set(found))


def test_no_default_is_copied_as_a_literal():
    copies = literal_copies(SRC)
    assert not copies, ("import the named default instead of copying its value "
                        "(tunelab.config.schema, tunelab.gate.dedup):\n" + "\n".join(copies))


@pytest.mark.parametrize("d", DEFAULTS, ids=lambda d: d.constant)
def test_each_default_is_written_in_its_home(d):
    tree = ast.parse((SRC / d.home).read_text(encoding="utf-8"))
    values = [s.value for s in tree.body if isinstance(s, (ast.Assign, ast.AnnAssign))
              and d.constant in {_target_name(t) for t in getattr(s, "targets", [getattr(s, "target", None)])}]
    assert len(values) == 1 and isinstance(values[0], ast.Constant) \
        and values[0].value == d.value, f"{d.constant} is not written as a literal in {d.home}"


def test_the_walk_finds_planted_copies_and_leaves_other_settings(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "schema.py").write_text(
        f'DEFAULT_MODEL = "{schema.DEFAULT_MODEL}"\nDEFAULT_RUNS_DIR = "runs"\n'
        f"DEFAULT_MAX_LENGTH = {schema.DEFAULT_MAX_LENGTH}\n")
    (tmp_path / "copies.py").write_text(f'''\
"""Docstrings may name {schema.DEFAULT_MODEL} and say runs go to "runs"."""
from pydantic import Field


def load(ref, runs_dir="runs"): ...
def check(path, tokenizer, max_length: int = {schema.DEFAULT_MAX_LENGTH}): ...


class Settings:
    threshold: float = Field({dedup.DEFAULT_THRESHOLD}, gt=0)
    confidence: float = Field({dedup.DEFAULT_SEMANTIC_THRESHOLD}, gt=0)


def build(p, sub):
    p.add_argument("--near", type=float, const={dedup.DEFAULT_THRESHOLD}, nargs="?")
    p.add_argument("--num-perm", type=int, default={dedup.DEFAULT_NUM_PERM})
    p.add_argument("--max-new-tokens", type=int, default={dedup.DEFAULT_NUM_PERM})
    sub.add_parser("runs", help="list runs")
    check("a.jsonl", None, {schema.DEFAULT_MAX_LENGTH})
    speed(n={schema.DEFAULT_MAX_LENGTH})
    return {{"max_length": {schema.DEFAULT_MAX_LENGTH}, "semantic": {dedup.DEFAULT_SEMANTIC_THRESHOLD}}}


HINT = f"run `tunelab models pull {schema.DEFAULT_MODEL}` first"
''')
    found: dict[str, str] = {}
    for line in literal_copies(tmp_path):  # "copies.py:5: ..." by line number
        n = line.split(":")[1]
        found[n] = found.get(n, "") + line
    assert sorted(found, key=int) == ["5", "6", "10", "15", "16", "19", "21", "24"], found
    assert "copies DEFAULT_RUNS_DIR" in found["5"]
    assert "max_length = 1024 copies DEFAULT_MAX_LENGTH" in found["6"]
    assert "threshold = 0.8 copies DEFAULT_THRESHOLD" in found["10"]
    assert "near = 0.8" in found["15"] and "num_perm = 128" in found["16"]
    assert "max_length = 1024" in found["19"]  # positional: check()'s parameter
    assert "DEFAULT_MAX_LENGTH" in found["21"] and "DEFAULT_SEMANTIC_THRESHOLD" in found["21"]
    assert "copies DEFAULT_MODEL" in found["24"]
    # left alone: the docstring (1), confidence 0.95 (11), --max-new-tokens 128 (17),
    # the `runs` command (18), n=1024 of another function (20)
