"""The package's layering and import graph, read from every module's imports with `ast`.

Every file counts, ``__init__.py`` included, and every import: at the top, inside functions
(lazy), under ``TYPE_CHECKING`` (a type-only arrow is still an arrow a reader follows), and
``from tallformer import name`` (dunder names too: that imports the package root).

    errors, atomic, version  <-  ops, evaluation, config  <-  data, memory | models  <-  engine  <-  commands, cli
    plots, viewer (pictures and the HTML page)  <-  commands;   the package root (its lazy API)  <-  nothing

`errors` and `version` import nothing of ours, `atomic` only `errors` (its `OutputError`
and the words for a failed write); `ops`, `evaluation` and `config`
only those; `data` and `memory` only the layers below them (never each other, never
`models`); `models` only `ops` and `config` (and the foundation); `engine` uses `models`,
`memory`, `data`, `evaluation`; `commands` and `cli` sit on top. The package root
(``tallformer/__init__.py``) imports its API lazily from the layers it names; no module
of the package imports the root.

Inside `engine`, the detector families: a family's engine module
(``engine/families/<kind>.py``) imports of the engine only its shared parts (`FAMILY_PARTS`),
and only the factory table (``engine/factory.py``) imports the family modules; no family
name (its ``model.kind``, its detector class, its modules) appears elsewhere in `engine`
or in `commands`. No family's network imports another family's.

Imports allowed by exception are listed in `EXCEPTIONS`, each with why (none today). And
there is no import circle anywhere (the strongly connected components of the graph).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import tallformer

PACKAGE = Path(tallformer.__file__).resolve().parent
ROOT = "tallformer"
FOUNDATION = {"errors", "atomic", "version"}
BELOW_ENGINE = FOUNDATION | {"ops", "evaluation", "config", "data", "memory", "models"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "atomic": {"errors"},
    "version": set(),
    "ops": FOUNDATION,
    "evaluation": FOUNDATION,
    "config": FOUNDATION,
    "data": FOUNDATION | {"ops", "evaluation", "config"},
    "memory": FOUNDATION | {"ops", "evaluation", "config"},
    "models": FOUNDATION | {"ops", "config"},
    "engine": BELOW_ENGINE,
    "plots": FOUNDATION | {"ops", "evaluation", "config", "data"},
    "viewer": FOUNDATION,
    "commands": BELOW_ENGINE | {"engine", "plots", "viewer", "cli"},
    "cli": FOUNDATION | {"commands"},
    ROOT: FOUNDATION | {"config", "evaluation", "memory", "engine"},  # the lazy API
    "__main__": {"cli"},
}
# (importing module, imported module) -> why it is allowed although the rule above says no
EXCEPTIONS: dict[tuple[str, str], str] = {}

# the engine's parts a family's engine module may import (the seam and what it runs on)
FAMILY_PARTS = {f"{ROOT}.engine.{m}" for m in ("family", "errors", "results", "subset", "device", "stream")}
FAMILIES_PACKAGE = f"{ROOT}.engine.families"
FACTORY = f"{ROOT}.engine.factory"


def _name(path: Path) -> str:
    """``tallformer/models/neck.py`` -> ``tallformer.models.neck``; a package's
    ``__init__.py`` -> the package's name."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULE_PATHS = {_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _layer(module: str) -> str:
    """``tallformer.data.video`` -> ``data``; ``tallformer.errors`` -> ``errors``; the root -> itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _resolve(target: str) -> str:
    """The package module an import of `target` runs: itself, or its longest known prefix
    (``from tallformer.models import Detections`` imports ``tallformer.models``)."""
    parts = target.split(".")
    while parts and ".".join(parts) not in MODULE_PATHS:
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str | None = None) -> list[tuple[int, str]]:
    """(line, imported module of the package) for every import of the file, lazy and
    type-only ones included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = (module if path.name == "__init__.py" else module.rsplit(".", 1)[0]) if module else ROOT
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from ..models import y
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.append((node.lineno, base))
            # from tallformer import errors / __version__; from tallformer.models import neck
            found += [(node.lineno, f"{base}.{a.name}") for a in node.names if a.name != "*"]
    resolved = []
    for line, target in found:
        if target == ROOT or target.startswith(f"{ROOT}."):
            resolved.append((line, _resolve(target)))
    return sorted(set(resolved))


GRAPH: dict[str, set[str]] = {m: {t for _, t in _imports(p, m)} - {m} for m, p in MODULE_PATHS.items()}


def test_every_layer_is_known() -> None:
    layers = {_layer(name) for name in MODULE_PATHS}
    assert layers <= set(ALLOWED), f"modules in layers the rule does not name: {layers - set(ALLOWED)}"


def test_the_init_files_and_the_root_are_checked() -> None:
    assert ROOT in MODULE_PATHS
    assert f"{ROOT}.models" in MODULE_PATHS
    assert f"{ROOT}.engine.families" in MODULE_PATHS
    assert f"{ROOT}.engine.infer" in GRAPH[ROOT]  # the root's lazy `detect`


@pytest.mark.parametrize("name", sorted(MODULE_PATHS), ids=sorted(MODULE_PATHS))
def test_imports_point_down(name: str) -> None:
    path = MODULE_PATHS[name]
    layer = _layer(name)
    bad = [f"{path.name}:{line} imports {mod}" for line, mod in _imports(path, name)
           if mod != name and _layer(mod) != layer and _layer(mod) not in ALLOWED[layer]
           and (name, mod) not in EXCEPTIONS]
    assert not bad, f"{name} ({layer}) may import only {sorted(ALLOWED[layer])}: " + "; ".join(bad)


def test_no_module_imports_the_package_root() -> None:
    bad = [m for m, targets in GRAPH.items() if ROOT in targets and m != f"{ROOT}.__main__"]
    assert not bad, f"import the version from tallformer.version, not the root: {bad}"


def test_family_modules_import_only_the_engine_parts_of_the_seam() -> None:
    families = [m for m in MODULE_PATHS if m.startswith(f"{FAMILIES_PACKAGE}.")]
    assert families, "no family module found"
    bad = [f"{m} imports {t}" for m in families for t in GRAPH[m]
           if _layer(t) == "engine" and t not in FAMILY_PARTS]
    assert not bad, f"a family module may import of the engine only {sorted(FAMILY_PARTS)}: {bad}"
    importers = sorted({m for m, targets in GRAPH.items() for t in targets
                        if t.startswith(f"{FAMILIES_PACKAGE}.") and not m.startswith(FAMILIES_PACKAGE)})
    assert importers == [FACTORY], f"only the factory table names the families, not {importers}"


def _sccs(graph: dict[str, set[str]]) -> Iterator[list[str]]:
    """Tarjan's strongly connected components (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                yield sorted(component)


def test_no_import_circle() -> None:
    circles = [c for c in _sccs(GRAPH) if len(c) > 1]
    assert not circles, "import circles (strongly connected components): " + "; ".join(
        " <-> ".join(c) for c in circles)


def test_the_circle_finder_finds_circles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert [c for c in _sccs(graph) if len(c) > 1] == [["a", "b", "c"]]


def test_the_checker_sees_lazy_type_only_relative_and_dunder_imports(tmp_path: Path) -> None:
    src = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from tallformer.models import outputs\n"
           "from tallformer import __version__\n"
           "def f():\n    import tallformer.engine.step\n    from . import atomic\n")
    p = tmp_path / "m.py"
    p.write_text(src)
    assert sorted({m for _, m in _imports(p, f"{ROOT}.errors")}) == [
        ROOT, f"{ROOT}.atomic", f"{ROOT}.engine.step", f"{ROOT}.models", f"{ROOT}.models.outputs"]


# --------------------------------------------------------------------------- family names


def _family_names() -> tuple[set[str], set[str]]:
    """(every family's model.kind, its detector class's name and its modules' names)."""
    import torch

    from tallformer.config import load_config
    from tallformer.engine.factory import FAMILIES

    kinds = set(FAMILIES)
    names: set[str] = set()
    for family in FAMILIES.values():
        with torch.device("meta"):
            model = family.build(load_config(family.example_config))
        names.add(type(model).__name__)
        names.add(type(model).__module__)
        names.add(type(family).__module__)
    return kinds, names


def test_no_family_name_outside_the_families_and_the_table() -> None:
    kinds, names = _family_names()
    checked = [m for m in MODULE_PATHS if (_layer(m) == "engine" and not m.startswith(FAMILIES_PACKAGE)
                                           and m != FACTORY) or _layer(m) == "commands"]
    bad = []
    for module in checked:
        tree = ast.parse(MODULE_PATHS[module].read_text())
        for node in ast.walk(tree):
            hit = None
            if isinstance(node, ast.Constant) and node.value in kinds:
                hit = repr(node.value)
            elif isinstance(node, ast.Name) and node.id in names | {"cast"}:
                hit = node.id
            elif isinstance(node, ast.Attribute) and node.attr in names | {"cast"}:
                hit = node.attr
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                targets = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                hit = next((t for t in targets if t in names or any(t.startswith(f"{n}.") for n in names)), None)
            if hit is not None:
                bad.append(f"{module}:{getattr(node, 'lineno', '?')} {hit}")
    assert not bad, ("family names (model.kind, detector classes, family modules) or cast() in the engine "
                     "outside engine/families and the factory table, or in commands: " + "; ".join(bad))


SHARED_MODELS = {f"{ROOT}.models.{m}" for m in ("protocol", "shared", "outputs", "backbone", "neck", "weights",
                                                 "errors")}


def test_no_family_network_imports_another() -> None:
    """Each family's network (its detector's module and what it imports in `models`,
    the shared modules aside) is its own: no two families have a module in common."""
    import torch

    from tallformer.config import load_config
    from tallformer.engine.factory import FAMILIES

    networks = {}
    for kind, family in FAMILIES.items():
        with torch.device("meta"):
            start = type(family.build(load_config(family.example_config))).__module__
        seen, todo = set(), [start]
        while todo:
            module = todo.pop()
            if module in seen or module in SHARED_MODELS or _layer(module) != "models":
                continue
            seen.add(module)
            todo += GRAPH[module]
        networks[kind] = seen
    for kind, mine in networks.items():
        for other, theirs in networks.items():
            assert other == kind or not mine & theirs, (
                f"families {kind} and {other} share {sorted(mine & theirs)}: move what both use to "
                "tallformer.models.shared (or another shared module), so neither imports the other")
