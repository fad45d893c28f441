"""The Twisted client of a cell: finds the master, follows it, and writes exactly once.

Shell (STYLE §1, §6). `Cell` keeps one `ReplicaConnection` per replica it has talked to and
turns each call (`get_stat`, `create`, ...) into requests to the master, retried until the
operation's deadline. It chooses where to send and when to retry; the replicas decide the
rest.

Theory of operation.

* **Finding the master.** Any replica answers `LocateMaster` with the master's id (None
  during an election) and every member's address. The client asks all the replicas it
  knows at once and follows the first answer that names a master; the member list maps
  ids to addresses, so the client learns the whole cell from one seed address.
* **Following it.** Every request goes to the believed master. A `NOT_MASTER` reply that
  names another replica redirects at once; without a hint, or after a connection failure or
  timeout, the client forgets the master, pauses (exponential back-off with jitter, so
  clients that failed together do not retry together) and locates again. While some
  replica has answered within the last `ALIVE_SECONDS`, the cell is up and only its master
  is missing (an election, or replicas still naming a master that just died): the pause is
  then capped at `poll_seconds` (default 0.1 s), so a client sees the new master within
  that of its election instead of after a doubled back-off; when no replica answers, the
  back-off grows to `backoff_max_seconds`, so a dead cell is not hammered. `EPOCH_CHANGED`,
  `BUSY` and `UNAVAILABLE` are retried the same way. Each operation has a deadline
  (`timeout_seconds`); when the next pause would pass it the operation fails with
  `Unavailable`, naming the last problem seen. Each attempt waits at most
  `request_timeout_seconds` (less if the deadline is nearer).
* **Writing exactly once.** Before its first write the client registers with a random
  63-bit nonce (a retried registration with the same nonce gets the same client id). Writes
  then go one at a time, numbered 1, 2, 3, ...: every attempt of a write, on whatever master,
  carries the same `(client_id, sequence)`, so the cell applies it once and answers a
  retry with the first result. `first_unacked` is the write's own sequence, because no
  earlier write will be retried. A sequence is never reused, even for a write that ended
  in `Unavailable` (its outcome is unknown: it may still be applied), so sequences can
  have gaps. `UNKNOWN_CLIENT` means the cell forgot this client: the write's outcome is
  unknown, so it is raised to the caller, and the next write registers again.
* **Errors.** Operating errors (`NoSuchNode`, `NodeExists`, `GenerationMismatch`, ...) raise
  the `chubbypy.protocol.errors` class of their code, whether the log decided them (a
  `Failure` result) or the replica did (an `ErrorReply`).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import socket
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar, cast

from attrs import frozen
from twisted.internet.defer import (
    Deferred,
    DeferredLock,
    FailureGroup,
    TimeoutError,
    fail,
    gatherResults,
    maybeDeferred,
    race,
    succeed,
)
from twisted.internet.endpoints import clientFromString, connectProtocol
from twisted.internet.interfaces import IReactorTCP, IReactorTime, IStreamClientEndpoint
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure as TwistedFailure

from chubbypy.client._addresses import client_endpoint_string, display_address
from chubbypy.client._connection import (
    FRAME_BYTES_MAX_DEFAULT,
    MakeRequest,
    ReplicaConnection,
)
from chubbypy.client._errors import CellClosed, ReplicaUnreachable
from chubbypy.client._state import SessionState
from chubbypy.client._streams import EventStream, guarded
from chubbypy.protocol.client import (
    CELL_CHARS_MAX,
    INT64_MAX,
    NAME_CHARS_MAX,
    ErrorReply,
    LocateMaster,
    MasterLocation,
    ReadReply,
    ReadRequest,
    Register,
    Registered,
    ReplicaStatus,
    RequestId,
    ServerReply,
    StatusReply,
    StatusRequest,
    WriteReply,
    WriteRequest,
)
from chubbypy.protocol.errors import (
    ChubbyError,
    ErrorCode,
    Failure,
    InternalError,
    PermissionDenied,
    Unavailable,
    UnknownClient,
    UnsupportedVersion,
    WrongCell,
    error_for,
)
from chubbypy.protocol.namespace import (
    AclNames,
    Contents,
    Create,
    Delete,
    DirEntry,
    GetContentsAndStat,
    GetStat,
    Listing,
    MultiOp,
    MultiResult,
    Read,
    ReadDir,
    SetAcl,
    SetContents,
    SimpleWrite,
    Stat,
    Test,
    Write,
    WriteResult,
    Written,
)
from chubbypy.protocol.session import (
    SESSIONS_PAGE_MAX,
    ListSessions,
    SessionEvent,
    SessionInfo,
    SessionList,
)
from chubbypy.protocol.values import NO_SESSION, ClientId, ReplicaId
from chubbypy.protocol.wire import raise_for
from chubbypy.sessions import EventMask, HandleMode

if TYPE_CHECKING:
    from chubbypy.client._lock import Lock
    from chubbypy.client._session import Handle, Session
    from chubbypy.config import CellConfig

__all__ = ["Cell", "Dialer", "ReplicaReport", "endpoint_dialer"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

Dialer = Callable[[str, ReplicaConnection], "Deferred[Any]"]
"""Connects a protocol to the replica at a client endpoint description; fires once connected."""

RETRIED_CODES: Final = frozenset({ErrorCode.EPOCH_CHANGED, ErrorCode.BUSY, ErrorCode.UNAVAILABLE})
"""Errors that say "not now": the request had no effect, and the same request is retried."""
FINAL_CONNECT_ERRORS: Final = (WrongCell, UnsupportedVersion, PermissionDenied)
"""Refusals of the hello (or of the credentials): a configuration mistake that no retry
mends."""
REDIRECTS_MAX: Final = 3
ALIVE_SECONDS: Final = 1.0
"""A replica answered this recently: the cell is up, so retries poll (see the module notes)."""
"""NOT_MASTER hints followed in a row without a pause (hints can chase each other during an
election; then back-off takes over)."""
PAGE_ENTRIES: Final = 1000
"""Entries asked for per page by `list_dir` (the cell clamps it to its own maximum)."""


# Twisted leaves these two unannotated; their documented types, for mypy --strict.
_client_from_string = cast(Callable[[object, str], IStreamClientEndpoint], clientFromString)
_connect_protocol = cast(
    Callable[[IStreamClientEndpoint, ReplicaConnection], "Deferred[Any]"], connectProtocol
)


def endpoint_dialer(reactor: IReactorTCP) -> Dialer:
    """The usual `Dialer`: Twisted's `clientFromString` endpoints on `reactor`."""

    def dial(address: str, protocol: ReplicaConnection) -> Deferred[Any]:
        return _connect_protocol(_client_from_string(reactor, address), protocol)

    return dial


def default_client_name() -> str:
    """How this process introduces itself to replicas (their logs show it)."""
    return f"chubbypy@{socket.gethostname()}:{os.getpid()}"[:NAME_CHARS_MAX]


@frozen
class ReplicaReport:
    """One replica as `Cell.status` found it: its status, or why it could not be asked."""

    address: str
    """The client endpoint description the client used."""
    replica_id: ReplicaId | None
    """None if the replica never answered and no other replica named it."""
    status: ReplicaStatus | None
    problem: str | None
    """Why `status` is None: the connection or request failure."""

    @property
    def reachable(self) -> bool:
        """The replica answered."""
        return self.status is not None


class Cell:
    """A client of one Chubby cell, over Twisted; every operation returns a Deferred.

    `reactor` provides the clock (`IReactorTime`) and, unless `dialer` is given, the TCP
    connections (`IReactorTCP`). `addresses` are any replicas of cell `cell`, in any of the
    spellings `client_endpoint_string` accepts; one reachable replica is enough, the others
    are learned from it. `Cell.from_config` takes them from a cell's YAML instead.

    `timeout_seconds` bounds each operation (after it, `Unavailable`);
    `request_timeout_seconds` bounds each attempt within it. Retries back off from
    `backoff_initial_seconds` to `backoff_max_seconds`, or to `poll_seconds` while the cell
    answers but has no master. `rng` draws the registration
    nonce and the back-off jitter. `frame_bytes_max` is the cell's ``limits.frame_bytes_max``.
    `principal` and `token` authenticate every connection (the cell's ``auth.principals``);
    without them the client acts as ``anonymous``, if the cell allows it.
    Nothing connects until the first operation.

    Handles, locks and events need a session (Chubby §2.8): the cell opens one at the first
    `open` (see `session`), keeps it alive with KeepAlives, and opens a new one after an
    expiry. `cache` turns its consistent cache on or off; `grace_seconds` is how long it
    waits out jeopardy before giving the session up; `clock_drift_max` at least the cell's
    ``paxos.clock_drift_max``; `idle_close_seconds` closes a session with no open handle
    and no call for that long (None: never).
    """

    log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        addresses: Sequence[str],
        cell: str,
        *,
        timeout_seconds: float = 10.0,
        request_timeout_seconds: float = 2.0,
        backoff_initial_seconds: float = 0.05,
        backoff_max_seconds: float = 1.0,
        poll_seconds: float = 0.1,
        name: str | None = None,
        frame_bytes_max: int = FRAME_BYTES_MAX_DEFAULT,
        rng: random.Random | None = None,
        dialer: Dialer | None = None,
        principal: str | None = None,
        token: str | None = None,
        cache: bool = True,
        grace_seconds: float = 45.0,
        clock_drift_max: float = 0.01,
        idle_close_seconds: float | None = 60.0,
    ) -> None:
        if (principal is None) != (token is None):
            raise ValueError("give both a principal and its token, or neither")
        if isinstance(addresses, str) or not addresses:
            raise ValueError("expected a non-empty list of replica addresses")
        if not 1 <= len(cell) <= CELL_CHARS_MAX:
            raise ValueError(f"cell name {cell!r} must have 1 to {CELL_CHARS_MAX} characters")
        if request_timeout_seconds <= 0 or timeout_seconds <= 0:
            raise ValueError("timeouts must be positive")
        self.cell = cell
        self._clock = reactor
        self._seeds = tuple(dict.fromkeys(client_endpoint_string(a) for a in addresses))
        self._timeout_seconds = timeout_seconds
        self._request_timeout_seconds = request_timeout_seconds
        self._backoff_initial_seconds = backoff_initial_seconds
        self._backoff_max_seconds = backoff_max_seconds
        self._poll_seconds = poll_seconds
        self._answered_at = -math.inf
        """When a replica last answered (any reply): the cell is up."""
        self._name = name or default_client_name()
        self._credentials = None if principal is None or token is None else (principal, token)
        self._frame_bytes_max = frame_bytes_max
        self._rng = rng or random.Random()
        self._dialer = dialer or endpoint_dialer(_tcp_reactor(reactor))
        self._members: dict[ReplicaId, str] = {}
        self._master: str | None = None
        self._connections: dict[str, ReplicaConnection] = {}
        self._nonce = self._new_nonce()
        self._client_id: ClientId | None = None
        self._next_sequence = 1
        self._write_lock = DeferredLock()
        self._operations: set[Deferred[Any]] = set()
        self._closed = False
        self._session_options: dict[str, Any] = dict(
            cache=cache, grace_seconds=grace_seconds, clock_drift_max=clock_drift_max,
            idle_close_seconds=idle_close_seconds,
        )  # fmt: skip
        self._session: Session | None = None
        self._session_waiters: list[Deferred[Session]] = []
        self._closing = False
        self.on_state: list[Callable[[SessionState], None]] = []
        """Called with each state change of the cell's session (on the reactor thread);
        after an expiry, the next session's CONNECTED follows."""
        self.on_event: list[Callable[[SessionEvent], None]] = []
        """Called with each event of the cell's session, in order (reactor thread)."""
        self._state_streams: list[EventStream[SessionState]] = []
        self._event_streams: list[EventStream[SessionEvent]] = []

    @property
    def timeout_seconds(self) -> float:
        """How long each operation may take, retries included."""
        return self._timeout_seconds

    @classmethod
    def from_config(cls, reactor: IReactorTime, config: CellConfig, **options: Any) -> Cell:
        """A client of the cell `config` describes (its replicas' ``client`` endpoints);
        `options` are the constructor's keyword arguments."""
        options.setdefault("frame_bytes_max", config.limits.frame_bytes_max)
        addresses = [replica.client for replica in config.replicas]
        return cls(reactor, addresses, config.cell, **options)

    # ------------------------------------------------------------------------- reads

    def get_contents_and_stat(self, path: str) -> Deferred[Contents]:
        """A file's whole contents and its metadata (Chubby's GetContentsAndStat)."""
        return self._run(self._read, GetContentsAndStat(path), Contents)

    def get_stat(self, path: str) -> Deferred[Stat]:
        """A node's metadata (Chubby's GetStat)."""
        return self._run(self._read, GetStat(path), Stat)

    def read_dir(self, path: str, after: str = "", limit: int = PAGE_ENTRIES) -> Deferred[Listing]:
        """One page of a directory's children in name order: those after `after`, at most
        `limit` (clamped by the cell). `Listing.more` says whether more follow."""
        return self._run(self._read, ReadDir(path, after, limit), Listing)

    def list_dir(self, path: str) -> Deferred[tuple[DirEntry, ...]]:
        """Every child of a directory, in name order, paging through `read_dir`.

        Each page is a read of its own (with its own deadline), so a directory changing
        meanwhile may show a child added or removed between pages.
        """
        return self._run(self._list_dir, path)

    # ------------------------------------------------------------------------- writes

    def create(
        self,
        path: str,
        contents: bytes = b"",
        *,
        directory: bool = False,
        acl: AclNames | None = None,
        ephemeral: bool = False,
    ) -> Deferred[Stat]:
        """Create a file (or, with `directory`, a directory) whose parent exists; its
        metadata. ACL names default to the parent's. `NodeExists` if the name is taken.
        An `ephemeral` node belongs to a session and is deleted when it ends; this client
        has no session yet, so the cell answers `SessionRequired` (sessions: issue 4)."""
        create = Create(path, directory, contents, acl, ephemeral)
        return self._run(self._write_stat, create)

    # ------------------------------------------------------------------------- sessions

    def session(self) -> Deferred[Session]:
        """The cell's session: opened on first use, and again once the last one ended
        (expired or closed). Its state changes and events reach `on_state`, `on_event`,
        `states()` and `events()` of the cell."""
        current = self._session
        if current is not None and not current.state.final and not current._closing:
            return succeed(current)
        if self._closing:
            return fail(CellClosed(f"the client of cell {self.cell!r} is closing"))
        waiting: Deferred[Session] = Deferred()
        self._session_waiters.append(waiting)
        if len(self._session_waiters) == 1:
            self._run(self._open_session).addBoth(self._session_opened)
        return waiting

    async def _open_session(self) -> Session:
        from chubbypy.client._session import Session  # it builds on this module

        made = await Session.open(self, self._clock, name=self._name, **self._session_options)
        made.on_state.append(self._session_state)
        made.on_event.append(self._session_event)
        self._session = made
        self._session_state(SessionState.CONNECTED)
        return made

    def _session_opened(self, result: Session | TwistedFailure) -> None:
        waiters, self._session_waiters = self._session_waiters, []
        for waiter in waiters:
            if isinstance(result, TwistedFailure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    @property
    def state(self) -> SessionState | None:
        """The state of the cell's session; None before the first."""
        return None if self._session is None else self._session.state

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
    ) -> Deferred[Handle]:
        """A `Handle` on `path` in the cell's session (Chubby's Open).

        `mode` is what the handle may do (`HandleMode.READ`, `WRITE`, `CHANGE_ACL`),
        checked against the node's ACLs now. `events` (an `EventMask`) are the events it
        hears of. With `create`, a missing node is created: a file with `contents` (or a
        `directory`), with `acl` names (else its parent's), `ephemeral` (deleted when the
        session ends); with `exclusive` it must be new (`NodeExists`).
        `lock_delay_seconds` (at most 60) keeps the lock from others for that long when this
        session is lost holding it (Chubby §2.4). `NoSuchNode` if missing and not created.
        """

        async def opening() -> Handle:
            session = await self.session()
            handle: Handle = await session.open_handle(
                path, mode=mode, events=int(events), lock_delay_seconds=lock_delay_seconds,
                create=create, contents=contents, ephemeral=ephemeral, exclusive=exclusive,
                directory=directory, acl=acl,
            )  # fmt: skip
            return handle

        return self._run(opening)

    def check_sequencer(self, sequencer: bytes) -> Deferred[bool]:
        """Whether `sequencer` still names a lock held in its mode at the generation it
        names: what a server handed a sequencer asks before acting on it (Chubby §2.4)."""

        async def checking() -> bool:
            session = await self.session()
            valid: bool = await session.check_sequencer(sequencer)
            return valid

        return self._run(checking)

    def list_sessions(self) -> Deferred[tuple[SessionInfo, ...]]:
        """Every session of the cell in id order, as the master sees it: name, state,
        lease, handles, locks held and ephemeral files owned (an operator's query; the
        principal needs read access to the cell's root, else `PermissionDenied`).

        It pages through the master's listing, a call per page, so a session opened or
        ended meanwhile may be missing or listed although gone. It needs no session.
        """

        async def listing() -> tuple[SessionInfo, ...]:
            from chubbypy.client._session import _call  # it builds on this module

            sessions: list[SessionInfo] = []
            after = NO_SESSION
            while True:
                result = await _call(self, ListSessions(after, SESSIONS_PAGE_MAX))
                page = _expect(result, SessionList)
                sessions.extend(page.sessions)
                # A page that says "more" but lists nothing would repeat forever.
                if not page.more or not page.sessions:
                    return tuple(sessions)
                after = page.sessions[-1].session_id

        return self._run(listing)

    def lock(
        self,
        path: str,
        *,
        timeout: float | None = None,
        shared: bool = False,
        lock_delay_seconds: float = 0.0,
        create: bool = True,
    ) -> Lock:
        """The lock of file `path`, to hold with ``async with`` (or `Lock.acquire`): see
        `chubbypy.client.Lock`. It waits for ever, or `timeout` seconds (`LockTimeout`);
        `shared` for a reader's lock; the file is created if missing unless not `create`."""
        from chubbypy.client._lock import Lock

        return Lock(self, path, timeout=timeout, shared=shared, create=create,
                    lock_delay_seconds=lock_delay_seconds)  # fmt: skip

    def states(self) -> EventStream[SessionState]:
        """The cell's session states from now on, as an async iterator (it follows the
        cell to its next session after an expiry; it ends when the cell is closed)."""
        stream: EventStream[SessionState] = EventStream(lambda: self._state_streams.remove(stream))
        self._state_streams.append(stream)
        return stream

    def events(self) -> EventStream[SessionEvent]:
        """Every event of the cell's sessions from now on, as an async iterator (it ends
        when the cell is closed)."""
        stream: EventStream[SessionEvent] = EventStream(lambda: self._event_streams.remove(stream))
        self._event_streams.append(stream)
        return stream

    def _session_state(self, state: SessionState) -> None:
        for callback in list(self.on_state):
            guarded(callback, state, "an on_state callback of the cell")
        for stream in list(self._state_streams):
            stream.push(state)

    def _session_event(self, event: SessionEvent) -> None:
        for callback in list(self.on_event):
            guarded(callback, event, "an on_event callback of the cell")
        for stream in list(self._event_streams):
            stream.push(event)

    def set_contents(
        self, path: str, contents: bytes, expected_generation: int | None = None
    ) -> Deferred[Stat]:
        """Replace a file's contents; only if its content generation is
        `expected_generation`, when given (else `GenerationMismatch`). Its new metadata."""
        return self._run(self._write_stat, SetContents(path, contents, expected_generation))

    def delete(self, path: str, expected_instance: int | None = None) -> Deferred[None]:
        """Delete a file or an empty directory; only if its instance is `expected_instance`,
        when given, so a re-created node of the same name is never deleted by mistake."""
        return self._run(self._delete, Delete(path, expected_instance))

    def set_acl(
        self, path: str, acl: AclNames, expected_generation: int | None = None
    ) -> Deferred[Stat]:
        """Replace a node's ACL names; only if its ACL generation is `expected_generation`,
        when given. Its new metadata."""
        return self._run(self._write_stat, SetAcl(path, acl, expected_generation))

    def multi_op(
        self,
        guard: Sequence[Test],
        if_true: Sequence[SimpleWrite],
        if_false: Sequence[SimpleWrite] = (),
    ) -> Deferred[MultiResult]:
        """Atomically: if every test in `guard` holds apply `if_true`, else `if_false`.

        All of the chosen branch applies or none does (`GuardFailed` names the operation
        that failed). The result says which branch ran and each operation's result.
        """
        multi_op = MultiOp(tuple(guard), tuple(if_true), tuple(if_false))
        return self._run(self._multi_op, multi_op)

    # ------------------------------------------------------------------------- the cell

    def locate_master(self) -> Deferred[MasterLocation]:
        """Where the master is, and every member's address, retried until a replica names a
        master or the deadline passes (`Unavailable`)."""
        return self._run(self._locate_master)

    def status(self, replica: str | None = None) -> Deferred[tuple[ReplicaReport, ...]]:
        """Every replica's own status, asked of each directly, in the cell's order; replicas
        that could not be asked are reported with the problem. `replica` (an id or an
        address) asks only that one; `ValueError` if the cell has no such replica."""
        return self._run(self._status, replica)

    def close(self) -> Deferred[None]:
        """End the cell's session (its locks released, its ephemeral files deleted), cancel
        every operation in progress and close every connection; fires once they are
        closed. Later operations fail with `CellClosed`."""
        if self._closed:
            return succeed(None)
        self._closing = True  # no new session now (a recampaign would ask for one)
        session = self._session

        async def closing() -> None:
            if session is not None and not session.state.final:
                with contextlib.suppress(Exception):  # it ends at its lease anyway
                    await session.close()
            self._closed = True
            for operation in list(self._operations):
                operation.cancel()
            for states in list(self._state_streams):
                states.end()
            for events in list(self._event_streams):
                events.end()
            connections = list(self._connections.values())
            for connection in connections:
                connection.close()
            await gatherResults([c.when_closed() for c in connections])

        return Deferred.fromCoroutine(closing())

    # ------------------------------------------------------------------------- operations

    def _run(
        self, function: Callable[_P, Coroutine[Any, Any, _T]], *args: _P.args, **kw: _P.kwargs
    ) -> Deferred[_T]:
        """Start one operation, tracked so that `close` can cancel it."""
        if self._closed:
            return fail(CellClosed(f"the client of cell {self.cell!r} is closed"))
        operation = Deferred.fromCoroutine(function(*args, **kw))
        if not operation.called:
            self._operations.add(operation)
            operation.addBoth(self._operation_ended, operation)
        return operation

    def _operation_ended(self, result: _T, operation: Deferred[Any]) -> _T:
        self._operations.discard(operation)
        return result

    async def _read(self, read: Read, kind: type[_T]) -> _T:
        reply = await self._call_master(lambda rid: ReadRequest(rid, read), self._deadline())
        if not isinstance(reply, ReadReply):
            raise _unexpected(reply, "a read")
        return _expect(reply.result, kind)

    async def _list_dir(self, path: str) -> tuple[DirEntry, ...]:
        entries: list[DirEntry] = []
        after = ""
        while True:
            listing = await self._read(ReadDir(path, after, PAGE_ENTRIES), Listing)
            entries.extend(listing.entries)
            # A page that says "more" but lists nothing would repeat forever; stop instead.
            if not listing.more or not listing.entries:
                return tuple(entries)
            after = listing.entries[-1].name

    async def _write_stat(self, write: Write) -> Stat:
        written = _expect(await self._write(write), Written)
        if written.stat is None:
            raise InternalError(f"the cell returned no metadata for {write!r:.200}")
        return written.stat

    async def _delete(self, delete: Delete) -> None:
        _expect(await self._write(delete), Written)

    async def _multi_op(self, multi_op: MultiOp) -> MultiResult:
        return _expect(await self._write(multi_op), MultiResult)

    async def _write(self, write: Write) -> WriteResult:
        """One write, exactly once, after every earlier write of this client has finished."""
        deadline = self._deadline()
        acquiring = self._write_lock.acquire()
        acquiring.addTimeout(self._timeout_seconds, self._clock)
        try:
            await acquiring
        except TimeoutError:
            raise Unavailable(
                f"earlier writes of this client did not finish within {self._timeout_seconds:g} s"
            ) from None
        try:
            return await self._write_locked(write, deadline)
        finally:
            self._write_lock.release()

    async def _write_locked(self, write: Write, deadline: float) -> WriteResult:
        client_id = await self._register(deadline)
        sequence = self._next_sequence
        self._next_sequence += 1  # never reused, whatever becomes of this write

        def make(request_id: RequestId) -> WriteRequest:
            # The same (client_id, sequence) on every attempt, whichever replica is master.
            return WriteRequest(request_id, client_id, sequence, sequence, write)

        try:
            reply = await self._call_master(make, deadline)
        except UnknownClient:
            self._client_id, self._nonce = None, self._new_nonce()
            raise
        if not isinstance(reply, WriteReply):
            raise _unexpected(reply, "a write")
        return reply.result

    async def _register(self, deadline: float) -> ClientId:
        """This client's id, registering first if it has none (retries reuse the nonce)."""
        if self._client_id is None:
            nonce = self._nonce
            reply = await self._call_master(lambda rid: Register(rid, nonce), deadline)
            if not isinstance(reply, Registered):
                raise _unexpected(reply, "a registration")
            self._client_id, self._next_sequence = reply.client_id, 1
        return self._client_id

    async def _locate_master(self) -> MasterLocation:
        deadline = self._deadline()
        pauses = 0
        while True:
            try:
                return await self._ask_any(deadline, need_master=True)
            except ReplicaUnreachable as error:
                pauses += 1
                await self._pause(pauses, deadline, str(error))

    async def _status(self, replica: str | None) -> tuple[ReplicaReport, ...]:
        deadline = self._deadline()
        # Learn every member's address; each replica's own failure is reported below.
        with contextlib.suppress(ReplicaUnreachable, ChubbyError):
            await self._ask_any(deadline, need_master=False)
        targets = self._status_targets(replica)
        asking = [Deferred.fromCoroutine(self._status_at(a, deadline)) for a in targets]
        return tuple(await gatherResults(asking))

    async def _status_at(self, address: str, deadline: float) -> ReplicaReport:
        try:
            connection = await self._open(address, deadline)
            reply = await connection.request(StatusRequest, self._attempt_seconds(deadline))
        except (ReplicaUnreachable, ChubbyError) as error:
            return ReplicaReport(address, self._replica_id_of(address), None, _describe(error))
        if isinstance(reply, ErrorReply):
            problem = f"{reply.code.name}: {reply.message}"
            return ReplicaReport(address, connection.replica_id, None, problem)
        if not isinstance(reply, StatusReply):
            problem = f"unexpected {type(reply).__name__}"
            return ReplicaReport(address, connection.replica_id, None, problem)
        return ReplicaReport(address, reply.status.replica_id, reply.status, None)

    # ------------------------------------------------------------------------- the master

    async def _call_master(
        self, make: MakeRequest, deadline: float, attempt_seconds: float | None = None
    ) -> ServerReply:
        """The master's reply to `make(request_id)`, retried until one that is not "retry
        elsewhere or later"; an ErrorReply of another kind is raised as its ChubbyError.
        `attempt_seconds` overrides how long one attempt may wait (a call the master holds
        on purpose, such as a KeepAlive or a blocking acquire, waits longer)."""
        pauses = redirects = 0
        problem = ""
        while True:
            address = self._master
            try:
                address = address or await self._locate(deadline)
                connection = await self._open(address, deadline)
                attempt = self._attempt_seconds(deadline)
                if attempt_seconds is not None:
                    attempt = min(attempt_seconds, max(deadline - self._clock.seconds(), 0.001))
                reply = await connection.request(make, attempt)
            except Unavailable as error:
                if not problem:
                    raise
                raise Unavailable(f"{error.message}; last problem: {problem}") from None
            except ReplicaUnreachable as error:
                self._forget_master(address)
                problem = str(error)
            else:
                self._answered_at = self._clock.seconds()
                if not isinstance(reply, ErrorReply):
                    return reply
                problem = f"{display_address(address)}: {reply.code.name}: {reply.message}"
                if reply.code is ErrorCode.NOT_MASTER:
                    if self._follow_hint(address, reply.master_hint) and redirects < REDIRECTS_MAX:
                        redirects += 1
                        continue
                elif reply.code not in RETRIED_CODES:
                    raise_for(reply)
            pauses, redirects = pauses + 1, 0
            await self._pause(pauses, deadline, problem)

    def _follow_hint(self, address: str, hint: ReplicaId | None) -> bool:
        """Believe the replica at `address` that the master is `hint`; whether that names
        another replica to try at once."""
        hinted = None if hint is None else self._members.get(hint)
        self._master = hinted if hinted != address else None
        return self._master is not None

    def _forget_master(self, address: str | None) -> None:
        if address is not None and self._master == address:
            self._master = None

    async def _locate(self, deadline: float) -> str:
        location = await self._ask_any(deadline, need_master=True)
        assert location.master is not None
        self._master = self._members[location.master]
        return self._master

    async def _ask_any(self, deadline: float, *, need_master: bool) -> MasterLocation:
        """The first `MasterLocation` from any known replica (asked all at once) that names a
        master, if `need_master`. `ReplicaUnreachable` with every replica's problem if none
        does, or the hello's refusal if a replica refused it."""
        addresses = self._known_addresses()
        asking = [
            Deferred.fromCoroutine(self._ask_location(a, deadline, need_master)) for a in addresses
        ]
        try:
            _, location = await race(asking)
        except FailureGroup as group:
            errors = [f.value for f in group.failures if isinstance(f.value, Exception)]
            for error in errors:
                if isinstance(error, FINAL_CONNECT_ERRORS):
                    raise error from None
            raise ReplicaUnreachable("; ".join(_describe(e) for e in errors)) from None
        return location

    async def _ask_location(
        self, address: str, deadline: float, need_master: bool
    ) -> MasterLocation:
        connection = await self._open(address, deadline)
        reply = await connection.request(LocateMaster, self._attempt_seconds(deadline))
        self._answered_at = self._clock.seconds()
        shown = display_address(address)
        if isinstance(reply, ErrorReply):
            raise ReplicaUnreachable(f"{shown}: {reply.code.name}: {reply.message}")
        if not isinstance(reply, MasterLocation):
            raise ReplicaUnreachable(f"{shown}: unexpected {type(reply).__name__}")
        self._learn_members(reply)
        if need_master and (reply.master is None or reply.master not in self._members):
            raise ReplicaUnreachable(f"{shown}: knows no master (an election may be under way)")
        return reply

    def _learn_members(self, location: MasterLocation) -> None:
        """Every member's address, in the cell's order (then any the reply left out)."""
        learned: dict[ReplicaId, str] = {}
        for member in location.replicas:
            try:
                learned[member.replica_id] = client_endpoint_string(member.client_endpoint)
            except ValueError:
                continue  # an address this client cannot use; the others may do
        others = {rid: a for rid, a in self._members.items() if rid not in learned}
        self._members = {**learned, **others}

    # ------------------------------------------------------------------------- connections

    async def _open(self, address: str, deadline: float) -> ReplicaConnection:
        """The welcomed connection to `address`, connecting first if there is none."""
        connection = self._connections.get(address)
        if connection is None or connection.is_closed:
            connection = ReplicaConnection(
                self._clock,
                address,
                self.cell,
                self._name,
                frame_bytes_max=self._frame_bytes_max,
                credentials=self._credentials,
            )
            self._connections[address] = connection
            connection.when_closed().addCallback(self._connection_closed, address, connection)
            # maybeDeferred: an endpoint description Twisted cannot parse fails this connection
            # (with the reason) like a refused one, instead of escaping from the operation.
            connection.dial(maybeDeferred(self._dialer, address, connection))
        await connection.when_welcomed(self._attempt_seconds(deadline))
        if connection.replica_id is not None:
            self._members.setdefault(connection.replica_id, address)
        return connection

    def _connection_closed(self, _: None, address: str, connection: ReplicaConnection) -> None:
        if self._connections.get(address) is connection:
            del self._connections[address]

    def _known_addresses(self) -> list[str]:
        return list(dict.fromkeys([*self._members.values(), *self._seeds]))

    def _status_targets(self, replica: str | None) -> list[str]:
        targets = self._known_addresses()
        if replica is None:
            return targets
        if ReplicaId(replica) in self._members:
            return [self._members[ReplicaId(replica)]]
        try:
            address = client_endpoint_string(replica)
        except ValueError:
            address = replica
        if address in targets:
            return [address]
        known = ", ".join([*self._members, *(display_address(t) for t in self._seeds)])
        raise ValueError(f"no replica {replica!r} in cell {self.cell!r}; known: {known}")

    def _replica_id_of(self, address: str) -> ReplicaId | None:
        return next((rid for rid, a in self._members.items() if a == address), None)

    # ------------------------------------------------------------------------- time

    def _deadline(self) -> float:
        return self._clock.seconds() + self._timeout_seconds

    def _attempt_seconds(self, deadline: float) -> float:
        """How long one attempt may wait: the request timeout, or less near the deadline."""
        remaining = deadline - self._clock.seconds()
        if remaining <= 0:
            raise Unavailable(f"no master answered within {self._timeout_seconds:g} s")
        return min(self._request_timeout_seconds, remaining)

    async def _pause(self, pauses: int, deadline: float, problem: str) -> None:
        """Wait before retrying, longer after each failure; `Unavailable` if the wait would
        pass the deadline."""
        now = self._clock.seconds()
        cap = self._backoff_max_seconds
        if now - self._answered_at < ALIVE_SECONDS:
            cap = min(cap, self._poll_seconds)
        delay = min(cap, self._backoff_initial_seconds * 2 ** min(pauses - 1, 30))
        # Jitter: clients that failed at the same moment retry at different ones.
        delay *= 0.5 + 0.5 * self._rng.random()
        if now + delay >= deadline:
            raise Unavailable(
                f"no master answered within {self._timeout_seconds:g} s; last problem: {problem}"
            )
        sleeping: Deferred[None] = deferLater(self._clock, delay)
        await sleeping

    def _new_nonce(self) -> int:
        return self._rng.randint(1, INT64_MAX)


def _tcp_reactor(reactor: IReactorTime) -> IReactorTCP:
    if not IReactorTCP.providedBy(reactor):
        raise TypeError(f"{reactor!r} cannot make TCP connections: pass a dialer")
    return reactor


def _expect(result: object, kind: type[_T]) -> _T:
    """`result` as a `kind`; a `Failure` result raises its ChubbyError."""
    if isinstance(result, Failure):
        raise error_for(result.code, result.message)
    if not isinstance(result, kind):
        raise InternalError(f"expected a {kind.__name__} result, got {type(result).__name__}")
    return result


def _unexpected(reply: ServerReply, what: str) -> InternalError:
    return InternalError(f"unexpected {type(reply).__name__} in answer to {what}")


def _describe(error: BaseException) -> str:
    if isinstance(error, ChubbyError):
        return f"{error.code.name}: {error.message}"
    return str(error) or type(error).__name__
