"""Sessions, handles and locks on a real replica: the master's service behind the client port.

Shell side. `SessionHost` starts a `chubbypy.master.MasterService` when its replica starts
serving as master and drops it when mastership ends (every call in progress is answered
NOT_MASTER, and the client retries elsewhere). It turns each `SessionRequest` into a call,
proposes the service's decisions through the Paxos core as the master's own commands
(`MASTER_CLIENT`: every call a client retries is idempotent at the service), hands it every
entry the log applies, and answers with `SessionReply` or `ErrorReply`. Calls are served only
while the master lease is valid: an answer from memory, and above all a session lease
extended by a KeepAlive answer, is a promise only the lease holder may make.

Clients' plain writes pass through here too while this replica is master (`write`): the
service's cache gate holds each until every cached copy it makes stale was invalidated,
then the shell proposes it as it would have, and the gate hears when it landed.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

from twisted.logger import Logger

from chubbypy.master import (
    CallResult,
    CallToken,
    ClientWrite,
    Done,
    HandleOpened,
    KeepAliveAnswered,
    LockGranted,
    MasterService,
    MasterTiming,
    NodeRead,
    SequencerChecked,
    ServiceLog,
    SessionsListed,
    SessionStarted,
    SessionSummary,
)
from chubbypy.namespace import NamespaceMachine
from chubbypy.paxos import Outcome, Replica
from chubbypy.protocol import Command
from chubbypy.protocol.client import ErrorReply, RequestId, ServerReply, SessionReply
from chubbypy.protocol.errors import ErrorCode, Failure
from chubbypy.protocol.namespace import LogWrite
from chubbypy.protocol.session import (
    AcquireLock,
    CallDone,
    CheckSequencer,
    CloseHandle,
    CloseSession,
    CreateSession,
    GetSequencer,
    HandleWrite,
    KeepAlive,
    LeaseExtended,
    ListSessions,
    Locked,
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
)
from chubbypy.protocol.session import (
    HandleOpened as WireHandleOpened,
)
from chubbypy.protocol.session import (
    NodeRead as WireNodeRead,
)
from chubbypy.protocol.values import SessionId
from chubbypy.sessions import credential_matches, session_credential

Reply = Callable[[ServerReply], None]
ProposeClient = Callable[[Reply, RequestId, Command], bool]
"""The shell proposes a client's command (False: the core refused it, already answered)."""


class SessionHost:
    """One replica's master-side service for sessions; see the module docstring."""

    log = Logger()

    def __init__(
        self,
        core: Replica,
        machine: NamespaceMachine,
        timing: MasterTiming,
        handle_key: bytes,
        tick_seconds: float,
        propose_client: ProposeClient,
    ) -> None:
        self._core = core
        self._propose_client = propose_client
        self._machine = machine
        self._timing = timing
        self._key = handle_key
        self._tick_ms = tick_seconds * 1000
        self._service: MasterService | None = None
        self._calls: dict[CallToken, tuple[Reply, RequestId, int]] = {}
        """Per token: how to answer, the request's id, and the connection that asked."""
        self._log = ServiceLog()
        self._tokens = itertools.count(1)
        self._gated: dict[int, tuple[Reply, RequestId, Command]] = {}
        """Clients' writes the cache gate holds, by ticket."""

    @property
    def sessions(self) -> int:
        """Live sessions, for /metrics (0 when not serving as master)."""
        return 0 if self._service is None else self._service.session_count

    @property
    def cache_cost(self) -> tuple[int, int]:
        """(cached names registered, writes held for invalidations), for /metrics."""
        return (0, 0) if self._service is None else self._service.cache_cost

    # ------------------------------------------------------------------------- mastership

    def started(self, epoch: int) -> None:
        """The replica serves as master of `epoch`; every earlier entry is applied."""
        self._service = MasterService(self._timing, self._key)
        self._log = ServiceLog()
        self._gated = {}
        self._machine.keep_applied = True
        self._machine.take_applied()
        self._service.start(self._core.tick_count, epoch, self._machine)
        self._flush()

    def stopped(self) -> None:
        """Mastership ended: the calls in progress go elsewhere."""
        self._service = None
        self._machine.keep_applied = False
        calls, self._calls = self._calls, {}
        for reply, request_id, _ in calls.values():
            reply(ErrorReply(request_id, ErrorCode.NOT_MASTER, "mastership ended", None))
        gated, self._gated = self._gated, {}
        for reply, request_id, _ in gated.values():
            reply(ErrorReply(request_id, ErrorCode.NOT_MASTER, "mastership ended", None))

    def ticked(self) -> None:
        if self._service is not None:
            self._service.tick(self._core.tick_count)
            self._flush()

    # ------------------------------------------------------------------------- calls

    def call(
        self,
        reply: Reply,
        request_id: RequestId,
        call: SessionCall,
        connection: int,
        principal: str,
    ) -> None:
        """Serve `call` for the connection acting as `principal` (its ACL checks)."""
        service = self._service
        if service is None or not self._core.can_serve_reads():
            reply(ErrorReply(request_id, ErrorCode.NOT_MASTER, "not the master", None))
            return
        named = _session_named(call)
        if named is not None and not credential_matches(*named, self._key):
            self.log.warn(
                "refused a {call} naming session {id} from {principal!r}: not the session's "
                "credential (a forged or mistaken session number)",
                call=type(call).__name__, id=named[0], principal=principal,
            )  # fmt: skip
            message = f"session {named[0]}: wrong credential; only its owner may use it"
            reply(ErrorReply(request_id, ErrorCode.PERMISSION_DENIED, message, None))
            return
        token = CallToken(next(self._tokens))
        self._calls[token] = (reply, request_id, connection)
        match call:
            case CreateSession(name):
                service.create_session(token, name)
            case KeepAlive(session_id, _, acked_through):
                service.keep_alive(token, session_id, acked_through)
            case CloseSession(session_id, _):
                service.close_session(token, session_id)
            case Open(session_id, _, path, mode, events, delay, create, exclusive):
                service.open(token, session_id, path, mode, events, delay, create, exclusive,
                             principal=principal)  # fmt: skip
            case CloseHandle(handle):
                service.close(token, handle)
            case PoisonHandle(handle):
                service.poison(token, handle)
            case AcquireLock(handle, mode, wait, wait_ms):
                ticks = None if wait_ms is None else math.ceil(wait_ms / self._tick_ms)
                service.acquire(token, handle, mode, wait=wait, wait_ticks=ticks)
            case ReleaseLock(handle, generation):
                service.release(token, handle, generation)
            case HandleWrite(handle, write, sequencer):
                service.write(token, handle, write, sequencer)
            case GetSequencer(handle):
                service.get_sequencer(token, handle)
            case CheckSequencer(sequencer):
                service.check_sequencer(token, sequencer)
            case ReadNode(session_id, _, path, cache):
                service.read(token, session_id, path, cache=cache, principal=principal)
            case ListSessions(after, limit):
                service.list_sessions(token, after, limit, principal=principal)
        self._flush()

    def write(self, reply: Reply, request_id: RequestId, command: Command, write: LogWrite) -> bool:
        """A client's write: through the cache gate while serving as master (True), else
        False and the shell proposes it as it is (the core refuses it: not the master)."""
        if self._service is None:
            return False
        ticket = self._service.submit_write(write)
        self._gated[ticket] = (reply, request_id, command)
        self._flush()
        return True

    def connection_closed(self, connection: int) -> None:
        """A client connection went away: its blocked lock requests stop waiting."""
        gone = [t for t, (_, _, c) in self._calls.items() if c == connection]
        for token in gone:
            del self._calls[token]
            if self._service is not None:
                self._service.cancel(token)

    # ------------------------------------------------------------------------- the log

    def applied(self, outcomes: list[Outcome]) -> None:
        """One entry was applied, with these outcomes: report the master's commands."""
        if self._service is None:
            return
        writes = self._machine.take_applied()
        for token in self._log.applied(self._service, outcomes, writes):
            self._error(token, ErrorCode.EPOCH_CHANGED, "proposed by an earlier master")
        self._flush()

    # ------------------------------------------------------------------------- helpers

    def _flush(self) -> None:
        service = self._service
        if service is None:
            return
        replies, proposals = service.take(master_lease_valid=self._core.can_serve_reads())
        for reply in replies:
            self._answer(reply.token, reply.result)
        refused = self._log.dispatch(service, proposals, self._propose, self._release)
        for token in refused:
            self._error(token, ErrorCode.BUSY, "the master cannot propose now")

    def _propose(self, commands: list[Command]) -> bool:
        return self._core.propose(commands, self._core.epoch) is None

    def _release(self, write: ClientWrite) -> None:
        """A client's write the gate let through: the shell proposes it."""
        service = self._service
        assert service is not None
        gated = self._gated.pop(write.ticket, None)
        if gated is None:
            service.landed(write.ticket)
            return
        reply, request_id, command = gated
        if self._propose_client(reply, request_id, command):
            self._log.client_write_proposed(command, write.ticket)
        else:
            service.landed(write.ticket)

    def _answer(self, token: CallToken, result: CallResult) -> None:
        call = self._calls.pop(token, None)
        if call is None:
            return  # its connection went away
        reply, request_id, _ = call
        if isinstance(result, Failure):
            hint = None
            reply(ErrorReply(request_id, result.code, result.message[:1000], hint))
        else:
            reply(SessionReply(request_id, self._wire(result)))

    def _error(self, token: CallToken, code: ErrorCode, message: str) -> None:
        self._answer(token, Failure(code, message))

    def _wire(self, result: CallResult) -> SessionResult:
        match result:
            case SessionStarted(session_id, lease_ticks):
                credential = session_credential(session_id, self._key)
                return SessionCreated(session_id, self._ms(lease_ticks), credential)
            case KeepAliveAnswered(lease_ticks, events, held_ticks):
                return LeaseExtended(self._ms(lease_ticks), events, self._ms(held_ticks))
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
        raise AssertionError(result)

    def _session_info(self, summary: SessionSummary) -> SessionInfo:
        return SessionInfo(
            summary.session_id,
            summary.name,
            summary.state,
            self._ms(summary.lease_remaining_ticks),
            summary.handles,
            summary.locks,
            summary.lock_count,
            summary.ephemeral,
            summary.ephemeral_count,
            summary.cached_names,
        )

    def _ms(self, ticks: int) -> int:
        """A lease in ticks as milliseconds, rounded down: a client never counts on more."""
        return int(ticks * self._tick_ms)


def _session_named(call: SessionCall) -> tuple[SessionId, bytes] | None:
    """The session a call names and the credential it shows (None for calls that name a
    handle or sequencer instead, whose own check digits prove them, and for an operator's
    ListSessions, which names no session: the service checks its principal instead)."""
    match call:
        case KeepAlive() | CloseSession() | Open() | ReadNode():
            return call.session_id, call.credential
    return None
