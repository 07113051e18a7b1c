"""The package's import graph: no circles, and few floors (the longest chain of
imports below the wiring), so that each module can be read knowing only those under
it. The floors, from the bottom: leaves (units, inputs, windows, policy...), the
audit and the internals, config and controls, the store, counting, the context,
blocks and admission, the gates; `synapse_tchap_guard/module.py` wires them."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "synapse_tchap_guard"
MOST_FLOORS = 8
WIRING = f"{PACKAGE.name}.module"  # `TchapGuard`, above every floor


def imports() -> dict[str, set[str]]:
    """Each module's imports of the package's own modules (those made only for type
    checking left out: they are not run)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        checking_only = {
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for inner in ast.walk(node)
        }
        found = set()
        for node in ast.walk(tree):
            if id(node) in checking_only or not isinstance(node, ast.ImportFrom):
                continue
            if node.module is None or not node.module.startswith(PACKAGE.name):
                continue
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in modules else node.module)
        graph[name] = {
            m for m in found if m in modules and m not in (name, PACKAGE.name)
        }
    return graph


def test_no_module_imports_itself_through_others() -> None:
    graph = imports()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, "a circle: " + " -> ".join((*path, module))
        for imported in graph[module]:
            visit(imported, (*path, module))

    for module in graph:
        visit(module, ())


def test_the_modules_stand_on_at_most_eight_floors() -> None:
    graph = imports()

    @functools.cache
    def floor(module: str) -> int:
        return 1 + max((floor(m) for m in graph[module]), default=0)

    floors = {m: floor(m) for m in graph if m not in (PACKAGE.name, WIRING)}
    highest = max(floors.values())
    assert highest <= MOST_FLOORS, sorted(floors.items(), key=lambda kv: -kv[1])[:5]
    # The pure parts stand on nothing of the package but other pure parts.
    for pure in ("policy", "windows", "units", "counting.records"):
        assert floors[f"{PACKAGE.name}.{pure}"] <= 2, pure
