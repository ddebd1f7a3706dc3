"""Imports flow one way: down the layers of docs/architecture.md, and never round in a circle.

Every module of the three source folders is parsed with :mod:`ast` (nothing is imported),
named the way it is installed (``agent/`` is ``pulsetrace``, ``instrumentation/`` is
``pulsetrace.instrumentation``, ``healthchecks/`` is ``pulsetrace.healthchecks``, as
``[tool.setuptools.package-dir]`` in pyproject.toml says), and every import of a pulsetrace
module is collected: at the top of the module, inside functions (lazy imports), under
``if TYPE_CHECKING:``, relative ones resolved, and ``importlib.import_module("literal")``.
``from P import name`` counts as an import of the submodule ``P.name`` when there is one,
else of ``P``. Importing ``a.b.c`` also runs the ``__init__`` of ``a`` and ``a.b``; those
edges are not counted (package ``__init__`` modules must stay free of work and imports).
Registries that name modules in strings (the CLI's ``COMMANDS``, the probe types'
``PROBES``, the facade's lazy names) are plug-in tables, not imports, and are not followed.

The rules:

- **Layers**: a module may import modules of its own layer and of lower layers only
  (:data:`LAYERS`, longest prefix wins). A module the table does not place is a failure too,
  so a new module gets a layer on purpose.
- **No package cycles within a layer**: between the different entries of :data:`LAYERS`
  (``pulsetrace.tracing`` and ``pulsetrace.metrics``, say) the import graph, type-only
  imports included, has no cycle.
- **No module cycles**: between modules, leaving out the imports made only under
  ``if TYPE_CHECKING:``, the graph has no cycle, lazy imports included (a lazy import hides a
  cycle from the interpreter, not from the reader).

A failure lists every offending import with its file and line.
"""

from __future__ import annotations

import ast
import tomllib
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Layer of each package or module (by dotted prefix; the longest prefix that matches wins).
#: ``pulsetrace`` itself is only the facade ``__init__``: it places no other module.
#: Lower layers never import higher ones. See docs/architecture.md.
LAYERS: dict[str, int] = {
    # 0: configuration and process-wide plumbing, knowing nothing of spans or probes
    "pulsetrace.config": 0,
    "pulsetrace.selfmetrics": 0,
    "pulsetrace.forking": 0,
    "pulsetrace.background": 0,
    # 1: storage, wire formats and the small seams the layers above meet at
    "pulsetrace.store": 1,
    "pulsetrace.xray": 1,
    "pulsetrace.http": 1,
    "pulsetrace.instrumentation.hooks": 1,
    # 2: the features
    "pulsetrace.instrumentation": 2,
    "pulsetrace.instrumentation.clients": 2,
    "pulsetrace.healthchecks": 2,
    "pulsetrace.tracing": 2,
    "pulsetrace.metrics": 2,
    "pulsetrace.exporters": 2,
    "pulsetrace.views": 2,
    "pulsetrace.alerts": 2,
    # 3: composition
    "pulsetrace.runtime": 3,
    "pulsetrace.announce": 3,
    "pulsetrace.validation": 3,
    "pulsetrace.demo": 3,
    "pulsetrace.aws_lambda": 3,
    # 4: entry points
    "pulsetrace.cli": 4,
    "pulsetrace.ui": 4,
    "pulsetrace.otel_distro": 4,
    "pulsetrace.boot": 4,
    "pulsetrace.__main__": 4,
    "pulsetrace": 4,
}


@dataclass(frozen=True)
class Edge:
    """One import statement of a pulsetrace module by another."""

    source: str
    target: str
    path: str
    line: int
    #: ``"top"`` (runs at import), ``"lazy"`` (inside a function) or ``"type"`` (under TYPE_CHECKING).
    kind: str

    def __str__(self) -> str:
        return f"{self.source} -> {self.target}  ({self.path}:{self.line}, {self.kind})"


@dataclass(frozen=True)
class _RawImport:
    module: str
    names: tuple[str, ...]
    line: int
    kind: str


def source_folders() -> dict[str, Path]:
    """Dotted package name → folder, from pyproject.toml (the mapping the install uses)."""
    with (ROOT / "pyproject.toml").open("rb") as fh:
        package_dir: dict[str, str] = tomllib.load(fh)["tool"]["setuptools"]["package-dir"]
    return {name: ROOT / folder for name, folder in package_dir.items()}


def module_files() -> dict[str, Path]:
    """Every module of the source folders by its installed dotted name."""
    modules: dict[str, Path] = {}
    for package, folder in source_folders().items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([package, *parts])] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool) -> None:
        self.package = module if is_package else module.rpartition(".")[0]
        self.found: list[_RawImport] = []
        self._in_function = 0
        self._type_only = 0

    def _kind(self) -> str:
        if self._type_only:
            return "type"
        return "lazy" if self._in_function else "top"

    def _function(self, node: ast.AST) -> None:
        self._in_function += 1
        self.generic_visit(node)
        self._in_function -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        self._type_only += 1
        for stmt in node.body:
            self.visit(stmt)
        self._type_only -= 1
        for stmt in node.orelse:
            self.visit(stmt)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append(_RawImport(alias.name, (), node.lineno, self._kind()))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            parts = self.package.split(".")
            if node.level - 1 >= len(parts):
                raise ValueError(f"relative import beyond the top-level package at line {node.lineno}")
            base = ".".join(parts[: len(parts) - (node.level - 1)])
            module = f"{base}.{node.module}" if node.module else base
        else:
            module = node.module or ""
        self.found.append(_RawImport(module, tuple(a.name for a in node.names), node.lineno, self._kind()))

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if (name == "import_module" and node.args and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)):
            self.found.append(_RawImport(node.args[0].value, (), node.lineno, self._kind()))
        self.generic_visit(node)


def imports_in(source: str, module: str, *, is_package: bool = False) -> list[_RawImport]:
    collector = _Collector(module, is_package)
    collector.visit(ast.parse(source))
    return collector.found


def _known(name: str, modules: Iterable[str]) -> str | None:
    """The longest known module that ``name`` is or lies inside (``a.b.Class`` → ``a.b``)."""
    known = set(modules)
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        if candidate in known:
            return candidate
    return None


def resolve(raw: _RawImport, modules: Iterable[str]) -> list[str]:
    """The pulsetrace modules one import statement names."""
    if raw.module != "pulsetrace" and not raw.module.startswith("pulsetrace."):
        return []
    known = set(modules)
    if not raw.names:
        target = _known(raw.module, known)
        return [target] if target else []
    out = []
    for name in raw.names:
        target = f"{raw.module}.{name}" if f"{raw.module}.{name}" in known else _known(raw.module, known)
        if target and target not in out:
            out.append(target)
    return out


def collect_edges() -> tuple[dict[str, Path], list[Edge]]:
    modules = module_files()
    edges: list[Edge] = []
    for module, path in modules.items():
        rel = str(path.relative_to(ROOT))
        source = path.read_text(encoding="utf-8")
        for raw in imports_in(source, module, is_package=path.name == "__init__.py"):
            for target in resolve(raw, modules):
                if target != module:
                    edges.append(Edge(module, target, rel, raw.line, raw.kind))
    return modules, edges


def layer_key(module: str) -> str | None:
    """The :data:`LAYERS` entry that places ``module`` (longest prefix), or None."""
    if module == "pulsetrace":
        return "pulsetrace"
    matches = [key for key in LAYERS
               if key != "pulsetrace" and (module == key or module.startswith(key + "."))]
    return max(matches, key=len, default=None)


def cycles(nodes: Iterable[str], edges: Iterable[tuple[str, str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan), each sorted."""
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        if a != b:
            graph[a].add(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strongconnect(v: str) -> None:
        # Iterative: a deep import chain must not hit the recursion limit.
        work: list[tuple[str, Iterator[str]]] = [(v, iter(sorted(graph[v])))]
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        while work:
            node, children = work[-1]
            advanced = False
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    advanced = True
                    break
                if w in on_stack:
                    low[node] = min(low[node], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))

    for v in sorted(set(nodes) | set(graph)):
        if v not in index:
            strongconnect(v)
    return sorted(found)


def _describe_cycles(components: list[list[str]], edges: list[Edge],
                     unit: dict[str, str] | None = None) -> str:
    """Each cycle (a strongly connected component) with the import statements that make it."""
    lines = []
    for component in components:
        members = set(component)
        lines.append("cycle: " + " <-> ".join(component))

        def key(m: str) -> str:
            return unit[m] if unit is not None else m

        for e in sorted(edges, key=lambda e: (e.path, e.line)):
            a, b = key(e.source), key(e.target)
            if a != b and a in members and b in members:
                lines.append(f"    {e}")
    return "\n".join(lines)


# -- the collector itself ------------------------------------------------------------------------


def test_the_collector_sees_relative_lazy_type_checking_and_importlib_imports() -> None:
    source = (
        "from __future__ import annotations\n"
        "import importlib\n"
        "from typing import TYPE_CHECKING\n"
        "from . import sibling\n"
        "from ..store import LocalStore\n"
        "if TYPE_CHECKING:\n"
        "    from pulsetrace.config.schema import Config\n"
        "else:\n"
        "    import pulsetrace.forking\n"
        "def build() -> None:\n"
        "    from pulsetrace.runtime import start\n"
        "    importlib.import_module('pulsetrace.views.traces')\n"
    )
    found = imports_in(source, "pulsetrace.metrics.emf")
    modules = ["pulsetrace", "pulsetrace.metrics", "pulsetrace.metrics.sibling", "pulsetrace.store",
               "pulsetrace.config.schema", "pulsetrace.forking", "pulsetrace.runtime",
               "pulsetrace.views.traces"]
    got = [(target, raw.kind) for raw in found for target in resolve(raw, modules)]
    assert got == [
        ("pulsetrace.metrics.sibling", "top"),
        ("pulsetrace.store", "top"),
        ("pulsetrace.config.schema", "type"),
        ("pulsetrace.forking", "top"),
        ("pulsetrace.runtime", "lazy"),
        ("pulsetrace.views.traces", "lazy"),
    ]


def test_cycles_finds_every_strongly_connected_component() -> None:
    edges = [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("d", "e"), ("e", "d"), ("f", "a")]
    assert cycles("abcdef", edges) == [["a", "b", "c"], ["d", "e"]]
    assert cycles("abc", [("a", "b"), ("b", "c")]) == []


# -- the tree ------------------------------------------------------------------------------------


Graph = tuple[dict[str, Path], list[Edge]]


@pytest.fixture(scope="module")
def graph() -> Graph:
    modules, edges = collect_edges()
    assert len(modules) > 50 and "pulsetrace.runtime" in modules and "pulsetrace.healthchecks.base" in modules
    return modules, edges


def test_every_module_has_a_layer(graph: Graph) -> None:
    modules, _ = graph
    unplaced = sorted(m for m in modules if layer_key(m) is None)
    assert not unplaced, "modules with no layer in LAYERS:\n    " + "\n    ".join(unplaced)


def test_no_module_imports_a_higher_layer(graph: Graph) -> None:
    _, edges = graph
    upward = []
    for e in edges:
        src, dst = layer_key(e.source), layer_key(e.target)
        if src is not None and dst is not None and LAYERS[dst] > LAYERS[src]:
            upward.append(f"{e}  [layer {LAYERS[src]} {src} -> layer {LAYERS[dst]} {dst}]")
    assert not upward, f"{len(upward)} import(s) reach up a layer:\n" + "\n".join(sorted(upward))


def test_packages_of_one_layer_import_each_other_without_cycles(graph: Graph) -> None:
    modules, edges = graph
    unit = {m: layer_key(m) or m for m in modules}
    same_layer = [e for e in edges if unit[e.source] != unit[e.target]
                  and LAYERS.get(unit[e.source]) == LAYERS.get(unit[e.target])]
    found = cycles(set(unit.values()), [(unit[e.source], unit[e.target]) for e in same_layer])
    assert not found, "package cycles within a layer (type-only imports included):\n" + _describe_cycles(
        found, same_layer, unit)


def test_modules_import_each_other_without_cycles_outside_type_checking(graph: Graph) -> None:
    modules, edges = graph
    runtime = [e for e in edges if e.kind != "type"]
    found = cycles(modules, [(e.source, e.target) for e in runtime])
    assert not found, ("module import cycles (lazy imports included, TYPE_CHECKING ones left out):\n"
                       + _describe_cycles(found, runtime))
