"""The pure core imports nothing that does I/O, keeps time or draws random numbers.

STYLE §1: `protocol`, `paxos`, `namespace`, `locks`, `sessions`, `master` and `node` never
import twisted, sqlalchemy, yaml, time, random, socket or threading, nor any shell package,
directly or through another chubbypy module. Neither do the client library's sans-IO core
modules (`CORE_MODULES`), although their package, `client`, is a shell: they may import
each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import chubbypy

CORE = ("protocol", "paxos", "namespace", "locks", "sessions", "master", "node")
FORBIDDEN = frozenset(
    {
        "twisted", "sqlalchemy", "yaml", "time", "random", "socket", "threading",
        "asyncio", "datetime", "os", "subprocess", "selectors", "select", "multiprocessing",
        "concurrent", "uuid", "secrets",
    }
)  # fmt: skip
SHELLS = ("store", "server", "client", "web", "testing", "cli", "config")
CORE_MODULES = tuple(
    f"client/{name}.py"
    for name in ("_addresses", "_cache", "_calls", "_errors", "_session_core", "_state", "core")
)
"""Pure modules inside a shell package: the client's core, which the simulator drives."""


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module `path` imports (relative imports are banned by ruff)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _module_file(root: Path, name: str) -> Path | None:
    relative = Path(*name.split(".")[1:])
    for candidate in (root / relative / "__init__.py", root / f"{relative}.py"):
        if candidate.is_file():
            return candidate
    return None


def layering_violations(
    root: Path, package: str, core: tuple[str, ...], modules: tuple[str, ...] = ()
) -> list[str]:
    """Every forbidden import reachable from the core packages under `root` (named `package`)
    and from the pure `modules` (paths under `root`) of shell packages."""
    problems = []
    pending = [p for name in core if (root / name).is_dir() for p in (root / name).rglob("*.py")]
    pure = {root / module for module in modules}
    pending += sorted(pure)
    seen: set[Path] = set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in sorted(imported_modules(path)):
            top = name.split(".")[0]
            if top in FORBIDDEN:
                problems.append(f"{path.relative_to(root)} imports {name}")
            elif top == package:
                parts = name.split(".")
                target = _module_file(root, name)
                if target in pure or _module_file(root, name.rpartition(".")[0]) in pure:
                    pending.extend([target] if target is not None else [])  # or a name in one
                elif len(parts) > 1 and parts[1] in SHELLS:
                    shell = f"{package}.{parts[1]}"
                    problems.append(f"{path.relative_to(root)} imports the shell module {shell}")
                elif target is not None:
                    pending.append(target)
    return sorted(set(problems))


def test_core_packages_import_nothing_forbidden() -> None:
    """No module reachable from the core imports I/O, clocks, randomness or a shell."""
    root = Path(chubbypy.__file__).parent
    assert layering_violations(root, "chubbypy", CORE, CORE_MODULES) == []


def test_the_client_core_modules_exist() -> None:
    """The list of pure client modules names real files (a rename would skip the check)."""
    root = Path(chubbypy.__file__).parent
    assert all((root / module).is_file() for module in CORE_MODULES)


def test_the_check_catches_a_forbidden_import(tmp_path: Path) -> None:
    """A core module that imports `time`, even through a helper, is reported."""
    package = tmp_path / "pkg"
    (package / "paxos").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "paxos" / "__init__.py").write_text("from pkg.paxos.helper import x\n")
    (package / "paxos" / "helper.py").write_text("import time\nx = time.monotonic\n")
    assert layering_violations(package, "pkg", ("paxos",)) == ["paxos/helper.py imports time"]


def test_the_check_catches_a_shell_import(tmp_path: Path) -> None:
    """A core module that imports a shell package (here the store) is reported."""
    package = tmp_path / "pkg"
    (package / "protocol").mkdir(parents=True)
    (package / "protocol" / "codec.py").write_text("from pkg.store import SqlStore\n")
    assert layering_violations(package, "pkg", ("protocol",)) == [
        "protocol/codec.py imports the shell module pkg.store"
    ]


def test_the_check_follows_pure_modules_of_a_shell_package(tmp_path: Path) -> None:
    """A pure client module may import another listed one, but not an unlisted shell module
    or `time`, even through the listed one."""
    package = tmp_path / "pkg"
    (package / "client").mkdir(parents=True)
    (package / "client" / "core.py").write_text(
        "from pkg.client._state import State\nfrom pkg.client._shell import Cell\n"
    )
    (package / "client" / "_state.py").write_text("import time\nState = 1\n")
    (package / "client" / "_shell.py").write_text("Cell = 1\n")
    modules = ("client/core.py", "client/_state.py")
    assert layering_violations(package, "pkg", (), modules) == [
        "client/_state.py imports time",
        "client/core.py imports the shell module pkg.client",
    ]
