"""The package's layering, read from every module's imports (ast, lazy imports included).

    errors, atomic  <-  ops, evaluation, config  <-  data, memory  |  models  <-  engine  <-  commands, cli
                                                     plots, viewer (pictures and the HTML page)  <-  commands

`errors` and `atomic` import nothing of ours; `ops`, `evaluation` and `config` only those;
`data` and `memory` only the layers below them (never each other, never `models`); `models`
only `ops` and `config` (and the foundation); `engine` uses `models`, `memory`, `data`,
`evaluation`; `commands` and `cli` sit on top. Imports under `TYPE_CHECKING` count too: a
type-only arrow is still an arrow a reader has to follow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tallformer

PACKAGE = Path(tallformer.__file__).resolve().parent
FOUNDATION = {"errors", "atomic"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "atomic": set(),
    "ops": FOUNDATION,
    "evaluation": FOUNDATION,
    "config": FOUNDATION,
    "data": FOUNDATION | {"ops", "evaluation", "config"},
    "memory": FOUNDATION | {"ops", "evaluation", "config"},
    "models": FOUNDATION | {"ops", "config"},
    "engine": FOUNDATION | {"ops", "evaluation", "config", "data", "memory", "models"},
    "plots": FOUNDATION | {"ops", "evaluation", "config", "data"},
    "viewer": FOUNDATION,
    "commands": FOUNDATION | {"ops", "evaluation", "config", "data", "memory", "models", "engine",
                              "plots", "viewer", "commands", "cli"},
    "cli": FOUNDATION | {"commands"},
}


def _layer(module: str) -> str:
    """`tallformer.data.video` -> `data`; `tallformer.errors` -> `errors`."""
    return module.split(".")[1]


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts)
        if name.endswith(("__init__", "__main__")):
            continue
        out.append((name, path))
    return out


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            if node.module == "tallformer":  # from tallformer import errors
                found += [(node.lineno, f"tallformer.{a.name}") for a in node.names
                          if not a.name.startswith("__")]
    return [(n, m) for n, m in found if m.startswith("tallformer.")]


MODULES = _modules()


def test_every_layer_is_known():
    layers = {_layer(name) for name, _ in MODULES}
    assert layers <= set(ALLOWED), f"modules in layers the rule does not name: {layers - set(ALLOWED)}"


@pytest.mark.parametrize(("name", "path"), MODULES, ids=[n for n, _ in MODULES])
def test_imports_point_down(name: str, path: Path):
    layer = _layer(name)
    bad = [f"{path.name}:{line} imports {mod}" for line, mod in _imports(path)
           if _layer(mod) != layer and _layer(mod) not in ALLOWED[layer]]
    assert not bad, f"{name} ({layer}) may import only {sorted(ALLOWED[layer])}: " + "; ".join(bad)


def test_the_checker_sees_lazy_and_type_only_imports(tmp_path):
    src = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from tallformer.models import x\n"
           "def f():\n    import tallformer.engine.step\n")
    p = tmp_path / "m.py"
    p.write_text(src)
    assert [m for _, m in _imports(p)] == ["tallformer.models", "tallformer.engine.step"]
