"""The master's services on a replica node: sessions, handles, locks and the cache gate. Pure.

`MasterHost` starts a `chubbypy.master.MasterService` when its replica starts serving as
master (every earlier entry is applied by then) and drops it when mastership ends: every
call in progress is answered NOT_MASTER, and the client retries elsewhere. It turns each
`SessionRequest` into a call, proposes the service's decisions through the Paxos core as
the master's own commands (`MASTER_CLIENT`, numbered by `ServiceLog`), hands the service
every write the log applies (the applier's outcomes carry them), and answers with
`SessionReply` or `ErrorReply`. Calls are served only while the master lease is valid: an
answer from memory, and above all a session lease extended by a KeepAlive answer, is a
promise only the lease holder may make.

Clients' plain writes pass through here too while this replica is master (`write`): the
service's cache gate holds each until every cached copy it makes stale was invalidated,
then it is proposed through `ClientWrites` as any other client's write, and the gate hears
when it landed.

An operator's `GetSnapshot` (a backup) is served here rather than by the service: it
reads the applier's snapshot, which is the node's (`chubbypy.node._backups`), after the
service's one check of operators' calls (`MasterService.operator_problem`).

Chance sites (simulation only, `chance.buggify`): a KeepAlive answer held back a few ticks
(`KEEPALIVE_LATE`), an answer to a call that changed state lost after the change was
applied (`ANSWER_LOST`), and a client connection dropped while its blocking acquire waits
(`DISCONNECT`).
"""

from __future__ import annotations

import itertools
import math
from collections import deque

from chubbypy.master import (
    CallResult,
    CallToken,
    ClientWrite,
    Done,
    GateTicket,
    HandleOpened,
    KeepAliveAnswered,
    LockGranted,
    LockSummary,
    MasterService,
    NodeRead,
    Proposal,
    SequencerChecked,
    SessionEnding,
    SessionsListed,
    SessionStarted,
    SessionSummary,
)
from chubbypy.namespace import AppliedWrite, NamespaceMachine, exposed_acl_directory
from chubbypy.node._backups import SnapshotServer
from chubbypy.node._limits import SessionBook
from chubbypy.node._members import MemberDesk
from chubbypy.node._metrics import Counter
from chubbypy.node._outbox import Outbox
from chubbypy.node._outputs import ConnectionId, Disconnect, NoteLevel
from chubbypy.node._service_log import ServiceLog
from chubbypy.node._settings import (
    ANSWER_LOST,
    DISCONNECT,
    KEEPALIVE_LATE,
    NodeBug,
    NodeSettings,
)
from chubbypy.node._writes import REFUSALS, ClientWrites
from chubbypy.paxos import Applier, Chance, Outcome, Replica
from chubbypy.protocol import CallNumber, Command, LogIndex, Membership, SessionId
from chubbypy.protocol.client import RequestId, SessionReply
from chubbypy.protocol.errors import ErrorCode, Failure
from chubbypy.protocol.namespace import EndSession, LogWrite
from chubbypy.protocol.session import (
    AcquireLock,
    CallDone,
    ChangeMembership,
    CheckSequencer,
    CloseHandle,
    CloseSession,
    CreateSession,
    GetLockInfo,
    GetSequencer,
    GetSnapshot,
    HandleWrite,
    KeepAlive,
    KillSession,
    LeaseExtended,
    ListMembers,
    ListSessions,
    Locked,
    LockInfo,
    LockWaiterInfo,
    Open,
    PoisonHandle,
    ReadNode,
    ReleaseLock,
    SequencerValidity,
    SessionCall,
    SessionCreated,
    SessionInfo,
    SessionList,
    SessionResult,
    SnapshotChunk,
    describe_step,
)
from chubbypy.protocol.session import HandleOpened as WireHandleOpened
from chubbypy.protocol.session import NodeRead as WireNodeRead
from chubbypy.protocol.session import SessionEnding as WireSessionEnding
from chubbypy.sessions import credential_matches, session_credential

LATE_TICKS_MAX = 8
"""How long a `KEEPALIVE_LATE` answer is held back at most, in ticks."""


class MasterHost:
    """One replica's master-side services; see the module docstring."""

    def __init__(
        self,
        settings: NodeSettings,
        core: Replica,
        machine: NamespaceMachine,
        writes: ClientWrites,
        outbox: Outbox,
        chance: Chance,
        operator_calls: Counter,
        applier: Applier,
    ) -> None:
        self._settings = settings
        self._applier = applier
        """The replicated state's bookkeeping, whose snapshots backups read."""
        self._core = core
        self._machine = machine
        self._writes = writes
        self._outbox = outbox
        self._chance = chance
        self._service: MasterService | None = None
        self._snapshots: SnapshotServer | None = None
        """The snapshot a backup reads, this mastership's (`chubbypy.node._backups`)."""
        self._members = MemberDesk(settings, core, outbox)
        """The operators' membership calls (`chubbypy.node._members`)."""
        self._log = ServiceLog()
        self._operator_calls = operator_calls
        """``chubbypy_operator_calls_total``, by call and outcome."""
        self._operators: dict[CallToken, str] = {}
        """Per operators' call in progress: its name in that counter."""
        self._calls: dict[CallToken, tuple[ConnectionId, RequestId, bool]] = {}
        """Per token: the connection that asked, its request id, and whether the call
        changes state (its answer may be lost after the change: `ANSWER_LOST`)."""
        self._tokens = itertools.count(1)
        self._gated: dict[GateTicket, tuple[ConnectionId, RequestId, Command]] = {}
        """Clients' writes the cache gate holds, by ticket."""
        self._late: list[tuple[int, ConnectionId, SessionReply]] = []
        """KeepAlive answers held back (`KEEPALIVE_LATE`): the tick each goes out at."""
        self._backlog: deque[list[Proposal] | ClientWrite] = deque()
        """What the gate let through that the master's queue could not take yet, in order:
        batches of the service's own proposals, and clients' writes."""
        self.session_book = SessionBook(settings.client_limits)
        """Live sessions per connection and principal, this mastership's, against their
        limits (`chubbypy.node._limits`)."""
        self.reads_uncached_over_limit = 0
        """Reads answered uncached because their session caches as many names as
        ``limits.cached_names_per_session_max`` allows, in every mastership (/metrics)."""

    @property
    def serving(self) -> bool:
        return self._service is not None

    @property
    def sessions(self) -> int:
        """Live sessions, for /metrics (0 when not serving as master)."""
        return 0 if self._service is None else self._service.session_count

    @property
    def snapshot_bytes(self) -> int:
        """The size of the snapshot held for a backup, for /metrics (0: none)."""
        return 0 if self._snapshots is None else self._snapshots.held_bytes

    @property
    def cache_cost(self) -> tuple[int, int]:
        """(cached names registered, writes held for invalidations), for /metrics."""
        return (0, 0) if self._service is None else self._service.cache_cost

    # ------------------------------------------------------------------------- mastership

    def started(self, epoch: int) -> None:
        """The replica serves as master of `epoch`; every earlier entry is applied."""
        settings = self._settings
        self._service = MasterService(
            settings.master_timing,
            settings.handle_key,
            settings.admins,
            operator_ends_at_once=NodeBug.OPERATOR_ENDS_AT_ONCE in settings.node_bugs,
        )
        self._operators.clear()
        self._snapshots = SnapshotServer(
            settings.snapshot_chunk_bytes, settings.snapshot_held_ticks
        )
        self._log = ServiceLog()
        self.session_book = SessionBook(settings.client_limits)
        self._gated = {}
        self._backlog.clear()
        self._service.start(self._core.tick_count, epoch, self._machine)
        exposed = exposed_acl_directory(self._machine.tree)
        if exposed is not None:
            self._outbox.note(
                NoteLevel.WARN,
                f"{exposed} (an ACL directory made before ACL defaults: README 'ACL defaults' "
                "says how to protect it)",
            )
        self._flush()

    def stopped(self) -> None:
        """Mastership ended: the calls in progress go elsewhere."""
        self._members.stopped()
        self._service = None
        self._snapshots = None  # a backup reading it starts again (SNAPSHOT_GONE)
        self._backlog.clear()
        self._operators.clear()
        calls, self._calls = self._calls, {}
        gated, self._gated = self._gated, {}
        waiting = [(c, r) for c, r, _ in calls.values()] + [(c, r) for c, r, _ in gated.values()]
        for connection, request_id in waiting:
            self._outbox.refuse(connection, request_id, ErrorCode.NOT_MASTER, "mastership ended")
        late, self._late = self._late, []
        for _, connection, reply in late:
            self._outbox.answer(connection, reply)  # its lease was granted under ours

    def ticked(self) -> None:
        self._send_late()
        if self._snapshots is not None:
            self._snapshots.ticked(self._core.tick_count)
        if self._service is not None:
            self._service.tick(self._core.tick_count)
            self._flush()

    # ------------------------------------------------------------------------- calls

    def call(
        self,
        connection: ConnectionId,
        request_id: RequestId,
        call: SessionCall,
        principal: str,
        number: CallNumber | None = None,
    ) -> None:
        """Serve `call` for the connection acting as `principal` (its ACL checks); a call
        that may change state carries its session's `number` for it."""
        service = self._service
        if service is None or not self._core.can_serve_reads():
            self._outbox.refuse(connection, request_id, ErrorCode.NOT_MASTER, "not the master")
            return
        if not self._credential_shown(connection, request_id, call, principal):
            return
        if isinstance(call, GetSnapshot):
            self._snapshot_piece(service, connection, request_id, call, principal)
            return
        if isinstance(call, ListMembers):
            self._outbox.answer(connection, SessionReply(request_id, self._members.listed()))
            return
        if isinstance(call, ChangeMembership):
            self._membership_change(service, connection, request_id, call, principal)
            return
        token = CallToken(next(self._tokens))
        if isinstance(call, CreateSession) and not self._session_counted(
            connection, request_id, principal, token
        ):
            return
        changes = not isinstance(
            call, KeepAlive | ReadNode | ListSessions | CheckSequencer | GetLockInfo
        )
        self._calls[token] = (connection, request_id, changes)
        operator_call = _OPERATOR_CALLS.get(type(call))
        if operator_call is not None:
            self._operators[token] = operator_call
        self._start(service, token, call, principal, number)
        if isinstance(call, AcquireLock) and call.wait and self._chance.buggify(DISCONNECT):
            self._outbox.put(Disconnect(connection))
        self._flush()

    def _credential_shown(
        self, connection: ConnectionId, request_id: RequestId, call: SessionCall, principal: str
    ) -> bool:
        named = _session_named(call)
        if named is None or credential_matches(*named, self._settings.handle_key):
            return True
        self._outbox.warn_limited(
            "session-credential",
            f"refused a {type(call).__name__} naming session {named[0]} from {principal!r}: "
            "not the session's credential (a forged or mistaken session number)",
        )
        message = f"session {named[0]}: wrong credential; only its owner may use it"
        self._outbox.refuse(connection, request_id, ErrorCode.PERMISSION_DENIED, message)
        return False

    def _snapshot_piece(
        self,
        service: MasterService,
        connection: ConnectionId,
        request_id: RequestId,
        call: GetSnapshot,
        principal: str,
    ) -> None:
        """A piece of a backup's snapshot, for operators only (the check every operators'
        call makes): answered at once, from the applied state, fail-over or not (it
        changes nothing, and a snapshot is of applied entries only)."""
        assert self._snapshots is not None, "serving without a snapshot server"
        what = "take a snapshot of the cell (it holds every file, ACL and session)"
        result = service.operator_problem(principal, what) or self._snapshots.piece(
            self._applier, call, self._core.tick_count
        )
        self._operator_calls.inc(call="snapshot", outcome=_outcome(result))
        if isinstance(result, Failure):
            self._outbox.refuse(connection, request_id, result.code, result.message)
            return
        self._outbox.answer(connection, SessionReply(request_id, result))

    def _membership_change(
        self,
        service: MasterService,
        connection: ConnectionId,
        request_id: RequestId,
        call: ChangeMembership,
        principal: str,
    ) -> None:
        """An operator's membership change (the check every operators' call makes)."""
        refused = service.operator_problem(principal, "change the cell's membership")
        if refused is not None:
            self._outbox.refuse(connection, request_id, refused.code, refused.message)
            outcome = refused.code.name.lower()
        else:
            outcome = self._members.change(connection, request_id, call)
            if outcome in ("proposed", "already"):
                self._outbox.note(
                    NoteLevel.INFO,
                    f"{principal!r} asked: {describe_step(call.step)}: {outcome}",
                )
        self._operator_calls.inc(call="membership", outcome=outcome)

    def membership_chosen(self, index: LogIndex, membership: Membership) -> None:
        """A membership change was chosen: answer the operator who asked for it."""
        self._members.chosen(index, membership)

    def _session_counted(
        self, connection: ConnectionId, request_id: RequestId, principal: str, token: CallToken
    ) -> bool:
        """Count a CreateSession against its connection and principal, unless one of them
        holds as many live sessions as its limit allows: then RESOURCE_EXHAUSTED."""
        refused = self.session_book.refusal(connection, principal)
        if refused is None:
            self.session_book.creating(token, connection, principal)
            return True
        text = f"refusing sessions from {principal!r}: {refused}"
        self._outbox.warn_once(connection, "sessions", text)
        self._outbox.refuse(connection, request_id, ErrorCode.RESOURCE_EXHAUSTED, refused)
        return False

    def _start(
        self,
        service: MasterService,
        token: CallToken,
        call: SessionCall,
        principal: str,
        number: CallNumber | None,
    ) -> None:
        match call:
            case CreateSession(name, nonce):
                service.create_session(token, name, nonce, principal=principal)
            case KeepAlive(session_id, _, acked_through):
                service.keep_alive(token, session_id, acked_through, principal=principal)
            case CloseSession(session_id, _):
                service.close_session(token, session_id)
            case Open(session_id, _, path, mode, events, delay, create, exclusive):
                service.open(token, session_id, path, mode, events, delay, create, exclusive,
                             principal=principal, number=number)  # fmt: skip
            case CloseHandle(handle):
                service.close(token, handle, number)
            case PoisonHandle(handle):
                service.poison(token, handle)
            case AcquireLock(handle, mode, wait, wait_ms):
                ticks = None if wait_ms is None else self._ticks(wait_ms)
                service.acquire(token, handle, mode, wait=wait, wait_ticks=ticks)
            case ReleaseLock(handle, generation):
                service.release(token, handle, generation, number)
            case HandleWrite(handle, write, sequencer):
                service.write(token, handle, write, sequencer, number, principal=principal)
            case GetSequencer(handle):
                service.get_sequencer(token, handle)
            case CheckSequencer(sequencer):
                service.check_sequencer(token, sequencer)
            case ReadNode(session_id, _, path, cache):
                service.read(token, session_id, path, cache=cache, principal=principal)
            case ListSessions(after, limit):
                service.list_sessions(token, after, limit, principal=principal)
            case GetLockInfo(path):
                service.lock_info(token, path, principal=principal)
            case KillSession(session_id):
                service.kill_session(token, session_id, principal=principal)

    def write(
        self, connection: ConnectionId, request_id: RequestId, command: Command, write: LogWrite
    ) -> bool:
        """A client's write: through the cache gate while serving as master (True), else
        False and the node proposes it as it is (the core refuses it: not the master)."""
        if self._service is None:
            return False
        ticket = self._service.submit_write(write)
        self._gated[ticket] = (connection, request_id, command)
        self._flush()
        return True

    def connection_closed(self, connection: ConnectionId) -> None:
        """A client connection went away: its blocked lock requests stop waiting."""
        self._members.connection_closed(connection)
        self.session_book.connection_closed(connection)
        gone = [token for token, (c, _, _) in self._calls.items() if c == connection]
        for token in gone:
            del self._calls[token]
            if self._service is not None:
                self._service.cancel(token)

    # ------------------------------------------------------------------------- the log

    def applied(self, outcomes: list[Outcome]) -> None:
        """One entry was applied, with these outcomes: report the writes it applied."""
        if self._service is None:
            return
        for ended in _sessions_ended(outcomes):
            self.session_book.ended(ended)
        failure = Failure(ErrorCode.EPOCH_CHANGED, "proposed by an earlier master")
        for token in self._log.applied(self._service, outcomes):
            self._ended(self._service, token, failure)
        self._flush()

    # ------------------------------------------------------------------------- helpers

    def _flush(self) -> None:
        service = self._service
        if service is None:
            return
        replies, proposals = service.take(master_lease_valid=self._core.can_serve_reads())
        for reply in replies:
            self._answer(reply.token, reply.result)
        # In the order the gate let them through: each run of the service's own proposals
        # in batches of a log entry's size (a release and the grants it allows share an
        # entry), each client's write on its own. What the master's queue cannot take yet
        # (a flood: say every session of a fail-over expiring at once) waits here, in
        # order, and goes as the queue drains, at the cost of what goes.
        size = self._settings.limits.batch_entries_max
        batch: list[Proposal] = []
        for proposal in proposals:
            if isinstance(proposal, Proposal):
                batch.append(proposal)
                if len(batch) == size:
                    self._backlog.append(batch)
                    batch = []
                continue
            if batch:
                self._backlog.append(batch)
                batch = []
            self._backlog.append(proposal)
        if batch:
            self._backlog.append(batch)
        self._propose_backlog(service)

    def _propose_backlog(self, service: MasterService) -> None:
        while self._backlog:
            item = self._backlog[0]
            if isinstance(item, list) and len(item) > self._core.queue_room:
                return  # the queue is full: the rest goes as it drains
            self._backlog.popleft()
            if isinstance(item, list):
                self._propose(service, item)
            else:
                self._release(service, item)

    def _propose(self, service: MasterService, batch: list[Proposal]) -> None:
        commands = self._log.commands(batch)
        refused = self._core.propose(commands, self._core.epoch)
        if refused is not None:
            code = REFUSALS[refused.reason]
            failure = Failure(code, f"not proposed: {refused.reason.value}")
            for token in self._log.refused(service, commands):
                self._ended(service, token, failure)

    def _release(self, service: MasterService, write: ClientWrite) -> None:
        """A client's write the gate let through: proposed as the client's own."""
        gated = self._gated.pop(write.ticket, None)
        if gated is None:
            service.landed(write.ticket)
            return
        connection, request_id, command = gated
        if self._writes.propose(connection, request_id, command):
            self._log.client_write_proposed(command, write.ticket)
        else:
            service.landed(write.ticket)

    def _ended(self, service: MasterService, token: CallToken, failure: Failure) -> None:
        """The call `token` ended outside the service: answer it, and its retries."""
        for call in (token, *service.call_ended(token)):
            self._answer(call, failure)

    def _answer(self, token: CallToken, result: CallResult) -> None:
        self.session_book.answered(token, result)
        operator_call = self._operators.pop(token, None)
        if operator_call is not None:
            self._operator_calls.inc(call=operator_call, outcome=_outcome(result))
        call = self._calls.pop(token, None)
        if call is None:
            return  # its connection went away
        connection, request_id, changes = call
        if isinstance(result, Failure):
            self._outbox.refuse(connection, request_id, result.code, result.message)
            return
        if isinstance(result, NodeRead) and result.uncached_because:
            self.reads_uncached_over_limit += 1
            self._outbox.warn_once(connection, "cache-limit", result.uncached_because)
        reply = SessionReply(request_id, self._wire(result))
        if changes and self._chance.buggify(ANSWER_LOST):
            return  # the change is made; the client hears nothing and asks again
        if isinstance(result, KeepAliveAnswered) and self._chance.buggify(KEEPALIVE_LATE):
            due = self._core.tick_count + self._chance.randint(1, LATE_TICKS_MAX)
            self._late.append((due, connection, reply))
            return
        self._outbox.answer(connection, reply)

    def _send_late(self) -> None:
        now = self._core.tick_count
        due = [late for late in self._late if late[0] <= now]
        self._late = [late for late in self._late if late[0] > now]
        for _, connection, reply in due:
            self._outbox.answer(connection, reply)

    def _ticks(self, milliseconds: int) -> int:
        return math.ceil(milliseconds * 1000 / self._settings.tick_microseconds)

    def _wire(self, result: CallResult) -> SessionResult:
        match result:
            case SessionStarted(session_id, lease_ticks):
                credential = session_credential(session_id, self._settings.handle_key)
                return SessionCreated(session_id, self._settings.ms(lease_ticks), credential)
            case KeepAliveAnswered(lease_ticks, events, held_ticks):
                ms = self._settings.ms
                return LeaseExtended(ms(lease_ticks), events, ms(held_ticks))
            case HandleOpened(handle, created, stat, handle_id):
                return WireHandleOpened(handle, created, stat, handle_id)
            case LockGranted(stat, sequencer):
                return Locked(stat, sequencer)
            case Done(stat):
                return CallDone(stat)
            case SequencerChecked(valid):
                return SequencerValidity(valid)
            case NodeRead(stat, contents, cached, sequence):
                return WireNodeRead(stat, contents, cached, sequence)
            case SessionsListed(sessions, more):
                return SessionList(tuple(self._session_info(s) for s in sessions), more)
            case LockSummary():
                return self._lock_info(result)
            case SessionEnding(found, already, ends_in_ticks):
                return WireSessionEnding(found, already, self._settings.ms(ends_in_ticks))
        raise AssertionError(result)

    def _lock_info(self, summary: LockSummary) -> LockInfo:
        ms = self._settings.ms
        waiters = tuple(
            LockWaiterInfo(w.session_id, w.client, w.principal, w.mode, ms(w.waited_ticks))
            for w in summary.waiters
        )
        return LockInfo(summary.path, summary.instance, summary.mode, summary.lock_generation,
                        summary.holders, summary.holder_count, waiters, summary.waiter_count,
                        ms(summary.delay_remaining_ticks))  # fmt: skip

    def _session_info(self, summary: SessionSummary) -> SessionInfo:
        return SessionInfo(
            summary.session_id,
            summary.name,
            summary.state,
            self._settings.ms(summary.lease_remaining_ticks),
            summary.handles,
            summary.locks,
            summary.lock_count,
            summary.ephemeral,
            summary.ephemeral_count,
            summary.cached_names,
            summary.principal,
        )


_OPERATOR_CALLS: dict[type, str] = {
    ListSessions: "list_sessions",
    GetLockInfo: "lock_info",
    KillSession: "end_session",
}
"""The operators' calls counted in ``chubbypy_operator_calls_total``, by their names there."""


def _outcome(result: CallResult | SnapshotChunk) -> str:
    """An operators' call's outcome as ``chubbypy_operator_calls_total`` labels it."""
    if isinstance(result, Failure):
        return result.code.name.lower()
    if isinstance(result, SessionEnding):
        return "none" if not result.found else "already" if result.already else "ending"
    return "ok"


def _sessions_ended(outcomes: list[Outcome]) -> list[SessionId]:
    """The sessions an applied entry ended (closed or expired), for the session book."""
    return [
        o.effect.write.session_id
        for o in outcomes
        if isinstance(o.effect, AppliedWrite) and isinstance(o.effect.write, EndSession)
    ]


def _session_named(call: SessionCall) -> tuple[SessionId, bytes] | None:
    """The session a call names and the credential it shows (None for calls that name a
    handle or sequencer instead, whose own check digits prove them, and for operators'
    calls, ListSessions, GetLockInfo, KillSession and GetSnapshot, which name no session
    of the caller's: the service checks its principal instead)."""
    match call:
        case KeepAlive() | CloseSession() | Open() | ReadNode():
            return call.session_id, call.credential
    return None
