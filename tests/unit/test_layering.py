"""Layers, bottom to top; a module imports only from its own package or layers below.

errors -> config -> data | models -> train | eval | serve | tracking -> recipes -> cli
"""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "tunelab"
LAYER = {"errors": 0, "config": 1, "data": 2, "models": 2, "train": 3, "eval": 3, "serve": 3,
         "tracking": 3, "recipes": 4, "cli": 5}


def _imports(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name


def _package(path: Path) -> str | None:
    rel = path.relative_to(SRC).parts
    name = rel[0].removesuffix(".py")
    return name if name in LAYER else None


def test_every_package_has_a_layer():
    pkgs = {p.name for p in SRC.iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert pkgs <= set(LAYER), pkgs - set(LAYER)


def test_no_module_imports_upwards_or_sideways():
    bad = []
    for f in SRC.rglob("*.py"):
        own = _package(f)
        if own is None:
            continue  # tunelab/__init__.py, __main__.py sit above everything
        for mod in _imports(f):
            parts = mod.split(".")
            if parts[0] != "tunelab" or len(parts) < 2 or parts[1] not in LAYER:
                continue
            other = parts[1]
            if other != own and LAYER[other] >= LAYER[own]:
                bad.append(f"{f.relative_to(SRC)} imports {mod}")
    assert not bad, "layering violations:\n" + "\n".join(bad)


def test_core_import_has_no_heavy_side_effects():
    import subprocess
    import sys

    code = "import sys, tunelab; print(any(m in sys.modules for m in ('torch', 'transformers')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
