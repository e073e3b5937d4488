"""The package's layers: every import of one sca module by another, at module level or inside a
function, goes down the layer order, and no chain of imports comes back to where it started."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sca"

# Lower layers first; a module may import its own layer and the layers below it.
LAYERS = [
    {"sca", "registry"},  # the package's version; the Registry type and the two registries
    {"data"},  # records, images, datasets, readers, downloads
    {"models"},  # SCAModel, segmenters, LMs, mixer, hub, processor
    {"training", "evaluation"},  # the engine: trainer, batching, caches; predictions, metrics, protocols
    {"app"},  # the Captioner, anything mode, CLI subcommands, demo
    {"api", "pipeline"},  # the public import path; params.yaml stages
    {"cli"},
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sca_imports(path: Path, modules: set[str], root: Path = PACKAGE) -> set[str]:
    """The sca modules ``path`` imports anywhere in its code (relative imports resolved); a name
    imported from a package counts as the submodule when there is one."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m in modules and m != name}


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    return {name: sca_imports(path, set(files), root) for name, path in files.items()}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "sca"


def test_every_module_belongs_to_a_layer(graph):
    assert {layer(m) for m in graph} <= set(RANK), sorted({layer(m) for m in graph} - set(RANK))


def test_imports_go_down_the_layers(graph):
    assert upward(graph) == []


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def upward(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} imports {d}" for m, deps in graph.items() for d in deps if RANK[layer(d)] > RANK[layer(m)])


def test_no_import_cycles(graph):
    """Over the whole import graph, imports inside functions included."""
    assert cycles(graph) == []


def test_the_registry_and_the_hub_stand_below_what_they_hold(graph):
    assert graph["sca.registry"] == set()  # parts install their contract checks (Registry.set_check)
    assert "sca.models.captioner" not in graph["sca.models.hub"]  # SCAModel.from_pretrained passes its class


def test_the_checks_find_a_cycle_and_an_upward_import(tmp_path):
    """The helpers above on a made-up package: a <-> b is a cycle, data -> models goes up."""
    root = tmp_path / "sca"
    (root / "data").mkdir(parents=True)
    (root / "models").mkdir()
    for f in ("__init__.py", "data/__init__.py", "models/__init__.py"):
        (root / f).write_text("")
    (root / "data" / "a.py").write_text("def f():\n    from sca.models import b\n")
    (root / "models" / "b.py").write_text("from sca.data import a\n")
    g = import_graph(root)
    assert g["sca.data.a"] == {"sca.models", "sca.models.b"}
    assert cycles(g) == [["sca.data.a", "sca.models.b"]]
    assert upward(g) == ["sca.data.a imports sca.models", "sca.data.a imports sca.models.b"]
