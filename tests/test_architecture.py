"""The house rules: the import-linter layer contract holds and no package has an import cycle.

Lazy imports inside functions count (grimp reads every import statement of a module).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("attnlens", cache_dir=None)


def test_import_linter_contracts_are_kept():
    # A subprocess: import-linter reconfigures logging, which would silence other tests' caplog.
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command;"
         " sys.exit(lint_imports_command())", "--config", str(ROOT / "pyproject.toml"),
         "--no-cache"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    g = nx.DiGraph()
    g.add_nodes_from(modules)
    for m in modules:
        for target in graph.find_modules_directly_imported_by(m):
            if target in modules and target != m:
                g.add_edge(m, target)
    return [sorted(c) for c in nx.strongly_connected_components(g) if len(c) > 1]


def _packages(graph: grimp.ImportGraph) -> list[str]:
    return sorted(m for m in graph.modules if graph.find_children(m))


def test_no_import_cycle_between_modules_of_a_package(graph):
    """Inside each package, the modules (the package's __init__ excluded) form a DAG."""
    found = {}
    for pkg in _packages(graph):
        members = {m for m in graph.find_children(pkg)}
        cycles = _cycles(graph, members)
        if cycles:
            found[pkg] = cycles
    assert not found, f"import cycles inside packages: {found}"


def test_no_import_cycle_between_subpackages(graph):
    """The top-level modules and packages of attnlens, each collapsed to one node, form a DAG."""
    top = sorted(graph.find_children("attnlens"))
    g = nx.DiGraph()
    g.add_nodes_from(top)
    for a in top:
        for b in top:
            if a != b and graph.direct_import_exists(
                importer=a, imported=b, as_packages=True
            ):
                g.add_edge(a, b)
    cycles = [sorted(c) for c in nx.strongly_connected_components(g) if len(c) > 1]
    assert not cycles, f"import cycles between attnlens packages: {cycles}"


def test_the_cycle_check_finds_a_planted_cycle():
    """The checker reports a planted lazy-import cycle (so a green result means something)."""
    g = grimp.ImportGraph()
    for importer, imported in [("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")]:
        g.add_import(importer=importer, imported=imported)
    assert _cycles(g, {"p.a", "p.b", "p.c", "p.d"}) == [["p.a", "p.b", "p.c"]]


def _layout_block() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Layout", 1)[1]
    return section.split("```", 2)[1]


def test_readme_layout_matches_the_tree():
    """Every module and package of src/attnlens is in the README's Layout, and nothing else."""
    layers = {}
    for line in _layout_block().splitlines():
        words = line.split()
        if words and words[0] in ("base", "pillars", "application", "cli/"):
            layers[words[0]] = {w for w in words[1:] if w.endswith(("/", ".py"))}
    src = ROOT / "src" / "attnlens"
    on_disk = {p.name + ("/" if p.is_dir() else "") for p in src.iterdir()
               if not p.name.startswith("__") and (p.is_dir() or p.suffix == ".py")}
    listed = layers["base"] | layers["pillars"] | layers["application"] | {"cli/"}
    assert on_disk == listed
    assert {p.name for p in (src / "cli").glob("*.py")} == layers["cli/"]
