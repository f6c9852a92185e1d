"""The house rules of ``src/tunelab``, read from the code's own imports (an AST walk).

Layers, bottom to top; a module imports only from its own package or from layers below:

    0  errors                     the one exception tree
    1  files                      atomic writes, file modes, the YAML mapping reader
    2  config | tracking          typed settings | run folders, metric logs, the Reporter
    3  data | models | db         what training reads | the model store, loading, runs
                                  | SQLAlchemy tables, migrations, the request log
    4  gate | train | serve       the data-quality gate | training | the serving engine
    5  eval                       scores models (uses the engine, the training loss)
    6  serve.app | review         HTTP routes above the engine | the review web app
    7  recipes                    one file per workflow; never imports another recipe
    8  jobs                       (reserved) scheduled and background work: runs recipes
    9  cli                        argument parsing and printing; the only place that prints

A reserved layer's package does not exist yet; its number is here so the author of the
server app, the database layer, the review app or the jobs layer finds the rule. A
layer may hold a sub-package of a package on another layer (``serve.app`` above the
``serve`` engine): the longest matching name decides.
"""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "tunelab"
LAYER = {
    "errors": 0,
    "files": 1,
    "config": 2, "tracking": 2,
    "data": 3, "models": 3, "db": 3,
    "gate": 4, "train": 4, "serve": 4,
    "eval": 5,
    "serve.app": 6, "review": 6,
    "recipes": 7,
    "jobs": 8,
    "cli": 9,
}
RESERVED = {"jobs"}


def _module(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path):
    """Every ``tunelab.*`` module a file imports, anywhere in it (also inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    own = _module(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = own.split(".")[: len(own.split(".")) - node.level + (path.name == "__init__.py")]
                mod = ".".join(base + ([node.module] if node.module else []))
                names = [f"{mod}.{a.name}" for a in node.names]
                yield from [mod, *names]
            elif node.module and node.module.startswith("tunelab."):
                yield node.module.removeprefix("tunelab.")
                for a in node.names:  # `from tunelab.eval import bbq` imports a module
                    yield f"{node.module.removeprefix('tunelab.')}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("tunelab."):
                    yield a.name.removeprefix("tunelab.")


def _layer_key(module: str) -> str | None:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in LAYER:
            return key
    return None


def _files():
    return sorted(SRC.rglob("*.py"))


def _known_modules() -> set[str]:
    return {_module(f) for f in _files()}


def test_every_package_has_a_layer():
    pkgs = {p.name for p in SRC.iterdir() if p.is_dir() and not p.name.startswith("__")}
    mods = {p.stem for p in SRC.glob("*.py") if p.stem not in ("__init__", "__main__")}
    assert pkgs | mods <= set(LAYER), (pkgs | mods) - set(LAYER)


def test_reserved_layers_are_not_built_yet_or_sit_where_stated():
    # When a reserved package appears, remove it from RESERVED: its place is already set.
    for name in RESERVED:
        path = SRC.joinpath(*name.split("."))
        assert not path.exists() or path.is_dir(), name


def test_no_module_imports_upwards_or_sideways():
    known = _known_modules()
    bad = []
    for f in _files():
        own = _layer_key(_module(f))
        if own is None:
            continue  # tunelab/__init__.py, __main__.py sit above everything
        for mod in _imports(f):
            if mod not in known:
                continue  # a name imported from a module, not a module
            other = _layer_key(mod)
            if other is None or other == own:
                continue
            if LAYER[other] >= LAYER[own]:
                bad.append(f"{f.relative_to(SRC)} imports tunelab.{mod} "
                           f"({other}, layer {LAYER[other]}; {own} is layer {LAYER[own]})")
    assert not bad, "layering violations:\n" + "\n".join(bad)


def _graph() -> dict[str, set[str]]:
    known = _known_modules()
    graph: dict[str, set[str]] = {}
    for f in _files():
        own = _module(f)
        graph[own] = {m for m in _imports(f) if m in known and m != own}
    return graph


def test_no_import_circle_in_src():
    """No module reaches itself through imports (at any depth, inside functions too).

    A package's ``__init__`` is left out of the walk (``a.b`` imported from ``a.b.c``
    is the package marker, not a module with code of its own here).
    """
    graph = _graph()
    inits = {_module(f) for f in _files() if f.name == "__init__.py"}
    graph = {m: {d for d in deps if d not in inits} for m, deps in graph.items() if m not in inits}
    state: dict[str, int] = {}  # 1 on the path, 2 done
    circles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                circles.append(path[path.index(dep):] + [dep] if dep in path else [node, dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


def test_no_recipe_imports_another_recipe():
    bad = []
    for f in (SRC / "recipes").glob("*.py"):
        for mod in _imports(f):
            if mod.startswith("recipes.") and mod != "recipes" and mod != _module(f):
                bad.append(f"{f.name} imports tunelab.{mod}")
    assert not bad, "a recipe imports only lower layers:\n" + "\n".join(bad)


def test_only_cli_prints():
    """Lower layers report through a Reporter or return values (README: output policy)."""
    bad = []
    for f in _files():
        if _layer_key(_module(f)) == "cli" or f.name == "__main__.py":
            continue  # `python -m tunelab` is the CLI's entry point
        tree = ast.parse(f.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                fn = node.func
                name = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else ""
                owner = fn.value.id if isinstance(fn, ast.Attribute) and isinstance(fn.value, ast.Name) else ""
                if name == "print" or (owner == "warnings" and name == "warn") \
                        or (owner in ("sys",) and name in ("exit",)):
                    bad.append(f"{f.relative_to(SRC)}:{node.lineno} calls {owner + '.' if owner else ''}{name}")
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) \
                    and isinstance(node.value.value, ast.Name) and node.value.value.id == "sys" \
                    and node.value.attr in ("stdout", "stderr") and node.attr == "write":
                bad.append(f"{f.relative_to(SRC)}:{node.lineno} writes sys.{node.value.attr}")
    assert not bad, "only tunelab.cli prints or exits:\n" + "\n".join(bad)


def test_the_check_sees_a_circle_and_a_print(tmp_path, monkeypatch):
    """The walks above can fail: a planted circle and a planted print are found."""
    pkg = tmp_path / "tunelab"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("")
    (pkg / "data" / "a.py").write_text("from tunelab.data.b import x\nprint('hi')\n")
    (pkg / "data" / "b.py").write_text("from tunelab.data.a import y\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["SRC"]), "SRC", pkg)
    import pytest

    with pytest.raises(AssertionError, match="data.a -> data.b -> data.a"):
        test_no_import_circle_in_src()
    with pytest.raises(AssertionError, match="data/a.py:2 calls print"):
        test_only_cli_prints()


def test_core_import_has_no_heavy_side_effects():
    import subprocess
    import sys

    code = "import sys, tunelab; print(any(m in sys.modules for m in ('torch', 'transformers')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
