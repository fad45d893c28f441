"""An asyncio client: `Cell`'s operations as coroutines, on the program's own event loop.

Shell (STYLE §1, §6). `connect` (called in a coroutine) makes an `AsyncCell`: a Twisted `Cell`
driven by a Twisted reactor object built on the running asyncio loop, so the client core,
its timers and its connections all run on the loop's thread, with no background thread.
Each call starts the core's Deferred and awaits it as an asyncio future; cancelling the
awaiting task cancels the Deferred (and with it the operation). Callbacks (`on_state`,
`on_event`, `on_lost`, `on_elected`, ...) run on the loop's thread too.

The reactor object is not installed as Twisted's global reactor, so importing or using this
module never installs one. A program that already runs Twisted's asyncio reactor on this
loop (``asyncioreactor.install``, then ``reactor.run()``) shares that reactor instead.

    async with aio.connect("127.0.0.1:7201,127.0.0.1:7202", cell="local") as cell:
        await cell.create("/ls/local/greeting", b"hello")
        async with cell.lock("/ls/local/job", timeout=30) as held:
            await do_the_job(fenced_by=held.sequencer)

The wrappers keep the core's names and meanings: `AsyncCell` (`Cell`), `AsyncHandle`
(`Handle`), `AsyncLock` and `AsyncHeld` (`Lock`, `Held`), `AsyncElection` (`Election`) and
`AsyncStream` (`EventStream`). Each one's `twisted` property is the object it wraps.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from twisted.internet.asyncioreactor import AsyncioSelectorReactor
from twisted.internet.defer import Deferred
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import IReactorFDSet, IResolverSimple
from twisted.logger import Logger
from zope.interface import implementer

from chubbypy.client._cell import Cell
from chubbypy.client._election import Election, Leadership
from chubbypy.client._errors import LockLost
from chubbypy.client._lock import Held, Lock
from chubbypy.client._plain_cell import PAGE_ENTRIES, ReplicaReport
from chubbypy.client._session import Handle
from chubbypy.client._snapshot import CellSnapshot
from chubbypy.client._state import SessionState
from chubbypy.client._streams import EventStream
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
from chubbypy.protocol.session import EventMask, HandleMode, SessionEvent

if TYPE_CHECKING:
    from chubbypy.config import CellConfig
    from chubbypy.protocol.session import (
        LockInfo,
        MemberList,
        MembershipDone,
        MembershipStep,
        SessionEnding,
        SessionInfo,
    )

__all__ = [
    "AsyncCell",
    "AsyncElection",
    "AsyncHandle",
    "AsyncHeld",
    "AsyncLock",
    "AsyncStream",
    "connect",
]

_T = TypeVar("_T")


def _future(deferred: Deferred[_T], loop: asyncio.AbstractEventLoop) -> asyncio.Future[_T]:
    """`deferred` as a future of `loop`. Cancelling the future cancels the Deferred; the
    Deferred's result is consumed, so a failure after a cancellation is not logged as
    unhandled (Twisted's `Deferred.asFuture`)."""
    return deferred.asFuture(loop)


async def _taken(
    deferred: Deferred[_T],
    loop: asyncio.AbstractEventLoop,
    let_go: Callable[[_T], Deferred[Any]],
) -> _T:
    """What `deferred` gives: something to let go of later (a lock held, a handle open).

    A task cancelled just after `deferred` succeeded never sees the result, and nobody
    would let it go before the session ends: `let_go` does so at once then.
    """
    taking = _future(deferred, loop)
    try:
        return await taking
    except asyncio.CancelledError:
        if taking.done() and not taking.cancelled() and taking.exception() is None:
            let_go(taking.result()).addErrback(lambda _: None)  # else it ends with the session
        raise


# ----------------------------------------------------------------------------- the reactor


@implementer(IResolverSimple)
class _LoopResolver:
    """Resolves host names with the event loop's ``getaddrinfo`` (in its executor).

    Twisted's default resolver runs in the reactor's thread pool, which starts only when
    the reactor is run; a reactor built on a loop that asyncio runs is never run, so a
    replica named by host name would never be reached without this.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def getHostByName(self, name: str, timeout: Sequence[int] = ()) -> Deferred[str]:
        """The first IPv4 address of `name` (`DNSLookupError` if it has none), as Twisted's
        TCP client expects. `timeout` is not used: each connection attempt of the cell
        client has its own deadline, which cancels a lookup that takes too long."""
        return Deferred.fromFuture(self._loop.create_task(self._resolve(name)))

    async def _resolve(self, name: str) -> str:
        try:
            found = await self._loop.getaddrinfo(
                name, None, family=socket.AF_INET, type=socket.SOCK_STREAM
            )
        except OSError as error:
            raise DNSLookupError(f"{name}: {error}") from None
        if not found:
            raise DNSLookupError(f"{name}: no address")
        return str(found[0][4][0])


def _shared_reactor(loop: asyncio.AbstractEventLoop) -> AsyncioSelectorReactor | None:
    """Twisted's global reactor, if it is an asyncio reactor running on `loop`.

    Only looked up if something installed it already: importing ``twisted.internet.reactor``
    would install the default reactor, which this module must never do.
    """
    installed: object = sys.modules.get("twisted.internet.reactor")
    if not isinstance(installed, AsyncioSelectorReactor) or not installed.running:
        return None
    # Twisted has no public accessor for the loop an asyncio reactor drives.
    return installed if installed._asyncioEventloop is loop else None


def _own_reactor(loop: asyncio.AbstractEventLoop) -> AsyncioSelectorReactor:
    """A reactor object on `loop` for one client, not installed globally and never run:
    asyncio runs the loop, and the reactor's timers and connections are the loop's."""
    reactor = AsyncioSelectorReactor(loop)
    reactor.installResolver(_LoopResolver(loop))
    return reactor


def _release_reactor(reactor: AsyncioSelectorReactor) -> None:
    """Give back what `reactor` took from the loop once its client is closed: timers still
    pending (a closed session's lease timer, say), and its waker's pipe (unused, since
    asyncio wakes the loop itself), which would otherwise stay open."""
    for call in reactor.getDelayedCalls():
        call.cancel()
    waker = reactor.waker
    if waker is not None:
        reactor.waker = None
        reactor._internalReaders.discard(waker)
        descriptors: IReactorFDSet = reactor
        descriptors.removeReader(waker)
        waker.connectionLost(None)


# ----------------------------------------------------------------------------- connecting


def connect(
    addresses_or_config: str | Sequence[str] | CellConfig,
    cell: str | None = None,
    **options: Any,
) -> AsyncCell:
    """An `AsyncCell` on the running event loop; call it in a coroutine.

    `addresses_or_config` is a `CellConfig`, a list of replica addresses, or a string: the
    path of a cell's YAML file, or comma-separated addresses. With addresses, `cell` names
    the cell (required); with a configuration it must be None or match. `options` are
    `Cell`'s keyword arguments (`timeout_seconds`, `request_timeout_seconds`, `cache`,
    `principal`, `token`, ...). Nothing connects until the first call. ``async with`` closes
    the client at the end of the block.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "chubbypy.client.aio.connect must be called in a coroutine, with the event "
            "loop running (use chubbypy.client.blocking.connect outside asyncio)"
        ) from None
    config, addresses = _cell_arguments(addresses_or_config, cell)
    shared = _shared_reactor(loop)
    reactor = shared or _own_reactor(loop)
    try:
        if config is not None:
            made = Cell.from_config(reactor, config, **options)
        else:
            assert cell is not None
            made = Cell(reactor, addresses, cell, **options)
    except BaseException:
        if shared is None:
            _release_reactor(reactor)
        raise
    return AsyncCell(made, loop, owned_reactor=reactor if shared is None else None)


def _cell_arguments(
    addresses_or_config: str | Sequence[str] | CellConfig, cell: str | None
) -> tuple[CellConfig | None, Sequence[str]]:
    """The configuration, or else the addresses, that `connect` was given (as
    `chubbypy.client.blocking.connect` reads them); `ValueError` if they do not fit."""
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
    return config, addresses


# ----------------------------------------------------------------------------- the cell


class AsyncCell:
    """`Cell`'s operations as coroutines; see the module docstring. Make one with `connect`.

    Wraps `cell`, whose reactor runs on `loop` (default: the running loop); use it only from
    coroutines on that loop. `owned_reactor` is a reactor made for this client alone, given
    back when it closes. Close it when done (its session's locks are released at once, not
    at the end of the lease); as an async context manager, ``async with`` closes it on exit.

    `Cell.session` has no counterpart here: the `Session` it gives is Twisted's (its calls
    return Deferreds); `twisted` reaches it for the rare program that needs it.
    """

    def __init__(
        self,
        cell: Cell,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        owned_reactor: AsyncioSelectorReactor | None = None,
    ) -> None:
        self._cell = cell
        self._loop = loop or asyncio.get_running_loop()
        self._owned_reactor = owned_reactor

    # ------------------------------------------------------------------------- queries

    @property
    def twisted(self) -> Cell:
        """The Twisted `Cell` this wraps (its calls return Deferreds)."""
        return self._cell

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop this client runs on; call it only from coroutines on this loop."""
        return self._loop

    @property
    def cell(self) -> str:
        """The cell's name: the <cell> of /ls/<cell>/..."""
        return self._cell.cell

    @property
    def timeout_seconds(self) -> float:
        """How long each operation may take, retries included."""
        return self._cell.timeout_seconds

    @property
    def state(self) -> SessionState | None:
        """The state of the cell's session; None before the first."""
        return self._cell.state

    @property
    def on_state(self) -> list[Callable[[SessionState], None]]:
        """The cell's `Cell.on_state` callbacks: called with each state change of its
        session, on the loop's thread."""
        return self._cell.on_state

    @property
    def on_event(self) -> list[Callable[[SessionEvent], None]]:
        """The cell's `Cell.on_event` callbacks: called with each event of its session, in
        order, on the loop's thread."""
        return self._cell.on_event

    def states(self) -> AsyncStream[SessionState]:
        """The cell's session states from now on, for ``async for``; see `Cell.states`."""
        return AsyncStream(self._cell.states(), self._loop)

    def events(self) -> AsyncStream[SessionEvent]:
        """Every event of the cell's sessions from now on, for ``async for``; see
        `Cell.events`."""
        return AsyncStream(self._cell.events(), self._loop)

    async def __aenter__(self) -> AsyncCell:
        """This client, to use in the block."""
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close the client, whatever the block raised."""
        await self.close()

    # ------------------------------------------------------------------------- reads

    async def get_contents_and_stat(self, path: str) -> Contents:
        """A file's whole contents and metadata; see `Cell.get_contents_and_stat`."""
        return await _future(self._cell.get_contents_and_stat(path), self._loop)

    async def get_stat(self, path: str) -> Stat:
        """A node's metadata; see `Cell.get_stat`."""
        return await _future(self._cell.get_stat(path), self._loop)

    async def read_dir(self, path: str, after: str = "", limit: int = PAGE_ENTRIES) -> Listing:
        """One page of a directory's children; see `Cell.read_dir`."""
        return await _future(self._cell.read_dir(path, after, limit), self._loop)

    async def list_dir(self, path: str) -> tuple[DirEntry, ...]:
        """Every child of a directory, in name order; see `Cell.list_dir`."""
        return await _future(self._cell.list_dir(path), self._loop)

    # ------------------------------------------------------------------------- writes

    async def create(
        self,
        path: str,
        contents: bytes = b"",
        *,
        directory: bool = False,
        acl: AclNames | None = None,
        ephemeral: bool = False,
    ) -> Stat:
        """Create a file or directory; see `Cell.create`."""
        creating = self._cell.create(
            path, contents, directory=directory, acl=acl, ephemeral=ephemeral
        )
        return await _future(creating, self._loop)

    async def set_contents(
        self, path: str, contents: bytes, expected_generation: int | None = None
    ) -> Stat:
        """Replace a file's contents, optionally compare-and-swap; see `Cell.set_contents`."""
        return await _future(
            self._cell.set_contents(path, contents, expected_generation), self._loop
        )

    async def delete(self, path: str, expected_instance: int | None = None) -> None:
        """Delete a file or an empty directory; see `Cell.delete`."""
        await _future(self._cell.delete(path, expected_instance), self._loop)

    async def set_acl(
        self, path: str, acl: AclNames, expected_generation: int | None = None
    ) -> Stat:
        """Replace a node's ACL names; see `Cell.set_acl`."""
        return await _future(self._cell.set_acl(path, acl, expected_generation), self._loop)

    async def multi_op(
        self,
        guard: Sequence[Test],
        if_true: Sequence[SimpleWrite],
        if_false: Sequence[SimpleWrite] = (),
    ) -> MultiResult:
        """Atomically apply one branch or the other; see `Cell.multi_op`."""
        return await _future(self._cell.multi_op(guard, if_true, if_false), self._loop)

    # ------------------------------------------------------------------------- sessions

    async def open(
        self,
        path: str,
        *,
        mode: HandleMode = HandleMode.READ | HandleMode.WRITE,
        events: EventMask | int = EventMask.NONE,
        create: bool = False,
        contents: bytes = b"",
        directory: bool = False,
        ephemeral: bool = False,
        exclusive: bool = False,
        acl: AclNames | None = None,
        lock_delay_seconds: float = 0.0,
    ) -> AsyncHandle:
        """A handle on `path` in the cell's session; see `Cell.open`."""
        opening = self._cell.open(
            path, mode=mode, events=events, create=create, contents=contents,
            directory=directory, ephemeral=ephemeral, exclusive=exclusive, acl=acl,
            lock_delay_seconds=lock_delay_seconds,
        )  # fmt: skip
        handle = await _taken(opening, self._loop, lambda opened: opened.close())
        return AsyncHandle(handle, self._loop)

    async def check_sequencer(self, sequencer: bytes) -> bool:
        """Whether `sequencer` still names a lock held as it says; see
        `Cell.check_sequencer`."""
        return await _future(self._cell.check_sequencer(sequencer), self._loop)

    async def list_sessions(self) -> tuple[SessionInfo, ...]:
        """Every session of the cell in id order, as the master sees it; see
        `Cell.list_sessions`."""
        return await _future(self._cell.list_sessions(), self._loop)

    async def lock_info(self, path: str) -> LockInfo:
        """The lock of the node `path`: mode, holders, waiters in order, lock generation,
        lock-delay left; see `Cell.lock_info`."""
        return await _future(self._cell.lock_info(path), self._loop)

    async def members(self) -> MemberList:
        """The cell's membership as the master knows it; see `Cell.members`."""
        return await _future(self._cell.members(), self._loop)

    async def change_membership(self, step: MembershipStep, if_version: int = 0) -> MembershipDone:
        """One membership change, as an operator; see `Cell.change_membership`."""
        return await _future(self._cell.change_membership(step, if_version), self._loop)

    async def end_session(self, session_id: int) -> SessionEnding:
        """End another client's session, as an operator: it is refused from now on and
        ends when its lease runs out; the answer says when. See `Cell.end_session`."""
        return await _future(self._cell.end_session(session_id), self._loop)

    async def snapshot(self, progress: Callable[[int, int], None] | None = None) -> CellSnapshot:
        """A snapshot of the cell's replicated database, for a backup, as an operator;
        `progress(received_bytes, total_bytes)` runs on the reactor's thread after each
        piece. See `Cell.snapshot`."""
        return await _future(self._cell.snapshot(progress), self._loop)

    def lock(
        self,
        path: str,
        *,
        timeout: float | None = None,
        shared: bool = False,
        lock_delay_seconds: float = 0.0,
        create: bool = True,
    ) -> AsyncLock:
        """The lock of file `path`, to hold with ``async with`` (or `AsyncLock.acquire`);
        see `Cell.lock`. It waits for ever, or `timeout` seconds (`LockTimeout`)."""
        lock = self._cell.lock(
            path, timeout=timeout, shared=shared, lock_delay_seconds=lock_delay_seconds,
            create=create,
        )  # fmt: skip
        return AsyncLock(lock, self._loop)

    def election(
        self,
        path: str,
        identity: str,
        *,
        recampaign: bool = False,
        lock_delay_seconds: float = 0.0,
    ) -> AsyncElection:
        """A candidate (or observer) advertising `identity` in the election held on file
        `path`; see `AsyncElection`."""
        return AsyncElection(
            self, path, identity, recampaign=recampaign, lock_delay_seconds=lock_delay_seconds
        )

    # ------------------------------------------------------------------------- the cell

    async def locate_master(self) -> MasterLocation:
        """Where the master is; see `Cell.locate_master`."""
        return await _future(self._cell.locate_master(), self._loop)

    async def status(self, replica: str | None = None) -> tuple[ReplicaReport, ...]:
        """Each replica's own status, or why it could not be asked; see `Cell.status`."""
        return await _future(self._cell.status(replica), self._loop)

    async def close(self) -> None:
        """End the session, cancel operations in progress and close every connection; see
        `Cell.close`. Cancelling the task that awaits it does not stop the closing."""
        closing = _future(self._cell.close(), self._loop)
        closing.add_done_callback(self._closed)
        await asyncio.shield(closing)

    def _closed(self, _: asyncio.Future[None]) -> None:
        reactor, self._owned_reactor = self._owned_reactor, None
        if reactor is not None:
            _release_reactor(reactor)


# ----------------------------------------------------------------------------- handles


class AsyncHandle:
    """`Handle`'s calls as coroutines: an open handle on one node (Chubby §2.6).

    Made by `AsyncCell.open`. Its attributes are the wrapped handle's, read through.
    """

    def __init__(self, handle: Handle, loop: asyncio.AbstractEventLoop) -> None:
        self._handle = handle
        self._loop = loop

    # ------------------------------------------------------------------------- queries

    @property
    def twisted(self) -> Handle:
        """The Twisted `Handle` this wraps (its calls return Deferreds)."""
        return self._handle

    @property
    def path(self) -> str:
        """The node's name."""
        return self._handle.path

    @property
    def stat(self) -> Stat:
        """The node's metadata as last seen through this handle."""
        return self._handle.stat

    @property
    def created(self) -> bool:
        """Whether the open created the node."""
        return self._handle.created

    @property
    def handle_id(self) -> int:
        """The handle's number at the cell (the events meant for it carry it)."""
        return self._handle.handle_id

    @property
    def closed(self) -> bool:
        """The program closed this handle."""
        return self._handle.closed

    @property
    def on_event(self) -> list[Callable[[SessionEvent], None]]:
        """The handle's `Handle.on_event` callbacks: called with each event for it, in
        order, on the loop's thread."""
        return self._handle.on_event

    def events(self) -> AsyncStream[SessionEvent]:
        """This handle's events from now on, for ``async for``; see `Handle.events`."""
        return AsyncStream(self._handle.events(), self._loop)

    # ------------------------------------------------------------------------- locks

    async def acquire(self, *, shared: bool = False, timeout: float | None = None) -> bytes:
        """Wait for the lock; its sequencer once held. See `Handle.acquire`."""
        return await _future(self._handle.acquire(shared=shared, timeout=timeout), self._loop)

    async def try_acquire(self, *, shared: bool = False) -> bytes:
        """The lock now, or `LockHeld` / `LockDelayed`; see `Handle.try_acquire`."""
        return await _future(self._handle.try_acquire(shared=shared), self._loop)

    async def release(self) -> None:
        """Let go of the lock this handle acquired last; see `Handle.release`."""
        await _future(self._handle.release(), self._loop)

    async def get_sequencer(self) -> bytes:
        """The sequencer of the lock this handle holds; see `Handle.get_sequencer`."""
        return await _future(self._handle.get_sequencer(), self._loop)

    def set_sequencer(self, sequencer: bytes | None) -> None:
        """Fence this handle's later writes with `sequencer` (None: stop); see
        `Handle.set_sequencer`."""
        self._handle.set_sequencer(sequencer)

    async def check_sequencer(self, sequencer: bytes) -> bool:
        """Whether `sequencer` still names a lock held as it says; see
        `Handle.check_sequencer`."""
        return await _future(self._handle.check_sequencer(sequencer), self._loop)

    # ------------------------------------------------------------------------- reads

    async def get_contents_and_stat(self) -> tuple[bytes, Stat]:
        """The file's contents and metadata; see `Handle.get_contents_and_stat`."""
        return await _future(self._handle.get_contents_and_stat(), self._loop)

    async def get_stat(self) -> Stat:
        """The node's metadata; see `Handle.get_stat`."""
        return await _future(self._handle.get_stat(), self._loop)

    async def read_dir(self, after: str = "", limit: int = PAGE_ENTRIES) -> Listing:
        """One page of the directory's children; see `Handle.read_dir`."""
        return await _future(self._handle.read_dir(after, limit), self._loop)

    # ------------------------------------------------------------------------- writes

    async def set_contents(
        self,
        contents: bytes,
        expected_generation: int | None = None,
        *,
        sequencer: bytes | None = None,
    ) -> Stat:
        """Replace the file's contents, optionally compare-and-swap and fenced; its
        metadata after. See `Handle.set_contents`."""
        writing = self._handle.set_contents(contents, expected_generation, sequencer=sequencer)
        return await _future(writing, self._loop)

    async def set_acl(
        self,
        acl: AclNames,
        expected_generation: int | None = None,
        *,
        sequencer: bytes | None = None,
    ) -> Stat:
        """Replace the node's ACL names; see `Handle.set_acl`."""
        writing = self._handle.set_acl(acl, expected_generation, sequencer=sequencer)
        return await _future(writing, self._loop)

    async def delete(self, *, sequencer: bytes | None = None) -> None:
        """Delete the node this handle opened; see `Handle.delete`."""
        await _future(self._handle.delete(sequencer=sequencer), self._loop)

    # ------------------------------------------------------------------------- ending

    async def close(self) -> None:
        """Close the handle, releasing its lock if it holds one; see `Handle.close`."""
        await _future(self._handle.close(), self._loop)

    async def poison(self) -> None:
        """Fail this handle's outstanding and later calls without closing it; see
        `Handle.poison`."""
        await _future(self._handle.poison(), self._loop)


# ----------------------------------------------------------------------------- locks


class AsyncLock:
    """A lock to hold for a block of code, with ``async with``; made by `AsyncCell.lock`.

    The core's guarantees hold (see `chubbypy.client._lock`): the body never runs without
    the lock (`__aenter__` raises `LockTimeout`, or the reason it could not be acquired),
    leaving the block releases it whatever the body raised, and if the lock was lost while
    the body ran and the body ended normally, the exit raises the `LockLost`.
    """

    def __init__(self, lock: Lock, loop: asyncio.AbstractEventLoop) -> None:
        self._lock = lock
        self._loop = loop

    @property
    def twisted(self) -> Lock:
        """The Twisted `Lock` this wraps."""
        return self._lock

    @property
    def path(self) -> str:
        """The lock file's name."""
        return self._lock.path

    @property
    def shared(self) -> bool:
        """A reader's (shared) lock rather than an exclusive one."""
        return self._lock.shared

    @property
    def timeout(self) -> float | None:
        """Seconds to wait for the lock (0: try once; None: for ever)."""
        return self._lock.timeout

    async def acquire(self) -> AsyncHeld:
        """Wait for the lock (up to `timeout`: `LockTimeout`); the `AsyncHeld` once held.
        Let it go with `AsyncHeld.release`."""
        held = await _taken(self._lock.acquire(), self._loop, lambda held: held.release())
        return AsyncHeld(held, self._loop)

    async def __aenter__(self) -> AsyncHeld:
        """Wait for the lock, as `acquire`; the block runs only once it is held."""
        return await self.acquire()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Release the lock; then, if it was lost while held and the block ended normally,
        raise the `LockLost`."""
        # The core's exit, as it is: release, then raise the LockLost if the body ended
        # normally after a loss.
        exiting = Deferred.fromCoroutine(self._lock.__aexit__(kind, error, traceback))
        await _future(exiting, self._loop)


class AsyncHeld:
    """A lock this client holds (the core's `Held`, for asyncio). `release()` lets it go.

    `lost` is an asyncio future that resolves with the `LockLost` if the lock is lost while
    held (never after a release). To wait for it with a time limit, shield it
    (``asyncio.wait_for(asyncio.shield(held.lost), 5)``): a cancelled future stays cancelled.
    """

    def __init__(self, held: Held, loop: asyncio.AbstractEventLoop) -> None:
        self._held = held
        self._loop = loop
        self._handle = AsyncHandle(held.handle, loop)
        self.lost: asyncio.Future[LockLost] = loop.create_future()
        """Resolves with the `LockLost` if the lock is lost while held."""
        held.lost.addCallback(self._lost)

    def _lost(self, reason: LockLost) -> LockLost:
        if not self.lost.done():
            self.lost.set_result(reason)
        return reason  # the core's Deferred keeps its result for anyone else

    @property
    def twisted(self) -> Held:
        """The Twisted `Held` this wraps."""
        return self._held

    @property
    def path(self) -> str:
        """The lock file's name."""
        return self._held.path

    @property
    def shared(self) -> bool:
        """Held in shared (reader's) mode."""
        return self._held.shared

    @property
    def handle(self) -> AsyncHandle:
        """The handle holding the lock (write the file through it, fenced)."""
        return self._handle

    @property
    def sequencer(self) -> bytes:
        """Names this acquisition: pass it to what the lock protects (Chubby §2.4)."""
        return self._held.sequencer

    @property
    def on_lost(self) -> list[Callable[[LockLost], None]]:
        """The core's `Held.on_lost` callbacks: called with the `LockLost` if the lock is
        lost while held, on the loop's thread."""
        return self._held.on_lost

    @property
    def lost_reason(self) -> LockLost | None:
        """Why the lock was lost while held; None while it is not."""
        return self._held.lost_reason

    @property
    def is_lost(self) -> bool:
        """The lock was lost while held."""
        return self._held.is_lost

    @property
    def in_jeopardy(self) -> bool:
        """The session's lease ran out without word from the master: the lock may be lost;
        see `Held.in_jeopardy`."""
        return self._held.in_jeopardy

    async def check(self) -> bool:
        """Whether the master still counts this acquisition as held."""
        return await _future(self._held.check(), self._loop)

    async def release(self) -> None:
        """Let go of the lock (by closing its handle); never fails. See `Held.release`."""
        await _future(self._held.release(), self._loop)


# ----------------------------------------------------------------------------- elections


class AsyncElection:
    """One candidate (or observer) in the election held on file `path` (the core's
    `Election`, for asyncio); `identity` is what it advertises once leader.

    Cancelling every task that awaits `campaign` withdraws the candidate (as `resign`
    does), so a campaign abandoned by ``asyncio.wait_for`` never wins later unseen; give
    `campaign` a `timeout` to bound the wait instead.
    """

    log = Logger()

    def __init__(
        self,
        cell: AsyncCell,
        path: str,
        identity: str,
        *,
        recampaign: bool = False,
        lock_delay_seconds: float = 0.0,
    ) -> None:
        self._election = Election(
            cell.twisted, path, identity, recampaign=recampaign,
            lock_delay_seconds=lock_delay_seconds,
        )  # fmt: skip
        self._loop = cell.loop
        self._campaigners = 0
        self._held: AsyncHeld | None = None

    # ------------------------------------------------------------------------- queries

    @property
    def twisted(self) -> Election:
        """The Twisted `Election` this wraps."""
        return self._election

    @property
    def path(self) -> str:
        """The election's file."""
        return self._election.path

    @property
    def identity(self) -> str:
        """What this candidate advertises once leader."""
        return self._election.identity

    @property
    def is_leader(self) -> bool:
        """This candidate leads now (as far as it knows: see `AsyncHeld.in_jeopardy`)."""
        return self._election.is_leader

    @property
    def sequencer(self) -> bytes | None:
        """The sequencer of the leadership held (None when not leader); pass it with every
        request the leader makes to what it leads."""
        return self._election.sequencer

    @property
    def held(self) -> AsyncHeld | None:
        """The leadership's lock while leader (its handle, `lost` future, jeopardy)."""
        held = self._election.held
        if held is None:
            return None
        if self._held is None or self._held.twisted is not held:
            self._held = AsyncHeld(held, self._loop)
        return self._held

    @property
    def on_elected(self) -> list[Callable[[bytes], None]]:
        """The core's `Election.on_elected` callbacks: called with the sequencer when this
        candidate becomes leader, on the loop's thread."""
        return self._election.on_elected

    @property
    def on_deposed(self) -> list[Callable[[Exception | None], None]]:
        """The core's `Election.on_deposed` callbacks: called with the `LockLost` (None if
        it resigned) when it stops being leader, on the loop's thread."""
        return self._election.on_deposed

    async def leader(self) -> str | None:
        """What the leader advertises, None if no one leads; see `Election.leader`."""
        return await _future(self._election.leader(), self._loop)

    def changes(self) -> AsyncStream[Leadership]:
        """This candidate's elections and depositions from now on, for ``async for``."""
        return AsyncStream(self._election.changes(), self._loop)

    def observe(self) -> AsyncStream[str | None]:
        """What the leader advertises, now and after each change, for ``async for``; close
        the stream to stop. See `Election.observe`."""
        return AsyncStream(self._election.observe(), self._loop)

    # ------------------------------------------------------------------------- campaigning

    async def campaign(self, timeout: float | None = None) -> bytes:
        """Wait until this candidate leads (for ever, or `timeout` seconds: `LockTimeout`),
        then advertise its identity; the leadership's sequencer. See `Election.campaign`."""
        self._campaigners += 1
        try:
            return await _future(self._election.campaign(timeout), self._loop)
        except asyncio.CancelledError:
            if self._campaigners == 1:
                # Nobody waits for this campaign any more: withdraw it (the core's
                # campaign goes on when only its Deferred is cancelled).
                self._election.resign().addErrback(self._withdrawal_failed)
            raise
        finally:
            self._campaigners -= 1

    def _withdrawal_failed(self, failure: object) -> None:
        self.log.warn("{identity}: withdrawing a cancelled campaign failed: {failure}",
                      identity=self.identity, failure=failure)  # fmt: skip

    async def resign(self) -> None:
        """Stop leading (clear the file, let the lock go) or stop campaigning; see
        `Election.resign`."""
        await _future(self._election.resign(), self._loop)

    async def proclaim(self, value: str) -> None:
        """As leader, advertise `value` instead (fenced); `NotLeader` if this candidate
        does not lead. See `Election.proclaim`."""
        await _future(self._election.proclaim(value), self._loop)


# ----------------------------------------------------------------------------- streams


class AsyncStream(Generic[_T]):
    """An `EventStream` for asyncio: ``async for item in stream``, or ``await
    stream.next()``. It ends as the stream it wraps does (cleanly, or with the reason,
    say `SessionExpired`); `close()` stops it early."""

    def __init__(self, stream: EventStream[_T], loop: asyncio.AbstractEventLoop) -> None:
        self._stream = stream
        self._loop = loop

    @property
    def twisted(self) -> EventStream[_T]:
        """The Twisted `EventStream` this wraps."""
        return self._stream

    @property
    def ended(self) -> bool:
        """Nothing more will come (items already queued may still be read)."""
        return self._stream.ended

    async def next(self) -> _T:
        """The next item, when there is one; `StopAsyncIteration` (or the reason the stream
        ended) once it ended and nothing is queued."""
        return await _future(self._stream.next(), self._loop)

    def close(self) -> None:
        """Stop following: queued items are dropped and the iteration ends."""
        self._stream.close()

    def __aiter__(self) -> AsyncStream[_T]:
        """The stream itself: it is its own iterator."""
        return self

    async def __anext__(self) -> _T:
        """The next item, as `next`."""
        return await self.next()
