"""The project's modules import one another without a cycle.

Every ``.py`` file under ``algorithms/``, ``workers/`` and ``service/`` is parsed (not imported)
and each of its imports of a project module is an edge of the module graph: at the top of the
file, inside a function or a class, or under ``if TYPE_CHECKING:`` (a cycle that is only dodged at
run time is still a cycle of the layering).  ``from x import y`` is an edge to ``x.y`` when that is
a module file, else to ``x``; a package's ``__init__`` is the module of the package's name.
Importing a submodule also runs its parent packages' ``__init__``, but that is no edge here: a
submodule that imports a name of its own package is only in a cycle if that ``__init__`` imports
the submodule back, which the explicit edges show.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("algorithms", "workers", "service")

#: ``(importer, imported)`` edges left out of the check: known cycles someone is fixing.  Each
#: entry needs a TODO naming the cycle; ``test_known_cycle_edges_still_exist`` fails once it is gone.
KNOWN_CYCLE_EDGES: frozenset[tuple[str, str]] = frozenset()

#: module -> imported module -> line numbers of the imports
Graph = dict[str, dict[str, list[int]]]


def project_modules(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file of every ``.py`` file under the packages."""
    out: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _known_prefix(name: str, modules: Mapping[str, Path]) -> str | None:
    """``name`` or its longest prefix that is a module (``a.b.attr`` -> ``a.b``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imported_names(node: ast.Import | ast.ImportFrom, module: str, is_package: bool,
                    modules: Mapping[str, Path]) -> list[str]:
    """The dotted names an import statement of ``module`` brings in (``from x import y``: ``x.y``
    where that is a module, else ``x``; relative imports resolved)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module if is_package else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            base = base.rpartition(".")[0]
        source = f"{base}.{node.module}" if node.module else base
    else:
        source = node.module or ""
    return [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]


def import_graph(modules: Mapping[str, Path], packages: Iterable[str] = PACKAGES) -> Graph:
    """Each module's imports of project modules, wherever in the file they are."""
    tops = set(packages)
    graph: Graph = {name: {} for name in modules}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for name in _imported_names(node, module, path.name == "__init__.py", modules):
                target = _known_prefix(name, modules) if name.split(".")[0] in tops else None
                if target is not None and target != module:
                    graph[module].setdefault(target, []).append(node.lineno)
    return graph


def strongly_connected(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph.get(succ, ())))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        out.append(sorted(component))
    return out


def describe_cycle(graph: Graph, component: list[str]) -> str:
    """One cycle through the component's first module, with the import lines, and its members."""
    members = set(component)
    start = component[0]
    paths = {start: [start]}
    frontier = [start]
    while frontier:  # breadth first: the shortest way back to ``start``
        node = frontier.pop(0)
        for succ in sorted(graph[node]):
            if succ == start:
                path = [*paths[node], start]
                steps = " -> ".join(f"{a} (line {', '.join(map(str, graph[a][b]))})" for a, b in pairwise(path))
                return f"{steps} -> {start}; all modules of the cycle: {', '.join(component)}"
            if succ in members and succ not in paths:
                paths[succ] = [*paths[node], succ]
                frontier.append(succ)
    raise AssertionError(f"{component} is not a cycle")


def _without(graph: Graph, edges: Iterable[tuple[str, str]]) -> Graph:
    out = {module: dict(targets) for module, targets in graph.items()}
    for importer, imported in edges:
        out.get(importer, {}).pop(imported, None)
    return out


def test_project_modules_import_each_other_without_a_cycle():
    modules = project_modules(ROOT)
    assert len(modules) > 50 and "workers.envs.mujoco" in modules and "service" in modules
    graph = import_graph(modules)
    # the parser sees the imports this test is about
    assert "workers.envs.mujoco_vector" in graph["workers.envs.mujoco"]
    assert "workers.envs.metaworld_vector" in graph["workers.envs.metaworld"]
    checked = _without(graph, KNOWN_CYCLE_EDGES)
    cycles = [describe_cycle(checked, c) for c in strongly_connected(checked)]
    assert not cycles, "import cycles between project modules:\n" + "\n".join(f"- {c}" for c in cycles)


def test_known_cycle_edges_still_exist():
    graph = import_graph(project_modules(ROOT))
    component = {m: i for i, c in enumerate(strongly_connected(graph)) for m in c}
    stale = sorted((a, b) for a, b in KNOWN_CYCLE_EDGES
                   if b not in graph.get(a, {}) or a not in component or component.get(b) != component[a])
    assert not stale, f"no longer in a cycle: remove {stale} from KNOWN_CYCLE_EDGES"


def test_the_graph_finds_function_level_relative_and_type_checking_cycles(tmp_path):
    files = {
        "pkg/__init__.py": "from pkg.light import NAME\n",
        "pkg/light.py": "NAME = 1\n",
        "pkg/family.py": "from pkg import light\n\ndef make():\n    from .vector import Vec\n    return Vec\n",
        "pkg/vector.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.family import make\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/a.py": "import pkg.sub.b\n",
        "pkg/sub/b.py": "from .. import family\nfrom ..sub import a\nimport os\n",
        "pkg/ok.py": "from pkg import NAME\nimport other.thing\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    modules = project_modules(tmp_path, ("pkg",))
    graph = import_graph(modules, ("pkg",))
    assert graph["pkg.sub.b"] == {"pkg.family": [1], "pkg.sub.a": [2]}
    assert graph["pkg.ok"] == {"pkg": [1]} and graph["pkg"] == {"pkg.light": [1]}
    assert strongly_connected(graph) == [["pkg.family", "pkg.vector"], ["pkg.sub.a", "pkg.sub.b"]]
    message = describe_cycle(graph, ["pkg.family", "pkg.vector"])
    assert message.startswith("pkg.family (line 4) -> pkg.vector (line 3) -> pkg.family")
    assert strongly_connected(_without(graph, [("pkg.vector", "pkg.family"), ("pkg.sub.b", "pkg.sub.a")])) == []
