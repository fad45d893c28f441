"""A synchronous client: `Cell`'s operations as blocking calls, for scripts and the CLI.

Shell (STYLE §1, §4). `BlockingCell` runs a `chubbypy.client.Cell` on Twisted's global reactor,
which runs in a background daemon thread that the first `connect` starts (once per process,
without signal handlers, so Ctrl-C still reaches the main thread). Each call hands the
operation to the reactor thread and waits for its result, re-raising its exception. Every
operation has the cell client's deadline (`timeout_seconds`), so no call blocks longer.

This module and `chubbypy.cli` are the only places that touch the global reactor, and only
when a client is made: importing this module installs no reactor. Code that already runs a
reactor should use `chubbypy.client.Cell` directly; calling a `BlockingCell` from the reactor
thread would wait on itself, and raises `RuntimeError` instead.

    with connect("127.0.0.1:7201,127.0.0.1:7202", cell="local") as cell:
        cell.create("/ls/local/greeting", b"hello")
        print(cell.get_contents_and_stat("/ls/local/greeting").contents)
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.threads import blockingCallFromThread
from twisted.python.threadable import isInIOThread

from chubbypy.client._cell import Cell, ReplicaReport
from chubbypy.protocol.client import MasterLocation
from chubbypy.protocol.namespace import (
    AclNames,
    Contents,
    DirEntry,
    Listing,
    MultiResult,
    SimpleWrite,
    Stat,
    Test,
)

if TYPE_CHECKING:
    from chubbypy.config import CellConfig

__all__ = ["BlockingCell", "connect"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

# Twisted leaves isInIOThread unannotated, and blockingCallFromThread's annotation does not
# fit a function that returns a Deferred (mypy infers Never); their documented behaviour:
_blocking_call = cast(Callable[..., Any], blockingCallFromThread)
_in_reactor_thread = cast(Callable[[], bool], isInIOThread)

_starting = threading.Lock()
_reactor_thread: threading.Thread | None = None


def running_reactor() -> IReactorFromThreads:
    """The global reactor, running: started in a daemon thread unless something runs it."""
    global _reactor_thread
    from twisted.internet import reactor as installed  # not at import: no reactor until needed

    reactor: Any = installed
    with _starting:
        if _reactor_thread is None and not reactor.running:
            _reactor_thread = threading.Thread(
                target=reactor.run,
                kwargs={"installSignalHandlers": False},
                name="chubbypy-reactor",
                daemon=True,
            )
            _reactor_thread.start()
    return cast(IReactorFromThreads, reactor)


class BlockingCell:
    """`Cell`'s operations as blocking calls; see the module docstring.

    Wraps `cell`, whose reactor `reactor` runs in another thread. `connect` makes one with
    the global reactor. Usable as a context manager, which closes it on exit.
    """

    def __init__(self, cell: Cell, reactor: IReactorFromThreads) -> None:
        self._cell = cell
        self._reactor = reactor

    @property
    def cell(self) -> str:
        """The cell's name: the <cell> of /ls/<cell>/..."""
        return self._cell.cell

    def __enter__(self) -> BlockingCell:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def get_contents_and_stat(self, path: str) -> Contents:
        """A file's whole contents and metadata; see `Cell.get_contents_and_stat`."""
        return self._call(self._cell.get_contents_and_stat, path)

    def get_stat(self, path: str) -> Stat:
        """A node's metadata; see `Cell.get_stat`."""
        return self._call(self._cell.get_stat, path)

    def read_dir(self, path: str, after: str = "", limit: int = 1000) -> Listing:
        """One page of a directory's children; see `Cell.read_dir`."""
        return self._call(self._cell.read_dir, path, after, limit)

    def list_dir(self, path: str) -> tuple[DirEntry, ...]:
        """Every child of a directory, in name order; see `Cell.list_dir`."""
        return self._call(self._cell.list_dir, path)

    def create(
        self,
        path: str,
        contents: bytes = b"",
        *,
        directory: bool = False,
        acl: AclNames | None = None,
        ephemeral: bool = False,
    ) -> Stat:
        """Create a file or directory; see `Cell.create`."""
        return self._call(
            self._cell.create, path, contents, directory=directory, acl=acl, ephemeral=ephemeral
        )

    def set_contents(
        self, path: str, contents: bytes, expected_generation: int | None = None
    ) -> Stat:
        """Replace a file's contents, optionally compare-and-swap; see `Cell.set_contents`."""
        return self._call(self._cell.set_contents, path, contents, expected_generation)

    def delete(self, path: str, expected_instance: int | None = None) -> None:
        """Delete a file or an empty directory; see `Cell.delete`."""
        self._call(self._cell.delete, path, expected_instance)

    def set_acl(self, path: str, acl: AclNames, expected_generation: int | None = None) -> Stat:
        """Replace a node's ACL names; see `Cell.set_acl`."""
        return self._call(self._cell.set_acl, path, acl, expected_generation)

    def multi_op(
        self,
        guard: Sequence[Test],
        if_true: Sequence[SimpleWrite],
        if_false: Sequence[SimpleWrite] = (),
    ) -> MultiResult:
        """Atomically apply one branch or the other; see `Cell.multi_op`."""
        return self._call(self._cell.multi_op, guard, if_true, if_false)

    def locate_master(self) -> MasterLocation:
        """Where the master is; see `Cell.locate_master`."""
        return self._call(self._cell.locate_master)

    def status(self, replica: str | None = None) -> tuple[ReplicaReport, ...]:
        """Each replica's own status, or why it could not be asked; see `Cell.status`."""
        return self._call(self._cell.status, replica)

    def close(self) -> None:
        """Cancel operations in progress and close every connection; see `Cell.close`."""
        self._call(self._cell.close)

    def _call(self, operation: Callable[_P, Deferred[_T]], *args: _P.args, **kw: _P.kwargs) -> _T:
        if _in_reactor_thread():
            raise RuntimeError(
                "a BlockingCell cannot be used from the reactor thread: use chubbypy.client.Cell"
            )
        return cast(_T, _blocking_call(self._reactor, operation, *args, **kw))


def connect(
    addresses_or_config: str | Sequence[str] | CellConfig,
    cell: str | None = None,
    **options: Any,
) -> BlockingCell:
    """A `BlockingCell` on the global reactor (started in a daemon thread if need be).

    `addresses_or_config` is a `CellConfig`, a list of replica addresses, or a string: the
    path of a cell's YAML file, or comma-separated addresses. With addresses, `cell` names
    the cell (required); with a configuration it must be None or match. `options` are
    `Cell`'s keyword arguments (`timeout_seconds`, `request_timeout_seconds`, ...).
    """
    config: CellConfig | None = None
    addresses: Sequence[str] = ()
    if isinstance(addresses_or_config, str):
        if os.path.isfile(addresses_or_config):
            from chubbypy.config import load_config  # YAML and SQLAlchemy only when needed

            config = load_config(addresses_or_config)
        else:
            addresses = [a for a in addresses_or_config.split(",") if a.strip()]
    elif isinstance(addresses_or_config, Sequence):
        addresses = addresses_or_config
    else:
        config = addresses_or_config
    if config is not None and cell is not None and cell != config.cell:
        raise ValueError(f"the configuration is of cell {config.cell!r}, not {cell!r}")
    if config is None and cell is None:
        raise ValueError("name the cell: connect(addresses, cell=...)")
    reactor = running_reactor()
    clock = cast(IReactorTime, reactor)
    if config is not None:
        made: Cell = _blocking_call(reactor, Cell.from_config, clock, config, **options)
    else:
        made = _blocking_call(reactor, Cell, clock, addresses, cell, **options)
    return BlockingCell(made, reactor)
