"""chubbypy's modules depend on each other one way (issue 11, item 4): no import circles.

Every import counts: at the top, inside a function, or only for type checking. A circle
hidden behind a function-level import or `TYPE_CHECKING` is still a circle. A package's
`__init__` is a module of its own (importing `from chubbypy.paxos import X` depends on it).
"""

from __future__ import annotations

import ast
from pathlib import Path

import chubbypy

ROOT = Path(chubbypy.__file__).parent


def modules() -> dict[str, Path]:
    """Every module of chubbypy by its dotted name (a package by its own name)."""
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = ("chubbypy", *path.relative_to(ROOT).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The chubbypy modules `path` imports, wherever the import statement stands."""

    def module_of(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(filter(None, (module_of(alias.name) for alias in node.names)))
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.update(filter(None, [full if full in known else module_of(node.module)]))
    return found


def graph() -> dict[str, set[str]]:
    """Each chubbypy module and the chubbypy modules it imports."""
    known = modules()
    return {name: imports(path, known) - {name} for name, path in sorted(known.items())}


def circle(edges: dict[str, set[str]]) -> list[str] | None:
    """A chain of imports that comes back to its start, if there is one."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        for imported in sorted(edges.get(module, ())):
            found = visit(imported, [*path, module])
            if found:
                return found
        done.add(module)
        return None

    for start in sorted(edges):
        found = visit(start, [])
        if found:
            return found
    return None


def test_no_module_imports_another_that_imports_it_back() -> None:
    """Following imports from any chubbypy module never leads back to it."""
    assert circle(graph()) is None


def test_the_check_finds_a_circle_through_a_type_checking_import() -> None:
    """Two modules importing each other, one of them only for type checking, are a circle."""
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circle(edges) == ["a", "b", "c", "a"]


def test_the_graph_sees_imports_inside_functions_and_under_type_checking() -> None:
    """The client's Cell imports Lock (to build it) and its session module: both are edges."""
    edges = graph()
    assert {"chubbypy.client._lock", "chubbypy.client._session"} <= edges["chubbypy.client._cell"]


def test_the_client_core_imports_no_twisted_module_of_the_client() -> None:
    """The client's sans-IO core imports only other core modules of the client."""
    names = ("_addresses", "_cache", "_calls", "_errors", "_session_core", "_state", "core")
    core = {f"chubbypy.client.{name}" for name in names}
    edges = graph()
    client = {m for m in edges if m.startswith("chubbypy.client.")}
    assert {module: edges[module] & client - core for module in core} == {m: set() for m in core}
