"""The import graph of the bench package has no cycle: every module can be read (and imported) without the one that
imports it, so a split by responsibility stays a split.

Every ``import`` statement counts, wherever it stands (module level, inside a function, under ``TYPE_CHECKING``):
a lazy import that closes a cycle still ties the two modules together. The package as installed maps ``bench/`` to
``bench``, ``methods/`` to ``bench.methods`` and ``datasets/`` to ``bench.datasets`` (pyproject.toml's package-dir).
An edge goes to the module an import names (``from bench.x import y`` names ``bench.x.y`` when that is a module,
else ``bench.x``); the implicit import of a parent package is not an edge (it would make every package's lazy
``__getattr__`` a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIRS = {"bench": ROOT / "bench", "bench.methods": ROOT / "methods", "bench.datasets": ROOT / "datasets"}


def modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the installed package."""
    out: dict[str, Path] = {}
    for pkg, folder in PACKAGE_DIRS.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if any(p in PACKAGE_DIRS for p in (".".join([pkg, *parts[:i]]) for i in range(1, len(parts)))):
                continue  # bench/methods would be bench.methods twice; the package-dir mapping wins
            name = ".".join([pkg, *parts])
            out.setdefault(name, path)
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that the file imports anywhere."""
    is_pkg = path.name == "__init__.py"
    here = name if is_pkg else name.rpartition(".")[0]  # the package relative imports start from
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = alias.name
                while target and target not in known:  # import bench.x.y: the longest known prefix
                    target = target.rpartition(".")[0]
                if target:
                    found.add(target)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")[: len(here.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if sub in known:
                    found.add(sub)
                elif source in known:
                    found.add(source)
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def find_cycle(g: dict[str, set[str]]) -> list[str]:
    """One cycle of ``g`` as [a, b, ..., a] (depth-first search, three colours); [] when there is none."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    stack: list[str] = []

    def visit(n: str) -> list[str]:
        state[n] = 1
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                cycle = visit(m)
                if cycle:
                    return cycle
        stack.pop()
        state[n] = 2
        return []

    for n in sorted(g):
        if n not in state:
            cycle = visit(n)
            if cycle:
                return cycle
    return []


def test_find_cycle_finds_a_cycle_and_only_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []  # a diamond is no cycle


def test_the_graph_sees_lazy_relative_and_type_checking_imports(tmp_path):
    pkg = tmp_path / "bench"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from bench.b import thing\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import c\n")
    (pkg / "c.py").write_text("import bench.a.missing_attribute\n")
    known = {"bench", "bench.a", "bench.b", "bench.c"}
    edges = {n: imports(n, pkg / (n.split(".")[-1] + ".py"), known) for n in ("bench.a", "bench.b", "bench.c")}
    assert edges == {"bench.a": {"bench.b"}, "bench.b": {"bench.c"}, "bench.c": {"bench.a"}}
    assert find_cycle(edges) == ["bench.a", "bench.b", "bench.c", "bench.a"]


def test_the_package_maps_methods_and_datasets_as_installed():
    mods = modules()
    assert mods["bench.methods"] == ROOT / "methods" / "__init__.py"
    assert mods["bench.datasets.evalsets"] == ROOT / "datasets" / "evalsets.py"
    assert "bench.run.runner" in mods and "bench.commands.report" in mods


def test_bench_import_graph_has_no_cycle():
    cycle = find_cycle(graph())
    assert not cycle, "import cycle: " + " -> ".join(cycle)


#: the wings and what each may not import: the engine does not know who reads its runs, the reports never run a
#: model or train, the template knows no method file, and nothing below the commands imports a command
FORBIDDEN = {
    "bench.run": ("bench.report", "bench.own", "bench.commands", "bench.gallery", "bench.dadc"),
    "bench.report": ("bench.own", "bench.commands", "bench.gallery", "bench.dadc", "bench.run.runner",
                     "bench.run.executors", "bench.run.worker"),
    "bench.own": ("bench.commands", "bench.gallery", "bench.dadc"),
    "bench.methods.core": ("bench.run", "bench.report", "bench.own", "bench.commands"),
    "bench.datasets": ("bench.run", "bench.report", "bench.own", "bench.commands"),
}


def _inside(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_wings_import_only_downward():
    g = graph()
    mods = modules()
    method_files = {n for n in mods if _inside(n, "bench.methods") and not _inside(n, "bench.methods.core")
                    and n != "bench.methods"}
    bad = []
    for name, targets in sorted(g.items()):
        for wing, banned in FORBIDDEN.items():
            if _inside(name, wing):
                bad += [f"{name} -> {t}" for t in sorted(targets) if any(_inside(t, b) for b in banned)]
        if _inside(name, "bench.methods.core"):
            bad += [f"{name} -> {t}" for t in sorted(targets & method_files)]
    assert not bad, "imports against the layering: " + "; ".join(bad)


def test_the_layering_check_sees_a_forbidden_import():
    g = {"bench.run.store": {"bench.report.tables"}, "bench.report.tables": {"bench.run.store"}}
    assert any(_inside(t, b) for t in g["bench.run.store"] for b in FORBIDDEN["bench.run"])
    assert not any(_inside(t, b) for t in g["bench.report.tables"] for b in FORBIDDEN["bench.report"])
