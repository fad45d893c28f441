"""A simulated register client: writes, reads and increments over the wire protocol, carried
to the master by the client library's own call core.

One operation at a time. Requests are the wire's own values (`Register`, `WriteRequest`,
`ReadRequest`); where each goes, what is retried and how long to back off is decided by
`chubbypy.client.core.MasterCall`, exactly as in the Twisted client, over the simulated
network (`chubbypy.testing._calls`). A write keeps its (client id, sequence) across every
retry, so the cell applies it exactly once; a call that ends `Unavailable` (no master
answered before its deadline) ends its operation, outcome unknown, as in a program.
An increment reads the counter first, then writes it plus one guarded by what it read
(`chubbypy.testing._registers.increment`).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from attrs import evolve

from chubbypy.client.core import CallSettings, CellView, Failed, Finished, MasterCall
from chubbypy.paxos import Chance
from chubbypy.protocol import NO_CLIENT, NO_SESSION
from chubbypy.protocol.client import (
    ClientRequest,
    ReadReply,
    ReadRequest,
    Register,
    Registered,
    ReplicaAddress,
    RequestId,
    ServerReply,
    SessionReply,
    SessionRequest,
    WriteReply,
    WriteRequest,
)
from chubbypy.protocol.errors import StaleRequest, Unavailable, UnknownClient
from chubbypy.protocol.namespace import Contents, GetContentsAndStat, WriteResult
from chubbypy.protocol.session import ListSessions, SessionInfo, SessionList
from chubbypy.testing._calls import ClientProcess, Send
from chubbypy.testing._registers import changed, increment, path_of, put
from chubbypy.testing._requests import OpKind, Reply, ReplyStatus, Request
from chubbypy.testing._world import MILLISECOND, Scheduler

if TYPE_CHECKING:
    from chubbypy.testing._checkers import Observer

REGISTERS = ("k0", "k1", "k2", "k3")
COUNTERS = ("c0", "c1")


def wire_request(request: Request, request_id: RequestId, credential: bytes) -> ClientRequest:
    """What the client sends for (the current phase of) `request`; a write shows
    `credential`, its client's (from its registration)."""
    match request.kind:
        case OpKind.REGISTER:
            return Register(request_id, request.sequence)
        case OpKind.READ:
            return ReadRequest(request_id, GetContentsAndStat(path_of(request.key)))
        case OpKind.INCREMENT if request.sequence == 0:
            return ReadRequest(request_id, GetContentsAndStat(path_of(request.key)))
        case OpKind.INCREMENT:
            seen = None if request.value < 0 else request.value
            write = increment(request.key, seen)
            return WriteRequest(request_id, request.client_id, credential, request.sequence,
                                request.sequence, write)  # fmt: skip
        case OpKind.WRITE:
            write = put(request.key, request.value)
            return WriteRequest(request_id, request.client_id, credential, request.sequence,
                                request.sequence, write)  # fmt: skip


def read_value(reply: ReadReply) -> int:
    """A register's value from a read's answer (-1: the file does not exist)."""
    return int(reply.result.contents) if isinstance(reply.result, Contents) else -1


def simulated_view(replicas: tuple[str, ...]) -> CellView:
    """A client's view of the simulated cell: its replicas' ids are their addresses."""

    def endpoint_of(member: ReplicaAddress) -> str:
        return member.replica_id

    return CellView(replicas, endpoint_of=endpoint_of)


class SimClient:
    """One client process (clients never crash; their requests and replies can be lost)."""

    def __init__(
        self,
        number: int,
        replicas: tuple[str, ...],
        process: ClientProcess,
        observer: Observer,
        rng: random.Random,
        settings: CallSettings,
        chance: Chance,
    ) -> None:
        self.name = process.name
        self._number = number
        self._process = process
        self._observer = observer
        self._rng = rng
        self._settings = settings
        self._chance = chance
        self._view = simulated_view(replicas)
        self._client_id = NO_CLIENT
        self._credential = b""
        self._next_sequence = 1
        self._op_id = 0
        self._request: Request | None = None
        self.stop_at = 0
        """No new operation starts at or after this true time."""

    @property
    def busy(self) -> bool:
        return self._request is not None

    def reply_received(self, replica: str, reply: ServerReply) -> None:
        self._process.reply_received(replica, reply)

    def connection_lost(self, replica: str) -> None:
        self._process.connection_lost(replica)

    def start(self, stop_at: int) -> None:
        self.stop_at = stop_at
        self._process.after(self._rng.randint(0, 20 * MILLISECOND), self._next_operation)

    def _next_operation(self) -> None:
        now = self._process.scheduler.now
        if self._request is not None or now >= self.stop_at:
            return
        self._op_id += 1
        self._request = self._choose()
        self._observer.invoked(self.name, self._request, now)
        self._perform(self._request)

    def _choose(self) -> Request:
        if self._client_id == NO_CLIENT:
            nonce = self._number * 1_000_000 + self._op_id
            return Request(self.name, self._op_id, OpKind.REGISTER, sequence=nonce)
        roll = self._rng.random()
        if roll < 0.35:
            return Request(self.name, self._op_id, OpKind.READ, key=self._rng.choice(REGISTERS))
        if roll < 0.7:
            key = self._rng.choice(REGISTERS)
            value = self._number * 1_000_000 + self._op_id
            return Request(self.name, self._op_id, OpKind.WRITE, self._client_id,
                           self._take_sequence(), key, value)  # fmt: skip
        key = self._rng.choice(COUNTERS)
        return Request(self.name, self._op_id, OpKind.INCREMENT, self._client_id, key=key)

    def _take_sequence(self) -> int:
        sequence = self._next_sequence
        self._next_sequence += 1  # never reused, whatever becomes of this command
        return sequence

    def _perform(self, request: Request) -> None:
        """Carry (the current phase of) `request` to the master."""
        deadline = self._process.now() + self._settings.timeout_seconds
        call = MasterCall(self._view, self._settings, deadline, chance=self._chance)
        credential = self._credential
        self._process.run(
            call,
            lambda rid: wire_request(request, rid, credential),
            lambda end: self._ended(request, end),
        )

    def _ended(self, request: Request, end: Finished | Failed) -> None:
        match end:
            case Failed(Unavailable()):
                # No master answered in time: as a program would, give up on this one (a
                # write's outcome stays unknown) and go on; the liveness checker requires
                # calls made while the cell is whole to be answered.
                self._finished(Reply(request.op_id, ReplyStatus.UNAVAILABLE))
            case Failed(UnknownClient() | StaleRequest()):
                # The replicas forgot this client: register again; the outcome stays unknown.
                self._client_id = NO_CLIENT
                self._finished(Reply(request.op_id, ReplyStatus.INDETERMINATE))
            case Failed(error):
                # No correct cell refuses this client's well-formed call so: a wrong answer.
                message = f"{self.name}: {request!r} refused: {error!r}"
                self._observer.violation("client answers", message)
                self._finished(Reply(request.op_id, ReplyStatus.INDETERMINATE))
            case Finished(Registered(_, client_id, credential)):
                self._client_id, self._credential = client_id, credential
                self._finished(Reply(request.op_id, ReplyStatus.OK, client_id))
            case Finished(ReadReply() as read) if request.kind is OpKind.INCREMENT:
                seen = read_value(read)
                self._request = evolve(request, sequence=self._take_sequence(), value=seen)
                self._perform(self._request)
            case Finished(ReadReply() as read):
                reply = Reply(request.op_id, ReplyStatus.OK, read_value(read), read.applied_index)
                self._finished(reply)
            case Finished(WriteReply(_, index, result)):
                self._written(request, index, result)
            case Finished(reply):
                message = f"{self.name}: {reply!r} answered {request!r}"
                self._observer.violation("client answers", message)
                self._finished(Reply(request.op_id, ReplyStatus.INDETERMINATE))

    def _written(self, request: Request, index: int, result: WriteResult) -> None:
        value = request.value if request.kind is OpKind.WRITE else request.value + 1
        if request.kind is OpKind.INCREMENT and request.value < 0:
            value = 1
        status = ReplyStatus.OK if changed(result) else ReplyStatus.CONFLICT
        self._finished(Reply(request.op_id, status, value, index, result))

    def _finished(self, reply: Reply) -> None:
        request = self._request
        assert request is not None
        self._observer.completed(self.name, request, reply, self._process.scheduler.now)
        self._request = None
        self._process.after(self._rng.randint(0, 30) * MILLISECOND, self._next_operation)


class ScriptClient:
    """A client a scenario test drives by hand: each call sends one request, with no retries.

    Requests and replies go through the simulated network and into the observer's history,
    so the checkers judge scripted operations like any others.
    """

    def __init__(
        self, name: str, number: int, scheduler: Scheduler, observer: Observer, send: Send
    ) -> None:
        self.name = name
        self._number = number
        self._scheduler = scheduler
        self._observer = observer
        self._send = send
        self.client_id = NO_CLIENT
        self.credential = b""
        """The credential the registration gave (a scenario may show another's instead)."""
        self._next_sequence = 1
        self._op_id = 0
        self._sent: dict[int, Request] = {}
        self.replies: dict[int, ServerReply] = {}
        self._listing = RequestId(0)
        self.listed: tuple[SessionInfo, ...] | None = None
        """The sessions of the last `sessions` call's answer."""

    def register(self, replica: str) -> int:
        return self._request(replica, OpKind.REGISTER, sequence=self._number * 1_000_000)

    def write(self, replica: str, key: str, value: int) -> int:
        assert self.client_id != NO_CLIENT, "register first"
        sequence = self._next_sequence
        self._next_sequence += 1
        return self._request(replica, OpKind.WRITE, sequence=sequence, key=key, value=value)

    def read(self, replica: str, key: str) -> int:
        return self._request(replica, OpKind.READ, key=key)

    def sessions(self, replica: str) -> tuple[SessionInfo, ...] | None:
        """Ask `replica` for its sessions as an operator would (`ListSessions`); the
        answer, once it comes, is `listed` (not part of the checked history)."""
        self._op_id += 1
        self.listed = None
        self._listing = RequestId(self._op_id)
        self._send(self.name, replica, SessionRequest(self._listing, ListSessions(NO_SESSION, 100)))
        return self.listed

    def _request(
        self, replica: str, kind: OpKind, *, sequence: int = 0, key: str = "", value: int = 0
    ) -> int:
        self._op_id += 1
        request = Request(self.name, self._op_id, kind, self.client_id, sequence, key, value)
        self._sent[self._op_id] = request
        self._observer.invoked(self.name, request, self._scheduler.now)
        wire = wire_request(request, RequestId(self._op_id), self.credential)
        self._send(self.name, replica, wire)
        return self._op_id

    def connection_lost(self, replica: str) -> None:
        """Nothing to do: a scripted request refused or lost just stays unanswered."""

    def reply_received(self, replica: str, reply: ServerReply) -> None:
        if reply.request_id == self._listing:
            if isinstance(reply, SessionReply) and isinstance(reply.result, SessionList):
                self.listed = reply.result.sessions
            return
        request = self._sent.get(reply.request_id)
        if request is None or reply.request_id in self.replies:
            return
        self.replies[reply.request_id] = reply
        match reply:
            case Registered(_, client_id, credential):
                self.client_id, self.credential = client_id, credential
                done = Reply(request.op_id, ReplyStatus.OK, client_id)
            case WriteReply(_, index, result):
                done = Reply(request.op_id, ReplyStatus.OK, request.value, index, result)
            case ReadReply():
                done = Reply(request.op_id, ReplyStatus.OK, read_value(reply), reply.applied_index)
            case _:
                # Refused (not the master, say): not acknowledged, and since a stepped-down
                # master's proposal may still be chosen, its outcome is unknown.
                done = Reply(request.op_id, ReplyStatus.INDETERMINATE)
        self._observer.completed(self.name, request, done, self._scheduler.now)
