"""The client's modules depend on each other one way (issue 11, item 4).

Every import counts: at the top, inside a function, or only for type checking. A circle
hidden behind a function-level import or `TYPE_CHECKING` is still a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import chubbypy.client

PACKAGE = "chubbypy.client"
ROOT = Path(chubbypy.client.__file__).parent


def module_of(name: str) -> str | None:
    """The client module that `name` (a module, or a name in one) belongs to."""
    if not name.startswith(f"{PACKAGE}."):
        return None
    module = ".".join(name.split(".")[:3])
    return module if (ROOT / f"{module.rpartition('.')[2]}.py").is_file() else None


def client_imports(path: Path) -> set[str]:
    """The client modules `path` imports, wherever the import statement stands."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(filter(None, (module_of(alias.name) for alias in node.names)))
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            found.update(filter(None, map(module_of, [node.module, *names])))
    return found


def graph() -> dict[str, set[str]]:
    """Each client module (not the package) and the client modules it imports."""
    return {
        f"{PACKAGE}.{path.stem}": client_imports(path) - {f"{PACKAGE}.{path.stem}"}
        for path in sorted(ROOT.glob("*.py"))
        if path.name != "__init__.py"
    }


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


def test_no_client_module_imports_another_that_imports_it_back() -> None:
    """Following imports from any client module never leads back to it."""
    assert circle(graph()) is None


def test_the_check_finds_a_circle_through_a_type_checking_import() -> None:
    """Two modules importing each other, one of them only for type checking, are a circle."""
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circle(edges) == ["a", "b", "c", "a"]


def test_the_core_modules_import_no_twisted_module_of_the_client() -> None:
    """The sans-IO core imports only other core modules of the client."""
    core = {f"{PACKAGE}.{name}" for name in ("_addresses", "_cache", "_calls", "_errors",
                                              "_session_core", "_state", "core")}  # fmt: skip
    edges = graph()
    assert {module: edges[module] - core for module in core} == {module: set() for module in core}
