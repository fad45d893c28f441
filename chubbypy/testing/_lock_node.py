"""The master's session and lock service inside a simulated replica.

It plays the part the Twisted server plays for sessions, handles and locks: it starts a
`MasterService` when its replica starts serving as master and drops it when mastership
ends, turns the simulated clients' `LockRequest`s into calls, proposes the service's
decisions through the replica's Paxos core, and feeds it every entry the log applies. All
proposals go as the master's own commands (`MASTER_CLIENT`): every call the clients retry
is idempotent at the service (a retried acquire by the holder is granted again; a retried
release or close finds it done), so no exactly-once bookkeeping is needed here. In a
whole-cell run the register clients' writes pass the service's cache gate here too
(`write`), as clients' writes do on a real master.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
    SessionStarted,
)
from chubbypy.namespace import NamespaceMachine
from chubbypy.paxos import Outcome, Replica
from chubbypy.protocol import Command
from chubbypy.protocol.errors import ErrorCode, Failure
from chubbypy.protocol.namespace import Create, LockMode, LogWrite, SetContents
from chubbypy.protocol.values import SessionId
from chubbypy.sessions import EventMask, HandleMode
from chubbypy.testing._lock_requests import LockBug, LockOp, LockReply, LockRequest, LockStatus

HANDLE_KEY = b"simulated cell handle key ......"


class SimMasterHost:
    """One replica's master-side service for lock clients; see the module docstring."""

    def __init__(
        self,
        core: Replica,
        machine: NamespaceMachine,
        timing: MasterTiming,
        reply: Callable[[LockRequest, LockReply], None],
        bugs: frozenset[LockBug] = frozenset(),
        propose_client: Callable[[Any, Command], bool] | None = None,
        client_not_master: Callable[[Any], None] | None = None,
    ) -> None:
        self._bugs = bugs
        self._propose_client = propose_client
        self._client_not_master = client_not_master
        self._gated: dict[int, tuple[Any, Command]] = {}
        self._core = core
        self._machine = machine
        self._timing = timing
        self._reply = reply
        self._service: MasterService | None = None
        self._calls: dict[CallToken, LockRequest] = {}
        self._log = ServiceLog()
        self._next_token = 1

    @property
    def serving(self) -> bool:
        """A master with a valid master lease: it may answer from memory and promise leases."""
        return self._service is not None and self._core.can_serve_reads()

    def started(self, epoch: int) -> None:
        """The replica serves as master of `epoch`: every earlier entry is applied."""
        self._service = MasterService(self._timing, HANDLE_KEY)
        self._log = ServiceLog()
        self._gated = {}
        self._machine.keep_applied = True
        self._machine.take_applied()
        self._service.start(self._core.tick_count, epoch, self._machine)
        self._flush()

    def stopped(self, not_master: Callable[[LockRequest], LockReply]) -> None:
        """Mastership ended: every call in progress is told to go elsewhere."""
        self._service = None
        self._machine.keep_applied = False
        calls, self._calls = self._calls, {}
        for request in calls.values():
            self._reply(request, not_master(request))
        gated, self._gated = self._gated, {}
        for client_request, _ in gated.values():
            assert self._client_not_master is not None
            self._client_not_master(client_request)

    def write(self, request: object, command: Command, write: LogWrite) -> None:
        """A register client's write: proposed once the cache gate lets it through."""
        assert self._service is not None
        ticket = self._service.submit_write(write)
        self._gated[ticket] = (request, command)
        self._flush()

    def ticked(self) -> None:
        if self._service is not None:
            self._service.tick(self._core.tick_count)
            self._flush()

    def request(self, request: LockRequest) -> None:
        service = self._service
        assert service is not None
        token = CallToken(self._next_token)
        self._next_token += 1
        session_id = SessionId(request.session_id)
        self._calls[token] = request
        match request.kind:
            case LockOp.CREATE_SESSION:
                service.create_session(token, request.client)
            case LockOp.KEEPALIVE:
                service.keep_alive(token, session_id, request.acked)
            case LockOp.OPEN:
                create = Create(request.path)
                mode = HandleMode.READ | HandleMode.WRITE
                delay = request.lock_delay_ms
                events = EventMask.CONTENTS_MODIFIED | EventMask.LOCK_ACQUIRED
                service.open(token, session_id, request.path, mode, events,
                             create=create, lock_delay_ms=delay)  # fmt: skip
            case LockOp.ACQUIRE:
                service.acquire(token, request.handle, LockMode.EXCLUSIVE, wait=True)
            case LockOp.RELEASE:
                service.release(token, request.handle, request.generation or None)
            case LockOp.FENCED_WRITE:
                write = SetContents(request.path, str(request.value).encode())
                service.write(token, request.handle, write, request.sequencer)
            case LockOp.CLOSE_SESSION:
                service.close_session(token, session_id)
            case LockOp.READ:
                service.read(token, session_id, request.path, cache=request.cache)
        self._flush()

    def applied(self, outcomes: list[Outcome]) -> None:
        """One entry was applied, with these outcomes: report the master's commands."""
        if self._service is None:
            return
        writes = self._machine.take_applied()
        for token in self._log.applied(self._service, outcomes, writes):
            self._answer(token, LockReply(self._calls[token].op_id, LockStatus.NOT_MASTER))
        self._flush()

    def _flush(self) -> None:
        service = self._service
        if service is None:
            return
        replies, proposals = service.take(master_lease_valid=self._core.can_serve_reads())
        for reply in replies:
            request = self._calls.get(reply.token)
            if request is not None:
                self._answer(reply.token, _lock_reply(request, reply.result))
        for token in self._log.dispatch(service, proposals, self._propose, self._release):
            self._answer(token, LockReply(self._calls[token].op_id, LockStatus.NOT_MASTER))

    def _propose(self, commands: list[Command]) -> bool:
        return self._core.propose(commands, self._core.epoch) is None

    def _release(self, write: ClientWrite) -> None:
        service = self._service
        assert service is not None
        request, command = self._gated.pop(write.ticket)
        assert self._propose_client is not None
        if self._propose_client(request, command):
            self._log.client_write_proposed(command, write.ticket)
        else:
            service.landed(write.ticket)

    def _answer(self, token: CallToken, reply: LockReply) -> None:
        request = self._calls.pop(token, None)
        if request is not None:
            self._reply(request, reply)


def _lock_reply(request: LockRequest, result: CallResult) -> LockReply:
    op = request.op_id
    match result:
        case Failure(ErrorCode.NOT_MASTER):
            return LockReply(op, LockStatus.NOT_MASTER)
        case Failure(code):
            return LockReply(op, LockStatus.FAILED, code)
        case SessionStarted(session_id, lease_ticks):
            return LockReply(op, LockStatus.OK, session_id=session_id, lease_ticks=lease_ticks)
        case KeepAliveAnswered(lease_ticks, events, held_ticks):
            return LockReply(
                op, LockStatus.OK, lease_ticks=lease_ticks, events=events, held_ticks=held_ticks
            )
        case HandleOpened(handle):
            return LockReply(op, LockStatus.OK, handle=handle)
        case LockGranted(stat, sequencer):
            return LockReply(
                op, LockStatus.OK, sequencer=sequencer, generation=stat.lock_generation
            )
        case Done() | SequencerChecked():
            return LockReply(op, LockStatus.OK)
        case NodeRead(stat, contents, cached, sequence):
            return LockReply(
                op,
                LockStatus.OK,
                stat=stat,
                contents=contents,
                cached=cached,
                event_sequence=sequence,
            )
    raise AssertionError(result)
