"""BlockingCell: each call runs on the reactor thread and returns its result or raises."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed

from chubbypy.client import blocking
from chubbypy.client.blocking import BlockingCell, connect
from chubbypy.protocol.errors import NoSuchNode
from chubbypy.protocol.namespace import AclNames, Exists

REPOSITORY = Path(__file__).resolve().parents[3]


class InlineReactor:
    """callFromThread runs the call at once: enough for operations that finish at once."""

    def __init__(self) -> None:
        self.calls = 0

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kw: Any) -> None:
        self.calls += 1
        f(*args, **kw)


class RecordingCell:
    """Stands in for a Cell: records each call and answers with an already-fired Deferred."""

    cell = "test"

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Callable[..., Deferred[Any]]:
        def operation(*args: Any, **kw: Any) -> Deferred[Any]:
            self.calls.append((name, args, kw))
            if args and args[0] == "/missing":
                return fail(NoSuchNode("/missing: no such node"))
            return succeed(f"{name} result")

        return operation


@pytest.fixture
def recorded() -> tuple[BlockingCell, RecordingCell, InlineReactor]:
    cell, reactor = RecordingCell(), InlineReactor()
    return BlockingCell(cell, reactor), cell, reactor  # type: ignore[arg-type]


def test_every_method_forwards_to_the_cell_through_the_reactor_thread(
    recorded: tuple[BlockingCell, RecordingCell, InlineReactor],
) -> None:
    """Each method calls the same-named Cell method via callFromThread and returns its result."""
    client, cell, reactor = recorded
    acl = AclNames("a", "b", "c")
    assert client.get_stat("/p") == "get_stat result"
    client.get_contents_and_stat("/p")
    client.read_dir("/p", "a", 5)
    client.list_dir("/p")
    client.create("/p", b"x", directory=False, acl=acl, ephemeral=True)
    client.set_contents("/p", b"y", 3)
    client.delete("/p", 9)
    client.set_acl("/p", acl, 2)
    client.multi_op([Exists("/p")], [], [])
    client.locate_master()
    client.status("r1")
    assert [name for name, _, _ in cell.calls] == [
        "get_stat", "get_contents_and_stat", "read_dir", "list_dir", "create", "set_contents",
        "delete", "set_acl", "multi_op", "locate_master", "status",
    ]  # fmt: skip
    assert cell.calls[4] == (
        "create",
        ("/p", b"x"),
        {"directory": False, "acl": acl, "ephemeral": True},
    )
    assert reactor.calls == len(cell.calls)
    assert client.cell == "test"


def test_a_failed_operation_raises_its_exception(
    recorded: tuple[BlockingCell, RecordingCell, InlineReactor],
) -> None:
    """An operation whose Deferred fails raises the same exception in the caller."""
    client, _, _ = recorded
    with pytest.raises(NoSuchNode, match="/missing"):
        client.get_stat("/missing")


def test_the_context_manager_closes_the_cell(
    recorded: tuple[BlockingCell, RecordingCell, InlineReactor],
) -> None:
    """Leaving the with block closes the client, even on an exception."""
    client, cell, _ = recorded
    with pytest.raises(RuntimeError, match="boom"), client:
        raise RuntimeError("boom")
    assert cell.calls[-1][0] == "close"


def test_calls_from_the_reactor_thread_are_refused(
    recorded: tuple[BlockingCell, RecordingCell, InlineReactor], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Waiting on the reactor from its own thread would hang: RuntimeError instead."""
    client, cell, _ = recorded
    monkeypatch.setattr(blocking, "_in_reactor_thread", lambda: True)
    with pytest.raises(RuntimeError, match="reactor thread"):
        client.get_stat("/p")
    assert cell.calls == []


def test_connect_needs_a_cell_name_with_addresses() -> None:
    """connect() with addresses and no cell name is refused before any reactor starts."""
    with pytest.raises(ValueError, match="name the cell"):
        connect("127.0.0.1:7201,127.0.0.1:7202")


def test_connect_refuses_a_name_that_contradicts_the_configuration() -> None:
    """A cell name other than the configuration's is refused."""
    with pytest.raises(ValueError, match="configuration is of cell 'local', not 'prod'"):
        connect(str(REPOSITORY / "etc" / "cell.yaml"), cell="prod")


def test_importing_the_clients_and_the_cli_starts_no_reactor() -> None:
    """Only making a BlockingCell touches the global reactor; imports install none."""
    code = (
        "import sys, chubbypy.client, chubbypy.client.blocking, chubbypy.cli; "
        "assert 'twisted.internet.reactor' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPOSITORY)


def test_library_modules_never_import_the_global_reactor() -> None:
    """Below cli.py only blocking.py imports twisted.internet.reactor (STYLE §4)."""
    package = REPOSITORY / "chubbypy" / "client"
    offenders = [
        path.name
        for path in sorted(package.glob("*.py"))
        if path.name != "blocking.py" and "internet import reactor" in path.read_text()
    ]
    assert offenders == []
