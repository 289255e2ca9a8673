# tests/registry/test_layout.py - the shape of netstore/registry/: one module
# per record, imports pointing one way (no cycle, no import inside a function
# to dodge one), each module small and opening with what it holds.
"""Layout of the registry package."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import netstore.registry

PACKAGE = Path(netstore.registry.__file__).parent
PREFIX = "netstore.registry."
MAX_LINES = 600


def _modules() -> dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.glob("*.py"))
            if p.stem != "__init__"}


def _registry_imports(node: ast.AST) -> set[str]:
    """The netstore.registry modules `node` (and everything in it) imports."""
    out: set[str] = set()
    for n in ast.walk(node):
        if isinstance(n, ast.ImportFrom) and n.module:
            if n.module.startswith(PREFIX):
                out.add(n.module.removeprefix(PREFIX))
            elif n.module == "netstore.registry":
                out.update(a.name for a in n.names)
        elif isinstance(n, ast.Import):
            out.update(a.name.removeprefix(PREFIX) for a in n.names if a.name.startswith(PREFIX))
    return out


def test_no_import_cycle_between_registry_modules() -> None:
    mods = _modules()
    graph = {name: _registry_imports(tree) & mods.keys() for name, tree in mods.items()}
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as e:  # pragma: no cover - the failure message
        raise AssertionError(f"import cycle in netstore.registry: {e.args[1]}") from None
    assert order.index("db") < order.index("media") < order.index("layers") \
        < order.index("machines") < order.index("store")
    # only lookup.py (the look-ups others make) stands on the whole Registry
    assert "store" not in set().union(*(graph[m] for m in graph if m not in ("store", "lookup")))


def test_no_import_inside_a_function() -> None:
    for name, tree in _modules().items():
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                inner = [n for n in ast.walk(fn) if isinstance(n, ast.Import | ast.ImportFrom)]
                assert not inner, f"{name}.py: {fn.name} imports inside itself (line {fn.lineno})"


def test_each_module_is_small_and_opens_with_what_it_holds() -> None:
    for p in sorted(PACKAGE.glob("*.py")):
        text = p.read_text()
        assert len(text.splitlines()) < MAX_LINES, f"{p.name} has {len(text.splitlines())} lines"
        assert text.startswith("# "), f"{p.name} does not open with a comment"
        assert ast.get_docstring(ast.parse(text)), f"{p.name} has no module docstring"
