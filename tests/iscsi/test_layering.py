# The import graph of netstore.iscsi: no cycle among its modules (TYPE_CHECKING
# imports included), and the pure core never imports the socket shell.
"""Layering of the iSCSI package, read from the sources (no import side effects)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "netstore" / "iscsi"


def imports() -> dict[str, set[str]]:
    """module -> the netstore.iscsi modules it imports, anywhere in its source."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.glob("*.py"):
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module.startswith("netstore.iscsi."):
                    deps.add(node.module.rsplit(".", 1)[1])
                elif node.module == "netstore.iscsi":
                    deps.update(a.name for a in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name.rsplit(".", 1)[1] for a in node.names
                            if a.name.startswith("netstore.iscsi."))
        graph[path.stem] = deps
    return graph


def test_no_import_cycle_among_iscsi_modules() -> None:
    graph = imports()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path, module, dep]))
            if dep not in state:
                visit(dep, [*path, module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_the_core_does_not_import_the_shell() -> None:
    graph = imports()
    assert all("server" not in deps for name, deps in graph.items() if name != "server")
