"""A synchronous client: the Twisted client's calls as blocking calls, for scripts and threads.

Shell (STYLE §1, §4). `BlockingCell` runs a `chubbypy.client.Cell` on Twisted's global reactor,
which runs in a background daemon thread that the first `connect` starts (once per process,
without signal handlers, so Ctrl-C still reaches the main thread). Each call hands the
operation to the reactor thread and waits for its result, re-raising its exception. Every
operation has the cell client's deadline (`timeout_seconds`), so no call blocks longer,
except those that wait on purpose: acquiring a lock, campaigning, and reading a stream, each
for as long as its `timeout` allows (for ever without one).

The Twisted objects each have a blocking twin with the same method names:

* `BlockingCell` (a `Cell`): plain calls, and `open` (a `BlockingHandle`), `lock` (a
  `BlockingLock`, whose ``with`` block holds the lock: a `BlockingHeld`), `election` (a
  `BlockingElection`), `states()` and `events()` (each a `BlockingStream`).
* A `BlockingStream` is an iterator over what a session, a handle or an election reports
  (``for event in handle.events():``); `BlockingStream.next` takes a timeout.
* `twisted` on each gives the object it wraps, for code that runs on the reactor thread.

Threads. A caller waits in short slices (`WAIT_SLICE_SECONDS`), so a KeyboardInterrupt
(Ctrl-C) in the main thread gets through even while a lock is awaited for ever. The
operation it interrupted is then stopped on the reactor thread: cancelled, or for a
campaign resigned, or for a lock granted at that moment released, so nothing keeps running
that the program no longer waits for. Calls may be made from any number of threads.

Callbacks (`on_state`, `on_event`, `on_lost`, `on_elected`, `on_deposed`) are the Twisted
objects' own lists: they run on the reactor thread, so they must be quick and must not call
this blocking API (it raises `RuntimeError` there, since the reactor would wait on itself).
To act on an event, hand it to a thread (a `queue.Queue`), or read a stream instead.

This module and `chubbypy.cli` are the only places that touch the global reactor, and only
when a client is made: importing this module installs no reactor. Code that already runs a
reactor should use `chubbypy.client.Cell` directly.

    with connect("127.0.0.1:7201,127.0.0.1:7202", cell="local") as cell:
        cell.create("/ls/local/greeting", b"hello")
        print(cell.get_contents_and_stat("/ls/local/greeting").contents)
        with cell.lock("/ls/local/job", timeout=30) as held:
            held.handle.set_contents(b"mine", sequencer=held.sequencer)
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Generic, ParamSpec, TypeVar, cast

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadable import isInIOThread

from chubbypy.client._cell import Cell
from chubbypy.client._election import Election, Leadership
from chubbypy.client._errors import LockLost
from chubbypy.client._lock import Held, Lock
from chubbypy.client._plain_cell import ReplicaReport
from chubbypy.client._session import Handle, Session
from chubbypy.client._snapshot import CellSnapshot
from chubbypy.client._state import SessionState
from chubbypy.client._streams import STREAM_ITEMS_MAX, EventStream, StreamOverflow
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
from chubbypy.protocol.session import (
    EventMask,
    HandleMode,
    LockInfo,
    MemberList,
    MembershipDone,
    MembershipStep,
    SessionEnding,
    SessionEvent,
    SessionInfo,
)

if TYPE_CHECKING:
    from chubbypy.config import CellConfig

__all__ = [
    "WAIT_SLICE_SECONDS",
    "BlockingCell",
    "BlockingElection",
    "BlockingHandle",
    "BlockingHeld",
    "BlockingLock",
    "BlockingStream",
    "connect",
    "running_reactor",
]

_P = ParamSpec("_P")
_T = TypeVar("_T")

WAIT_SLICE_SECONDS: Final = 0.2
"""How long a waiting caller sleeps between looks: the longest a Ctrl-C waits to be seen."""

# Twisted leaves isInIOThread unannotated; its documented type, for mypy --strict:
_in_reactor_thread = cast(Callable[[], bool], isInIOThread)

_starting = threading.Lock()
_reactor_thread: threading.Thread | None = None
_log = Logger(namespace="chubbypy.client.blocking")


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


# ----------------------------------------------------------------------------- waiting


def _refuse_reactor_thread() -> None:
    """`RuntimeError` on the reactor thread: waiting there for the reactor would hang."""
    if _in_reactor_thread():
        raise RuntimeError(
            "a BlockingCell cannot be used from the reactor thread: use chubbypy.client.Cell"
        )


def _cancel(running: Deferred[Any]) -> None:
    running.cancel()


class _Waiting(Generic[_T]):
    """One operation started on the reactor thread for a caller waiting in another.

    The caller waits in slices, so that an exception raised in its thread (Ctrl-C's
    KeyboardInterrupt) gets through. It then abandons the operation, on the reactor thread:
    `stop` runs if the operation is still going (by default its Deferred is cancelled), and
    `undo` if it succeeded all the same (a lock granted to a caller that will never hear of
    it is released).
    """

    def __init__(
        self,
        start: Callable[[], Deferred[_T]],
        stop: Callable[[Deferred[_T]], object],
        undo: Callable[[_T], object] | None,
    ) -> None:
        self._start = start
        self._stop = stop
        self._undo = undo
        self._running: Deferred[_T] | None = None
        self._outcome: _T | Failure | None = None
        self._done = threading.Event()
        self._abandoned = False

    def wait(self, reactor: IReactorFromThreads) -> _T:
        """Start the operation on the reactor thread and wait for its result (or error)."""
        _refuse_reactor_thread()
        reactor.callFromThread(self._begin)
        try:
            while not self._done.wait(WAIT_SLICE_SECONDS):
                pass
            outcome = self._outcome
        except BaseException:
            reactor.callFromThread(self._abandon)
            raise
        if isinstance(outcome, Failure):
            outcome.raiseException()
        return cast(_T, outcome)

    def _begin(self) -> None:
        self._running = maybeDeferred(self._start)
        self._running.addBoth(self._ended)

    def _ended(self, outcome: _T | Failure) -> None:
        self._outcome = outcome
        self._done.set()
        if self._abandoned:
            self._undo_success()

    def _abandon(self) -> None:
        self._abandoned = True
        if self._done.is_set():
            self._undo_success()
        elif self._running is not None:
            _quietly(self._stop(self._running), "stopping an interrupted call")

    def _undo_success(self) -> None:
        if self._undo is not None and not isinstance(self._outcome, Failure):
            _quietly(self._undo(cast(_T, self._outcome)), "undoing an interrupted call")


def _quietly(result: object, what: str) -> None:
    """Log (not raise) the failure of `result`, if it is a Deferred that fails."""
    if isinstance(result, Deferred):
        result.addErrback(lambda failure: _log.failure("{what} failed", failure, what=what))


def _wait(
    reactor: IReactorFromThreads,
    start: Callable[[], Deferred[_T]],
    *,
    stop: Callable[[Deferred[_T]], object] = _cancel,
    undo: Callable[[_T], object] | None = None,
) -> _T:
    """The result of `start()`, run on the reactor thread; see `_Waiting`."""
    return _Waiting(start, stop, undo).wait(reactor)


def _get(reactor: IReactorFromThreads, function: Callable[[], _T]) -> _T:
    """What `function()` returns, run on the reactor thread (where Twisted objects live)."""
    return _wait(reactor, lambda: maybeDeferred(function))


# ----------------------------------------------------------------------------- streams


class _End:
    """The last thing a stream hands over: how it ended (None: cleanly)."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error

    def exception(self) -> BaseException:
        """What a reader meeting the end raises."""
        return StopIteration() if self.error is None else self.error


class BlockingStream(Generic[_T]):
    """An `EventStream` read from another thread: an iterator, and `next` with a timeout.

    ``for event in handle.events():`` takes each item in order as it comes, and stops when
    the stream ends: cleanly (a handle closed, a cell closed), or by raising why (say
    `SessionExpired`). The reactor thread hands each item over through a `queue.Queue` as it
    happens, from when the stream was made. If more than `STREAM_ITEMS_MAX` items wait
    unread, the stream stops following: the waiting items can still be read, then it raises
    `StreamOverflow` (some were missed: rescan). `close()` stops it early.

    Made by the calls that return one (`BlockingCell.events`, `BlockingHandle.events`, ...),
    on the reactor thread.
    """

    def __init__(
        self,
        stream: EventStream[_T],
        reactor: IReactorFromThreads,
        *,
        limit: int = STREAM_ITEMS_MAX,
    ) -> None:
        self._stream = stream
        self._reactor = reactor
        self._limit = limit
        self._items: queue.Queue[_T | _End] = queue.Queue()
        self._end: _End | None = None
        """How the stream ended, once the reader met the end (or closed it)."""
        self._pump()

    def __iter__(self) -> Iterator[_T]:
        """The stream itself: ``for item in stream`` waits for each item."""
        return self

    def __next__(self) -> _T:
        """The next item, waiting as long as it takes; `StopIteration` at the end."""
        return self.next()

    def __enter__(self) -> BlockingStream[_T]:
        """The stream itself; leaving the block closes it."""
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close it, whatever the block raised."""
        self.close()

    def next(self, timeout: float | None = None) -> _T:
        """The next item, waiting for ever or at most `timeout` seconds (then the builtin
        `TimeoutError`; the stream goes on). Once the stream ended: `StopIteration`, or the
        error it ended with, on this and every later call."""
        _refuse_reactor_thread()
        if self._end is not None:
            raise self._end.exception()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = WAIT_SLICE_SECONDS
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - time.monotonic()))
            try:
                item = self._items.get(timeout=wait)
            except queue.Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"no item within {timeout:g} s") from None
                continue
            if isinstance(item, _End):
                self._end = item
                self._items.put(item)  # for a reader waiting in another thread
                raise item.exception()
            return item

    def close(self) -> None:
        """Stop following: items not yet read are dropped, and the iteration ends."""
        _refuse_reactor_thread()
        self._end = _End(None)
        _get(self._reactor, self._stream.close)

    def _pump(self) -> None:
        """Reactor thread: move what the stream has into the queue, then wait for more."""
        while True:
            outcome: list[_T | Failure] = []
            reading = self._stream.next().addBoth(outcome.append)
            if not outcome:
                reading.addCallback(self._arrived, outcome)
                return
            if not self._received(outcome[0]):
                return

    def _arrived(self, _: None, outcome: list[_T | Failure]) -> None:
        """Reactor thread: the item waited for came; queue it and read on."""
        if self._received(outcome[0]):
            self._pump()

    def _received(self, outcome: _T | Failure) -> bool:
        """Reactor thread: queue an item (True: read on) or the end (False)."""
        if isinstance(outcome, Failure):
            ended = isinstance(outcome.value, StopAsyncIteration)
            self._items.put(_End(None if ended else outcome.value))
            return False
        if self._items.qsize() >= self._limit:
            self._stream.close()
            self._items.put(_End(StreamOverflow(f"more than {self._limit} items were not read")))
            return False
        self._items.put(outcome)
        return True


def _follow(
    reactor: IReactorFromThreads, make: Callable[[], EventStream[_T]]
) -> BlockingStream[_T]:
    """A `BlockingStream` of the stream `make()` returns on the reactor thread."""
    return _get(reactor, lambda: BlockingStream(make(), reactor))


# ----------------------------------------------------------------------------- the cell


class BlockingCell:
    """`Cell`'s calls as blocking calls; see the module docstring.

    Wraps `cell`, whose reactor `reactor` runs in another thread. `connect` makes one with
    the global reactor. Usable as a context manager, which closes it on exit. Every method
    raises `RuntimeError` when called from the reactor thread.
    """

    def __init__(self, cell: Cell, reactor: IReactorFromThreads) -> None:
        self._cell = cell
        self._reactor = reactor

    # ------------------------------------------------------------------------- queries

    @property
    def cell(self) -> str:
        """The cell's name: the <cell> of /ls/<cell>/..."""
        return self._cell.cell

    @property
    def twisted(self) -> Cell:
        """The Twisted `Cell` this wraps: its calls return Deferreds, for the reactor thread."""
        return self._cell

    @property
    def reactor(self) -> IReactorFromThreads:
        """The reactor the cell runs on (in another thread)."""
        return self._reactor

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
        """Called with each state change of the cell's session, on the reactor thread: keep
        them quick, and do not call this blocking API from them (see the module docstring)."""
        return self._cell.on_state

    @property
    def on_event(self) -> list[Callable[[SessionEvent], None]]:
        """Called with each event of the cell's session, in order, on the reactor thread (as
        `on_state`)."""
        return self._cell.on_event

    def __enter__(self) -> BlockingCell:
        """The client itself; leaving the block closes it."""
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close it, whatever the block raised."""
        self.close()

    # ------------------------------------------------------------------------- plain calls

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

    def list_sessions(self) -> tuple[SessionInfo, ...]:
        """Every session of the cell, as the master sees it; see `Cell.list_sessions`."""
        return self._call(self._cell.list_sessions)

    def lock_info(self, path: str) -> LockInfo:
        """The lock of the node `path`: mode, holders, waiters in order, lock generation,
        lock-delay left; see `Cell.lock_info`."""
        return self._call(self._cell.lock_info, path)

    def members(self) -> MemberList:
        """The cell's membership as the master knows it; see `Cell.members`."""
        return self._call(self._cell.members)

    def change_membership(self, step: MembershipStep, if_version: int = 0) -> MembershipDone:
        """One membership change, as an operator; see `Cell.change_membership`."""
        return self._call(self._cell.change_membership, step, if_version)

    def end_session(self, session_id: int) -> SessionEnding:
        """End another client's session, as an operator: it is refused from now on and
        ends when its lease runs out; the answer says when. See `Cell.end_session`."""
        return self._call(self._cell.end_session, session_id)

    def snapshot(self, progress: Callable[[int, int], None] | None = None) -> CellSnapshot:
        """A snapshot of the cell's replicated database, for a backup, as an operator;
        `progress(received_bytes, total_bytes)` runs on the reactor thread after each piece.
        See `Cell.snapshot`."""
        return self._call(self._cell.snapshot, progress)

    def close(self) -> None:
        """End the session, cancel operations in progress and close every connection; see
        `Cell.close`. Streams of the cell end."""
        self._call(self._cell.close)

    # ------------------------------------------------------------------------- the session

    def session(self) -> Session:
        """The cell's session, opened if need be; see `Cell.session`. It is the Twisted
        `Session` (read its `session_id`, `state`, `lease_remaining` anywhere; its calls
        return Deferreds, for the reactor thread)."""
        return self._call(self._cell.session)

    def open(
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
    ) -> BlockingHandle:
        """A `BlockingHandle` on `path` in the cell's session; see `Cell.open` for the
        arguments. Usable as a context manager, which closes the handle."""

        def opening() -> Deferred[BlockingHandle]:
            made = self._cell.open(
                path, mode=mode, events=events, create=create, contents=contents,
                directory=directory, ephemeral=ephemeral, exclusive=exclusive, acl=acl,
                lock_delay_seconds=lock_delay_seconds,
            )  # fmt: skip
            return made.addCallback(BlockingHandle, self._reactor)

        return _wait(self._reactor, opening, undo=lambda handle: handle.twisted.close())

    def check_sequencer(self, sequencer: bytes) -> bool:
        """Whether `sequencer` still names a lock held in its mode at its generation; see
        `Cell.check_sequencer`."""
        return self._call(self._cell.check_sequencer, sequencer)

    def lock(
        self,
        path: str,
        *,
        timeout: float | None = None,
        shared: bool = False,
        lock_delay_seconds: float = 0.0,
        create: bool = True,
    ) -> BlockingLock:
        """The lock of file `path`, to hold with ``with`` (or `BlockingLock.acquire`): it
        waits for ever, or `timeout` seconds (`LockTimeout`); `shared` for a reader's lock;
        the file is created if missing unless not `create`. See `Cell.lock`."""
        _refuse_reactor_thread()
        made = self._cell.lock(
            path, timeout=timeout, shared=shared, lock_delay_seconds=lock_delay_seconds,
            create=create,
        )  # fmt: skip
        return BlockingLock(made, self._reactor)

    def election(
        self,
        path: str,
        identity: str,
        *,
        recampaign: bool = False,
        lock_delay_seconds: float = 0.0,
    ) -> BlockingElection:
        """A candidate (or observer) in the election held on file `path`; see
        `BlockingElection`."""
        _refuse_reactor_thread()
        return BlockingElection(
            self, path, identity, recampaign=recampaign, lock_delay_seconds=lock_delay_seconds
        )

    def states(self) -> BlockingStream[SessionState]:
        """The cell's session states from now on; see `Cell.states`."""
        return _follow(self._reactor, self._cell.states)

    def events(self) -> BlockingStream[SessionEvent]:
        """Every event of the cell's sessions from now on; see `Cell.events`."""
        return _follow(self._reactor, self._cell.events)

    def _call(self, operation: Callable[_P, Deferred[_T]], *args: _P.args, **kw: _P.kwargs) -> _T:
        """`operation(*args, **kw)`'s result, run on the reactor thread."""
        return _wait(self._reactor, lambda: operation(*args, **kw))


# ----------------------------------------------------------------------------- handles


class BlockingHandle:
    """`Handle`'s calls as blocking calls: an open handle on one node (Chubby §2.6).

    Made by `BlockingCell.open`. As a context manager it closes the handle on exit. Every
    method raises `RuntimeError` when called from the reactor thread.
    """

    def __init__(self, handle: Handle, reactor: IReactorFromThreads) -> None:
        self._handle = handle
        self._reactor = reactor

    # ------------------------------------------------------------------------- queries

    @property
    def twisted(self) -> Handle:
        """The Twisted `Handle` this wraps."""
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
        """Whether opening the handle created its node."""
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
        """Called with each event for this handle, in order, on the reactor thread: keep
        them quick, and do not call this blocking API from them."""
        return self._handle.on_event

    def events(self) -> BlockingStream[SessionEvent]:
        """This handle's events from now on (those its event mask asked for, and master
        fail-overs); it ends when the handle is closed, and with `SessionExpired` if the
        session ends. See `Handle.events`."""
        return _follow(self._reactor, self._handle.events)

    def __enter__(self) -> BlockingHandle:
        """The handle itself; leaving the block closes it."""
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close it, whatever the block raised."""
        self.close()

    # ------------------------------------------------------------------------- locks

    def acquire(self, *, shared: bool = False, timeout: float | None = None) -> bytes:
        """Wait for the lock (exclusive, or `shared`), for ever or `timeout` seconds
        (`Unavailable` then); its sequencer. See `Handle.acquire`.

        Interrupted (Ctrl-C), the handle is poisoned: that stops the wait at the master too,
        which would otherwise grant the lock later to a program that no longer expects it.
        Close the handle then. A lock granted just as the interruption came is released.
        """
        handle = self._handle
        return _wait(
            self._reactor,
            lambda: handle.acquire(shared=shared, timeout=timeout),
            stop=lambda _: handle.poison(),
            undo=lambda _: handle.release(),
        )

    def try_acquire(self, *, shared: bool = False) -> bytes:
        """The lock now, or `LockHeld` / `LockDelayed`; its sequencer."""
        return self._call(lambda: self._handle.try_acquire(shared=shared))

    def release(self) -> None:
        """Let go of the lock this handle acquired last; see `Handle.release`."""
        self._call(self._handle.release)

    def get_sequencer(self) -> bytes:
        """The sequencer of the lock this handle holds (`LockNotHeld` if none)."""
        return self._call(self._handle.get_sequencer)

    def set_sequencer(self, sequencer: bytes | None) -> None:
        """Fence this handle's later writes with `sequencer` (None: stop fencing); see
        `Handle.set_sequencer`."""
        _get(self._reactor, lambda: self._handle.set_sequencer(sequencer))

    def check_sequencer(self, sequencer: bytes) -> bool:
        """Whether `sequencer` still names a lock held in its mode at its generation."""
        return self._call(self._handle.check_sequencer, sequencer)

    # ------------------------------------------------------------------------- reads

    def get_contents_and_stat(self) -> tuple[bytes, Stat]:
        """The file's contents and metadata; see `Handle.get_contents_and_stat`."""
        return self._call(self._handle.get_contents_and_stat)

    def get_stat(self) -> Stat:
        """The node's metadata; see `Handle.get_stat`."""
        return self._call(self._handle.get_stat)

    def read_dir(self, after: str = "", limit: int = 1000) -> Listing:
        """One page of the directory's children; see `Handle.read_dir`."""
        return self._call(self._handle.read_dir, after, limit)

    # ------------------------------------------------------------------------- writes

    def set_contents(
        self,
        contents: bytes,
        expected_generation: int | None = None,
        *,
        sequencer: bytes | None = None,
    ) -> Stat:
        """Replace the file's contents, optionally compare-and-swap (`GenerationMismatch`)
        and fenced (`InvalidSequencer`); its metadata after. See `Handle.set_contents`."""
        return self._call(
            self._handle.set_contents, contents, expected_generation, sequencer=sequencer
        )

    def set_acl(
        self,
        acl: AclNames,
        expected_generation: int | None = None,
        *,
        sequencer: bytes | None = None,
    ) -> Stat:
        """Replace the node's ACL names; see `Handle.set_acl`."""
        return self._call(self._handle.set_acl, acl, expected_generation, sequencer=sequencer)

    def delete(self, *, sequencer: bytes | None = None) -> None:
        """Delete the node this handle opened; see `Handle.delete`."""
        self._call(self._handle.delete, sequencer=sequencer)

    # ------------------------------------------------------------------------- ending

    def close(self) -> None:
        """Close the handle (releasing its lock, if it holds one); see `Handle.close`."""
        self._call(self._handle.close)

    def poison(self) -> None:
        """Make this handle's outstanding and later calls fail `InvalidHandle` without
        closing it; see `Handle.poison`. Another thread's blocked `acquire` stops so."""
        self._call(self._handle.poison)

    def _call(self, operation: Callable[_P, Deferred[_T]], *args: _P.args, **kw: _P.kwargs) -> _T:
        return _wait(self._reactor, lambda: operation(*args, **kw))


# ----------------------------------------------------------------------------- locks


class BlockingLock:
    """A lock to hold for a block of code: ``with cell.lock(path, timeout=30) as held:``.

    Made by `BlockingCell.lock`; see `chubbypy.client._lock` for what it guards against.
    Entering acquires the lock (`BlockingHeld`), or raises `LockTimeout` after `timeout`
    seconds without running the body. Leaving releases it, whatever the body raised; if the
    lock was lost while the body ran and the body raised nothing, leaving raises the
    `LockLost`. One ``with`` block at a time per `BlockingLock`; `acquire()` gives a
    `BlockingHeld` to release by hand instead.
    """

    def __init__(self, lock: Lock, reactor: IReactorFromThreads) -> None:
        self._lock = lock
        self._reactor = reactor
        self._held: BlockingHeld | None = None

    @property
    def twisted(self) -> Lock:
        """The Twisted `Lock` this wraps."""
        return self._lock

    @property
    def path(self) -> str:
        """The lock file's name."""
        return self._lock.path

    @property
    def timeout(self) -> float | None:
        """Seconds to wait for the lock (None: for ever)."""
        return self._lock.timeout

    @property
    def shared(self) -> bool:
        """A reader's (shared) lock, not an exclusive one."""
        return self._lock.shared

    def acquire(self) -> BlockingHeld:
        """Wait for the lock (up to `timeout`: `LockTimeout`); the `BlockingHeld` once held.
        Interrupted (Ctrl-C), the wait stops (and a lock granted meanwhile is released)."""

        def acquiring() -> Deferred[BlockingHeld]:
            return self._lock.acquire().addCallback(BlockingHeld, self._reactor)

        return _wait(self._reactor, acquiring, undo=lambda held: held.twisted.release())

    def __enter__(self) -> BlockingHeld:
        """Acquire the lock (`LockTimeout` after `timeout`, and the body does not run)."""
        if self._held is not None:
            raise RuntimeError(f"the lock {self.path} is in a with block already: make another")
        self._held = self.acquire()
        return self._held

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Release the lock; raise its `LockLost` if it was lost and the body raised nothing."""
        held, self._held = self._held, None
        if held is None:
            return
        try:
            held.release()
        except Exception:
            if error is None:
                raise
            _log.failure("releasing the lock {path} failed", path=self.path)
        if error is None and held.lost_reason is not None:
            raise held.lost_reason


class BlockingHeld:
    """A lock this client holds; made by `BlockingLock`. `release()` lets it go.

    `lost` is a `threading.Event`, set if the lock is lost while held (its session ended,
    its file was deleted, a new master does not count it): a worker can check it between
    steps, or wait on it. `lost_reason` then says why.
    """

    def __init__(self, held: Held, reactor: IReactorFromThreads) -> None:
        """Wrap `held`; on the reactor thread (where `held.lost` may fire)."""
        self._held = held
        self._reactor = reactor
        self._handle = BlockingHandle(held.handle, reactor)
        self._lost = threading.Event()
        held.lost.addCallback(self._lock_lost)

    def _lock_lost(self, reason: LockLost) -> LockLost:
        self._lost.set()
        return reason  # for the Twisted callbacks after this one

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
        """A reader's (shared) lock."""
        return self._held.shared

    @property
    def handle(self) -> BlockingHandle:
        """The handle holding the lock (write the file through it, fenced)."""
        return self._handle

    @property
    def sequencer(self) -> bytes:
        """Names this acquisition: pass it to what the lock protects (Chubby §2.4)."""
        return self._held.sequencer

    @property
    def lost(self) -> threading.Event:
        """Set if the lock is lost while held (never after a release)."""
        return self._lost

    @property
    def on_lost(self) -> list[Callable[[LockLost], None]]:
        """Called with the `LockLost` if the lock is lost while held, on the reactor thread:
        keep them quick, and do not call this blocking API from them."""
        return self._held.on_lost

    @property
    def lost_reason(self) -> LockLost | None:
        """Why the lock was lost; None while it is not."""
        return self._held.lost_reason

    @property
    def is_lost(self) -> bool:
        """The lock was lost while held."""
        return self._held.is_lost

    @property
    def in_jeopardy(self) -> bool:
        """The session is in jeopardy: the lock may be lost; work needing it should pause."""
        return self._held.in_jeopardy

    def check(self) -> bool:
        """Whether the master still counts this acquisition as held (its sequencer valid)."""
        return _wait(self._reactor, self._held.check)

    def release(self) -> None:
        """Let go of the lock (by closing its handle); see `Held.release`."""
        _wait(self._reactor, self._held.release)


# ----------------------------------------------------------------------------- elections


class BlockingElection:
    """`Election`'s calls as blocking calls: one candidate (or observer) in the election
    held on file `path` of `cell`; `identity` is what it advertises once leader. See
    `chubbypy.client._election` for the pattern (the leader passes `sequencer` to what it
    leads, which checks it). `is_leader`, `sequencer` and `held` are read on the reactor
    thread, where the election changes, so they too raise `RuntimeError` there.
    """

    def __init__(
        self,
        cell: BlockingCell,
        path: str,
        identity: str,
        *,
        recampaign: bool = False,
        lock_delay_seconds: float = 0.0,
    ) -> None:
        self._reactor = cell.reactor
        self._election = Election(
            cell.twisted, path, identity, recampaign=recampaign,
            lock_delay_seconds=lock_delay_seconds,
        )  # fmt: skip
        self._held: BlockingHeld | None = None

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
        """This candidate leads now (as far as it knows: see `held.in_jeopardy`)."""
        return _get(self._reactor, lambda: self._election.is_leader)

    @property
    def sequencer(self) -> bytes | None:
        """The sequencer of the leadership held (None when not leader): pass it with every
        request to what the leader leads, which checks it."""
        return _get(self._reactor, lambda: self._election.sequencer)

    @property
    def held(self) -> BlockingHeld | None:
        """The leadership's lock while leader (its handle, `lost` event, jeopardy)."""
        return _get(self._reactor, self._wrap_held)

    def _wrap_held(self) -> BlockingHeld | None:
        held = self._election.held
        if held is None:
            return None
        if self._held is None or self._held.twisted is not held:
            self._held = BlockingHeld(held, self._reactor)
        return self._held

    @property
    def on_elected(self) -> list[Callable[[bytes], None]]:
        """Called with the sequencer when this candidate becomes leader, on the reactor
        thread: keep them quick, and do not call this blocking API from them."""
        return self._election.on_elected

    @property
    def on_deposed(self) -> list[Callable[[Exception | None], None]]:
        """Called when it stops being leader (with the `LockLost`, or None if it resigned),
        on the reactor thread, as `on_elected`."""
        return self._election.on_deposed

    def leader(self) -> str | None:
        """What the leader advertises; None if no one has led or the last resigned. See
        `Election.leader`."""
        return _wait(self._reactor, self._election.leader)

    def changes(self) -> BlockingStream[Leadership]:
        """This candidate's elections and depositions from now on."""
        return _follow(self._reactor, self._election.changes)

    def observe(self) -> BlockingStream[str | None]:
        """What the leader advertises, now and after each change; close it to stop."""
        return _follow(self._reactor, self._election.observe)

    # ------------------------------------------------------------------------- campaigning

    def campaign(self, timeout: float | None = None) -> bytes:
        """Wait until this candidate leads (for ever, or `timeout` seconds: `LockTimeout`),
        then advertise its identity; the leadership's sequencer. At once if it leads.

        Interrupted (Ctrl-C), the candidate resigns: the campaign stops, and a leadership
        won meanwhile is given up. `resign()` from another thread stops it too (it then
        raises `CancelledError`).
        """
        election = self._election
        return _wait(
            self._reactor,
            lambda: election.campaign(timeout),
            stop=lambda _: election.resign(),
            undo=lambda _: election.resign(),
        )

    def resign(self) -> None:
        """Stop leading (clear the file, let the lock go) or stop campaigning."""
        _wait(self._reactor, self._election.resign)

    def proclaim(self, value: str) -> None:
        """As leader, advertise `value` instead (fenced); `NotLeader` if not leader."""
        _wait(self._reactor, lambda: self._election.proclaim(value))


# ----------------------------------------------------------------------------- connecting


def connect(
    addresses_or_config: str | Sequence[str] | CellConfig,
    cell: str | None = None,
    **options: Any,
) -> BlockingCell:
    """A `BlockingCell` on the global reactor (started in a daemon thread if need be).

    `addresses_or_config` is a `CellConfig`, a list of replica addresses, or a string: the
    path of a cell's YAML file, or comma-separated addresses. With addresses, `cell` names
    the cell (required); with a configuration it must be None or match.

    `options` are `Cell`'s keyword arguments, among them: `timeout_seconds` (10: how long
    each operation may take, retries included), `request_timeout_seconds` (2: each attempt),
    `principal` and `token` (authenticate every connection; both or neither), `cache`
    (True: the session's consistent cache), `grace_seconds` (45: how long jeopardy is waited
    out before the session is given up), `idle_close_seconds` (60: a session with no open
    handle and no call for that long is closed; None: never), `name` (how this client
    introduces itself), and the retry pacing `backoff_initial_seconds`,
    `backoff_max_seconds`, `poll_seconds`.
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
        chosen = config
        made = _get(reactor, lambda: Cell.from_config(clock, chosen, **options))
    else:
        named = cast(str, cell)
        made = _get(reactor, lambda: Cell(clock, addresses, named, **options))
    return BlockingCell(made, reactor)
