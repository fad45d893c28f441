"""The Twisted client of a cell without sessions: connections, the master, exactly-once writes.

Shell (STYLE §1, §6). `PlainCell` keeps one `ReplicaConnection` per replica it has talked
to and carries each call (`get_stat`, `create`, ...) to the master. Where to send, what to
retry and how long to wait are the pure `chubbypy.client._calls.MasterCall`'s decisions;
this module only does its steps: connect and send, ask every replica where the master is,
sleep, until the call is finished or failed. `chubbypy.client.Cell` adds sessions on top.

Theory of operation (the retry rules themselves are in `chubbypy.client._calls`).

* **Writing exactly once.** Before its first write the client registers with a random
  63-bit nonce (a retried registration with the same nonce gets the same client id, and
  the client's credential, which every write shows: the id alone is worth nothing). Writes
  then go one at a time, numbered 1, 2, 3, ...: every attempt of a write, on whatever master,
  carries the same `(client_id, sequence)`, so the cell applies it once and answers a
  retry with the first result. `first_unacked` is the write's own sequence, because no
  earlier write will be retried. A sequence is never reused, even for a write that ended
  in `Unavailable` (its outcome is unknown: it may still be applied), so sequences can
  have gaps.
* **After an eviction.** The cell keeps at most ``paxos.clients_max`` clients and evicts
  the least recently used: a write answered `UNKNOWN_CLIENT` finds this client forgotten.
  That answer says the attempt it answers was not applied. If it was the write's only
  attempt, nothing of it was applied: the client registers again (a new id, a new
  credential, sequences from 1), says so in its log, and sends the write again; the
  caller never sees UNKNOWN_CLIENT. If an earlier attempt went out (a retry after a
  time-out or a fail-over), that one may have been applied before the eviction, and the
  cell can no longer tell: sending it again could apply it twice, so the write fails
  `OutcomeUnknown` (an `Unavailable`) and the client registers again for the next one.
* **Errors.** Operating errors (`NoSuchNode`, `NodeExists`, `GenerationMismatch`, ...) raise
  the `chubbypy.protocol.errors` class of their code, whether the log decided them (a
  `Failure` result) or the replica did (an `ErrorReply`).
* **Closing** cancels every operation and closes every connection; a call still on its
  way (a session's KeepAlive) fails `CellClosed` at its next step, and nothing connects
  again.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Final, ParamSpec, Self, TypeVar, assert_never, cast

from attrs import frozen
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.defer import (
    Deferred,
    DeferredLock,
    TimeoutError,
    fail,
    gatherResults,
    maybeDeferred,
    succeed,
)
from twisted.internet.endpoints import clientFromString, connectProtocol
from twisted.internet.interfaces import IReactorTCP, IReactorTime, IStreamClientEndpoint
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure as TwistedFailure

from chubbypy.client._addresses import client_endpoint_string, display_address
from chubbypy.client._calls import (
    AskLocations,
    CallSettings,
    CallStep,
    CellView,
    Failed,
    Finished,
    LocationRound,
    MasterCall,
    Pause,
    SendRequest,
    SendTimes,
    describe,
)
from chubbypy.client._connection import (
    FRAME_BYTES_MAX_DEFAULT,
    MakeRequest,
    ReplicaConnection,
)
from chubbypy.client._errors import CellClosed, OutcomeUnknown, ReplicaUnreachable
from chubbypy.client._snapshot import SNAPSHOT_ATTEMPTS_MAX, CellSnapshot, SnapshotAssembly
from chubbypy.client._tls import TLS_KIND, load_trust, tls_endpoint
from chubbypy.paxos import Chance
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
    SessionReply,
    SessionRequest,
    StatusReply,
    StatusRequest,
    WriteReply,
    WriteRequest,
)
from chubbypy.protocol.errors import (
    ChubbyError,
    Failure,
    InternalError,
    SnapshotGone,
    Unavailable,
    UnknownClient,
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
    ChangeMembership,
    GetLockInfo,
    KillSession,
    ListMembers,
    ListSessions,
    LockInfo,
    MemberList,
    MembershipDone,
    MembershipStep,
    SessionCall,
    SessionEnding,
    SessionInfo,
    SessionList,
    SessionResult,
    SnapshotChunk,
)
from chubbypy.protocol.values import NO_SESSION, CallNumber, ClientId, ReplicaId, SessionId

if TYPE_CHECKING:
    from chubbypy.config import CellConfig

__all__ = [
    "PAGE_ENTRIES",
    "Dialer",
    "PlainCell",
    "ReplicaReport",
    "default_client_name",
    "endpoint_dialer",
]

_P = ParamSpec("_P")
_T = TypeVar("_T")

Dialer = Callable[[str, ReplicaConnection], "Deferred[Any]"]
"""Connects a protocol to the replica at a client endpoint description; fires once connected."""

PAGE_ENTRIES: Final = 1000
"""Entries asked for per page by `list_dir` (the cell clamps it to its own maximum)."""
REREGISTRATIONS_MAX: Final = 3
"""How often one write registers the client again after finding it evicted (each time its
one attempt was refused, not applied) before it gives up: evictions in a row mean a flood."""


# Twisted leaves these two unannotated; their documented types, for mypy --strict.
_client_from_string = cast(Callable[[object, str], IStreamClientEndpoint], clientFromString)
_connect_protocol = cast(
    Callable[[IStreamClientEndpoint, ReplicaConnection], "Deferred[Any]"], connectProtocol
)


def endpoint_dialer(reactor: IReactorTCP, trust: IOpenSSLTrustRoot | None = None) -> Dialer:
    """The usual `Dialer`: Twisted's `clientFromString` endpoints on `reactor`, and for
    ``ssl:`` ones TLS that verifies the replica's certificate against `trust` (default: the
    system's authorities) and the host name dialled (`chubbypy.client._tls`)."""

    def dial(address: str, protocol: ReplicaConnection) -> Deferred[Any]:
        if address.startswith(TLS_KIND):
            endpoint = tls_endpoint(reactor, address, trust or load_trust(None))
        else:
            endpoint = _client_from_string(reactor, address)
        return _connect_protocol(endpoint, protocol)

    return dial


def default_client_name() -> str:
    """How this process introduces itself to replicas (their logs show it)."""
    return f"chubbypy@{socket.gethostname()}:{os.getpid()}"[:NAME_CHARS_MAX]


class _RandomChance:
    """The core's `Chance` from a `random.Random`: real draws, and no rare paths."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def randint(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def buggify(self, site: str) -> bool:
        return False


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


class PlainCell:
    """The calls of a cell's client that need no session; see the module docstring and
    `chubbypy.client.Cell`, which takes the same options and adds sessions."""

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
        tls_ca: str | os.PathLike[str] | None = None,
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
        seeds = tuple(dict.fromkeys(client_endpoint_string(a) for a in addresses))
        self._view = CellView(seeds)
        self._settings = CallSettings(
            timeout_seconds, request_timeout_seconds, backoff_initial_seconds,
            backoff_max_seconds, poll_seconds,
        )  # fmt: skip
        self._name = name or default_client_name()
        self._credentials = None if principal is None or token is None else (principal, token)
        self._frame_bytes_max = frame_bytes_max
        self._rng = rng or random.Random()
        self._chance: Chance = _RandomChance(self._rng)
        if dialer is None:
            trust = load_trust(tls_ca) if tls_ca is not None else None
            dialer = endpoint_dialer(_tcp_reactor(reactor), trust)
        self._dialer = dialer
        self._connections: dict[str, ReplicaConnection] = {}
        self._nonce = self._new_nonce()
        self._client_id: ClientId | None = None
        self._credential = b""
        """The credential the registration gave: every write shows it."""
        self._next_sequence = 1
        self._write_lock = DeferredLock()
        self._operations: set[Deferred[Any]] = set()
        self._closed = False

    @property
    def timeout_seconds(self) -> float:
        """How long each operation may take, retries included."""
        return self._settings.timeout_seconds

    @classmethod
    def from_config(cls, reactor: IReactorTime, config: CellConfig, **options: Any) -> Self:
        """A client of the cell `config` describes (its replicas' ``client`` endpoints);
        `options` are the constructor's keyword arguments. ``ssl:`` endpoints are verified
        against the cell's CA (``tls.ca``) unless `tls_ca` says otherwise."""
        options.setdefault("frame_bytes_max", config.limits.frame_bytes_max)
        if config.tls is not None and any(r.client.startswith(TLS_KIND) for r in config.replicas):
            options.setdefault("tls_ca", config.secret_path(config.tls.ca))
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

    def list_sessions(self) -> Deferred[tuple[SessionInfo, ...]]:
        """Every session of the cell in id order, as the master sees it: name, state,
        lease, handles, locks held and ephemeral files owned (an operator's query: the
        cell's ACL ``admin``, the file ``acl/admin``, must admit the principal, else
        `PermissionDenied`).

        It pages through the master's listing, a call per page, so a session opened or
        ended meanwhile may be missing or listed although gone. It needs no session.
        """
        return self._run(self._list_sessions)

    def lock_info(self, path: str) -> Deferred[LockInfo]:
        """The lock of the node `path` as the master sees it (`LockInfo`): its mode
        ("free", "exclusive" or "shared"), its holders with their sessions' client names
        and principals, its lock generation (what a holder's sequencer names), its waiters
        in queue order with how long each has waited, and the rest of a lock-delay.

        The caller needs read permission on the node, as to read its contents (else
        `PermissionDenied`); `NoSuchNode` if there is none. At most the cell's
        ``sessions.lock_info_listed_max`` holders and waiters are listed; the counts say
        how many there are in all. It needs no session.
        """
        return self._run(self._lock_info, path)

    def end_session(self, session_id: int) -> Deferred[SessionEnding]:
        """End another client's session, as an operator: the cell's ACL ``admin`` (the file
        ``acl/admin``) must admit the principal, else `PermissionDenied` and nothing
        changes. It needs no session of the caller's.

        The master extends the session's lease no more, and its client is told at once
        (its KeepAlive is refused: the session expired, "ended by an operator"), so it
        learns it lost its locks. The session still holds them, and its ephemeral files,
        until the lease it has runs out, as if it had stopped sending KeepAlives: then it
        ends as expired, its files are deleted and its locks are freed after their
        lock-delay. It is never ended earlier, because its client may count on that lease
        until then (Chubby's lease promise).

        The answer (`SessionEnding`) says whether the session was found, whether it was
        ending already (this call then changed nothing: say, an earlier attempt whose
        answer was lost ended it), and in how many milliseconds its lease runs out. An
        operator's end is the master's memory: if the master fails over before then, the
        session lives on unless its client heard; end it again.
        """
        return self._run(self._end_session, SessionId(session_id))

    def members(self) -> Deferred[MemberList]:
        """The cell's membership as the master knows it (`MemberList`): its version, and
        each member's addresses, whether it votes, whether it is the master, and how far
        it has caught up (as the master last heard). It needs no session."""
        return self._run(self._members)

    def change_membership(
        self, step: MembershipStep, if_version: int = 0
    ) -> Deferred[MembershipDone]:
        """One membership change, as an operator (the cell's ACL ``admin`` must admit the
        principal, else `PermissionDenied`): `AddLearner`, `Promote` or `Remove`
        (docs/guide.md, "Replacing a replica"). It fires once the change is chosen, with
        the new version; a change the membership already shows fires at once with
        `already` (a retry is harmless). Refusals: `MembershipBusy` (another change is in
        progress), `NotCaughtUp` (a learner to promote lags), `MembershipInvalid` (the
        change cannot follow: the message says why), `VersionChanged` (`if_version`, not
        0, is not the membership's version)."""
        return self._run(self._change_membership, ChangeMembership(step, if_version))

    def snapshot(
        self, progress: Callable[[int, int], None] | None = None
    ) -> Deferred[CellSnapshot]:
        """A snapshot of the cell's replicated database, for a backup (`CellSnapshot`): every
        file, directory, ACL, session and lock, and the client table, after applying every
        log entry through its `index`, with that state's checksum. An operator's call: the
        cell's ACL ``admin`` (the file ``acl/admin``) must admit the principal, else
        `PermissionDenied`. It needs no session.

        The master takes the snapshot (the one replicas send each other to catch up) and
        sends it in pieces of at most the cell's ``limits.snapshot_chunk_bytes``, asked for
        one at a time; `progress(received_bytes, total_bytes)` is called after each (on the
        reactor's thread). The pieces must be of one snapshot and put together must have
        the SHA-256 the master announced: if the master changes, or another backup makes
        it take a newer snapshot, the transfer starts again, up to SNAPSHOT_ATTEMPTS_MAX
        times, then `SnapshotGone`. The whole snapshot is held in memory.
        """
        return self._run(self._snapshot, progress)

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
        """Cancel every operation in progress and close every connection; fires once they
        are closed. Later operations fail with `CellClosed`."""
        if self._closed:
            return succeed(None)
        return Deferred.fromCoroutine(self._shut_down())

    async def _shut_down(self) -> None:
        self._closed = True
        for operation in list(self._operations):
            operation.cancel()
        connections = list(self._connections.values())
        for connection in connections:
            connection.close()
        await gatherResults([c.when_closed() for c in connections])

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

    async def _list_sessions(self) -> tuple[SessionInfo, ...]:
        sessions: list[SessionInfo] = []
        after = NO_SESSION
        while True:
            result, _ = await self._session_call(ListSessions(after, SESSIONS_PAGE_MAX))
            page = _expect(result, SessionList)
            sessions.extend(page.sessions)
            # A page that says "more" but lists nothing would repeat forever.
            if not page.more or not page.sessions:
                return tuple(sessions)
            after = page.sessions[-1].session_id

    async def _lock_info(self, path: str) -> LockInfo:
        result, _ = await self._session_call(GetLockInfo(path))
        return _expect(result, LockInfo)

    async def _members(self) -> MemberList:
        result, _ = await self._session_call(ListMembers())
        return _expect(result, MemberList)

    async def _change_membership(self, call: ChangeMembership) -> MembershipDone:
        result, _ = await self._session_call(call)
        return _expect(result, MembershipDone)

    async def _end_session(self, session_id: SessionId) -> SessionEnding:
        if not 1 <= session_id <= INT64_MAX:
            raise ValueError(f"no session has the id {session_id}: ids are 1 to {INT64_MAX}")
        result, _ = await self._session_call(KillSession(session_id))
        return _expect(result, SessionEnding)

    async def _snapshot(self, progress: Callable[[int, int], None] | None) -> CellSnapshot:
        last = ""
        for _ in range(SNAPSHOT_ATTEMPTS_MAX):
            outcome = await self._snapshot_attempt(progress)
            if isinstance(outcome, CellSnapshot):
                return outcome
            last = outcome
        raise SnapshotGone(
            f"no whole snapshot in {SNAPSHOT_ATTEMPTS_MAX} attempts; the last: {last}"
        )

    async def _snapshot_attempt(
        self, progress: Callable[[int, int], None] | None
    ) -> CellSnapshot | str:
        """One snapshot, whole, or why its transfer was torn (to start again)."""
        assembly = SnapshotAssembly(self.cell)
        try:
            while not assembly.done:
                result, _ = await self._session_call(assembly.next_call())
                torn = assembly.received(_expect(result, SnapshotChunk))
                if torn is not None:
                    return torn
                if progress is not None:
                    progress(assembly.received_bytes, assembly.total_bytes)
        except SnapshotGone as gone:
            return gone.message
        return assembly.result()

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
        acquiring.addTimeout(self.timeout_seconds, self._clock)
        try:
            await acquiring
        except TimeoutError:
            raise Unavailable(
                f"earlier writes of this client did not finish within {self.timeout_seconds:g} s"
            ) from None
        try:
            return await self._write_locked(write, deadline)
        finally:
            self._write_lock.release()

    async def _write_locked(self, write: Write, deadline: float) -> WriteResult:
        for _ in range(REREGISTRATIONS_MAX + 1):
            reply = await self._write_once(write, deadline)
            if reply is not None:
                return reply.result
        raise Unavailable(
            f"the cell evicted this client {REREGISTRATIONS_MAX + 1} times in a row while it "
            "wrote (a flood of registrations?); the write was not applied"
        )

    async def _write_once(self, write: Write, deadline: float) -> WriteReply | None:
        """Send `write` as this client's next sequence until answered; its reply, or None
        if the cell had evicted the client and the write's one attempt was refused for it
        (not applied): then the client has registered again, and the write may be sent
        again as a new one."""
        client_id = await self._register(deadline)
        credential, sequence = self._credential, self._next_sequence
        self._next_sequence += 1  # never reused, whatever becomes of this write
        attempts = 0

        def make(request_id: RequestId) -> WriteRequest:
            # The same (client_id, sequence) on every attempt, whichever replica is master.
            nonlocal attempts
            attempts += 1
            return WriteRequest(request_id, client_id, credential, sequence, sequence, write)

        try:
            reply = await self._call_master(make, deadline)
        except UnknownClient:
            self._client_id, self._nonce = None, self._new_nonce()
            self._evicted(client_id, attempts)
            return None
        if not isinstance(reply, WriteReply):
            raise _unexpected(reply, "a write")
        return reply

    def _evicted(self, client_id: ClientId, attempts: int) -> None:
        """The cell forgot client `client_id` (evicted it) while a write was on its way:
        say so, and raise `OutcomeUnknown` unless the write was sent only once. The answer
        UNKNOWN_CLIENT says that attempt was not applied, but an earlier attempt may have
        been, before the eviction; and sending it again under a new registration would
        apply it a second time."""
        if attempts > 1:
            self.log.warn(
                "cell {cell}: client {client_id} was evicted while a write was retried: the "
                "write's outcome is unknown; the next write registers again",
                cell=self.cell, client_id=client_id,
            )  # fmt: skip
            raise OutcomeUnknown(
                f"the cell evicted client {client_id} (its exactly-once table was full) while "
                f"this write was on its way, after {attempts} attempts: it may have been "
                "applied once, or not at all; read to find out"
            )
        self.log.info(
            "cell {cell}: client {client_id} was evicted (the cell's exactly-once table was "
            "full); registering again and sending the write again (its one attempt was not "
            "applied)",
            cell=self.cell, client_id=client_id,
        )  # fmt: skip

    async def _register(self, deadline: float) -> ClientId:
        """This client's id, registering first if it has none (retries reuse the nonce)."""
        if self._client_id is None:
            nonce = self._nonce
            reply = await self._call_master(lambda rid: Register(rid, nonce), deadline)
            if not isinstance(reply, Registered):
                raise _unexpected(reply, "a registration")
            self._client_id, self._next_sequence = reply.client_id, 1
            self._credential = reply.credential
        return self._client_id

    async def _locate_master(self) -> MasterLocation:
        finished = await self._carry(None, self._deadline(), locate_only=True)
        assert isinstance(finished.reply, MasterLocation)
        return finished.reply

    async def _status(self, replica: str | None) -> tuple[ReplicaReport, ...]:
        deadline = self._deadline()
        attempt = self._settings.attempt_seconds(self._clock.seconds(), deadline)
        assert attempt is not None
        # Learn every member's address; each replica's own failure is reported below.
        learning = LocationRound(self._view, self._view.known_addresses(), need_master=False)
        now = self._clock.seconds
        await self._ask_all(
            learning.asked,
            attempt,
            lambda address, reply: learning.answered(now(), address, reply),
            learning.failed,
        )
        targets = self._status_targets(replica)
        asking = [Deferred.fromCoroutine(self._status_at(a, deadline)) for a in targets]
        return tuple(await gatherResults(asking))

    async def _status_at(self, address: str, deadline: float) -> ReplicaReport:
        attempt = self._settings.attempt_seconds(self._clock.seconds(), deadline)
        try:
            if attempt is None:
                raise self._settings.unavailable("")
            connection = await self._open(address, attempt)
            reply = await connection.request(StatusRequest, attempt)
        except (ReplicaUnreachable, ChubbyError) as error:
            return ReplicaReport(address, self._view.replica_id_of(address), None, describe(error))
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
        return (await self._carry(make, deadline, attempt_seconds)).reply

    async def _session_call(
        self,
        call: SessionCall,
        attempt_seconds: float | None = None,
        deadline: float | None = None,
        number: CallNumber | None = None,
    ) -> tuple[SessionResult, SendTimes]:
        """One session call through the master, with its retries (each carrying the same
        `number`, if the call takes one); its result, and when it was first and last sent
        (a lease counts from the first)."""

        def make(request_id: RequestId) -> SessionRequest:
            return SessionRequest(request_id, call, number)

        finished = await self._carry(make, deadline or self._deadline(), attempt_seconds)
        if not isinstance(finished.reply, SessionReply):
            raise ChubbyError(f"unexpected {type(finished.reply).__name__} to a session call")
        return finished.reply.result, finished.sent

    async def _carry(
        self,
        make: MakeRequest | None,
        deadline: float,
        attempt_seconds: float | None = None,
        *,
        locate_only: bool = False,
    ) -> Finished:
        """Do the steps of one `MasterCall` until it finishes (or raise why it failed)."""
        call = MasterCall(self._view, self._settings, deadline, attempt_seconds, self._chance,
                          locate_only)  # fmt: skip
        step: CallStep = call.started(self._clock.seconds())
        while True:
            if self._closed:
                raise CellClosed(f"the client of cell {self.cell!r} is closed")
            match step:
                case SendRequest():
                    assert make is not None
                    step = await self._send(call, step, make)
                case AskLocations():
                    step = await self._locate(call, step)
                case Pause(until_seconds):
                    delay = max(0.0, until_seconds - self._clock.seconds())
                    await deferLater(self._clock, delay)
                    step = call.pause_ended(self._clock.seconds())
                case Finished():
                    return step
                case Failed(error):
                    raise error
                case _:
                    assert_never(step)

    async def _send(self, call: MasterCall, step: SendRequest, make: MakeRequest) -> CallStep:
        try:
            connection = await self._open(step.address, step.connect_seconds)
            replying = connection.request(make, step.reply_seconds)
            if step.drop_after_send:
                connection.abort("dropped right after sending (a chance site)")
            reply = await replying
        except (ReplicaUnreachable, ChubbyError) as error:
            return call.send_failed(self._clock.seconds(), error)
        return call.replied(self._clock.seconds(), reply)

    async def _locate(self, call: MasterCall, step: AskLocations) -> CallStep:
        now = self._clock.seconds
        return await self._ask_all(
            step.addresses,
            step.attempt_seconds,
            lambda address, reply: call.location_answered(now(), address, reply),
            lambda address, error: call.location_failed(now(), address, error),
        )

    async def _ask_all(
        self,
        addresses: tuple[str, ...],
        attempt_seconds: float,
        answered: Callable[[str, ServerReply], _T | None],
        failed: Callable[[str, Exception], _T | None],
    ) -> _T:
        """Ask every replica at `addresses` where the master is, all at once; report each
        answer and failure until one report decides (returns other than None), then stop
        asking the others."""
        decided: Deferred[_T] = Deferred()

        def settle(outcome: _T | None) -> None:
            if outcome is not None and not decided.called:
                decided.callback(outcome)

        def answer(reply: ServerReply, address: str) -> None:
            if not decided.called:
                settle(answered(address, reply))

        def failure(reason: TwistedFailure, address: str) -> None:
            if not decided.called:  # else: cancelled once decided
                assert isinstance(reason.value, Exception)
                settle(failed(address, reason.value))

        asking = [Deferred.fromCoroutine(self._ask_location(a, attempt_seconds)) for a in addresses]
        for address, each in zip(addresses, asking, strict=True):
            each.addCallbacks(answer, failure, callbackArgs=(address,), errbackArgs=(address,))
        try:
            return await decided
        finally:
            for each in asking:
                each.cancel()

    async def _ask_location(self, address: str, attempt_seconds: float) -> ServerReply:
        connection = await self._open(address, attempt_seconds)
        reply: ServerReply = await connection.request(LocateMaster, attempt_seconds)
        return reply

    # ------------------------------------------------------------------------- connections

    async def _open(self, address: str, connect_seconds: float) -> ReplicaConnection:
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
        await connection.when_welcomed(connect_seconds)
        if connection.replica_id is not None:
            self._view.welcomed(address, connection.replica_id)
        return connection

    def _connection_closed(self, _: None, address: str, connection: ReplicaConnection) -> None:
        if self._connections.get(address) is connection:
            del self._connections[address]

    def _status_targets(self, replica: str | None) -> list[str]:
        targets = list(self._view.known_addresses())
        if replica is None:
            return targets
        members = self._view.members
        if ReplicaId(replica) in members:
            return [members[ReplicaId(replica)]]
        address = replica
        with contextlib.suppress(ValueError):
            address = client_endpoint_string(replica)
        if address in targets:
            return [address]
        seeds = (display_address(seed) for seed in self._view.seeds)
        known = ", ".join([*members, *seeds])
        raise ValueError(f"no replica {replica!r} in cell {self.cell!r}; known: {known}")

    # ------------------------------------------------------------------------- time

    def _deadline(self) -> float:
        return self._clock.seconds() + self.timeout_seconds

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
