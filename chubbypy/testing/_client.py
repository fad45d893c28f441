"""A simulated register client: writes, reads and increments over the wire protocol, retried
across fail-overs.

One operation at a time. Requests are the wire's own values (`Register`, `WriteRequest`,
`ReadRequest`), sent to a simulated replica node and answered with `ServerReply` values. A
write keeps its (client id, sequence) across every retry, so the cell applies it exactly
once; the client moves to another replica on a timeout, and to the hinted master on a
NOT_MASTER reply. An increment reads the counter first, then writes it plus one guarded by
what it read (`chubbypy.testing._registers.increment`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from attrs import evolve

from chubbypy.protocol import NO_CLIENT
from chubbypy.protocol.client import (
    ClientRequest,
    ErrorReply,
    ReadReply,
    ReadRequest,
    Register,
    Registered,
    RequestId,
    ServerReply,
    WriteReply,
    WriteRequest,
)
from chubbypy.protocol.errors import ErrorCode
from chubbypy.protocol.namespace import Contents, GetContentsAndStat
from chubbypy.testing._registers import changed, increment, path_of, put
from chubbypy.testing._requests import OpKind, Reply, ReplyStatus, Request
from chubbypy.testing._world import MILLISECOND, Scheduler

if TYPE_CHECKING:
    from chubbypy.testing._checkers import Observer

REGISTERS = ("k0", "k1", "k2", "k3")
COUNTERS = ("c0", "c1")

RETRIED = frozenset({ErrorCode.NOT_MASTER, ErrorCode.BUSY, ErrorCode.EPOCH_CHANGED})
"""Errors that say "not here, or not now": the same request is sent again."""
FORGOTTEN = frozenset({ErrorCode.UNKNOWN_CLIENT, ErrorCode.STALE_REQUEST})
"""The cell forgot this client, or the result: the outcome stays unknown."""

Send = Callable[[str, str, ClientRequest], None]


def wire_request(request: Request, request_id: RequestId) -> ClientRequest:
    """What the client sends for (the current phase of) `request`."""
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
            return WriteRequest(request_id, request.client_id, request.sequence,
                                request.sequence, write)  # fmt: skip
        case OpKind.WRITE:
            write = put(request.key, request.value)
            return WriteRequest(request_id, request.client_id, request.sequence,
                                request.sequence, write)  # fmt: skip


def read_value(reply: ReadReply) -> int:
    """A register's value from a read's answer (-1: the file does not exist)."""
    return int(reply.result.contents) if isinstance(reply.result, Contents) else -1


class SimClient:
    """One client process (clients never crash; their requests and replies can be lost)."""

    def __init__(
        self,
        name: str,
        number: int,
        replicas: tuple[str, ...],
        scheduler: Scheduler,
        observer: Observer,
        rng: random.Random,
        send: Send,
        timeout_us: int,
    ) -> None:
        self.name = name
        self._number = number
        self._replicas = replicas
        self._scheduler = scheduler
        self._observer = observer
        self._rng = rng
        self._send = send
        self._timeout_us = timeout_us
        self._client_id = NO_CLIENT
        self._next_sequence = 1
        self._op_id = 0
        self._request: Request | None = None
        self._attempt = 0
        self._request_ids: set[int] = set()
        """The ids this phase of the operation was sent with: an answer to any will do."""
        self._last_request_id = 0
        self._target = rng.randrange(len(replicas))
        self.stop_at = 0
        """No new operation starts at or after this true time."""

    @property
    def busy(self) -> bool:
        return self._request is not None

    def start(self, stop_at: int) -> None:
        self.stop_at = stop_at
        self._scheduler.after(self._rng.randint(0, 20 * MILLISECOND), self._next_operation)

    def _next_operation(self) -> None:
        if self._request is not None or self._scheduler.now >= self.stop_at:
            return
        self._op_id += 1
        self._request = self._choose()
        self._observer.invoked(self.name, self._request, self._scheduler.now)
        self._begin_phase()

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

    def _begin_phase(self) -> None:
        self._attempt = 0
        self._request_ids = set()
        self._transmit()

    def _transmit(self) -> None:
        request = self._request
        assert request is not None
        self._attempt += 1
        self._last_request_id += 1
        request_id = RequestId(self._last_request_id)
        self._request_ids.add(request_id)
        attempt = self._attempt
        replica = self._replicas[self._target]
        self._send(self.name, replica, wire_request(request, request_id))
        self._scheduler.after(self._timeout_us, lambda: self._timed_out(request.op_id, attempt))

    def _timed_out(self, op_id: int, attempt: int) -> None:
        if self._request is None or self._request.op_id != op_id or self._attempt != attempt:
            return
        self._target = (self._target + 1) % len(self._replicas)
        self._transmit()

    def reply_received(self, replica: str, reply: ServerReply) -> None:
        request = self._request
        if request is None or reply.request_id not in self._request_ids:
            return  # a late reply to an operation already finished
        match reply:
            case ErrorReply(code=code) if code in RETRIED:
                self._redirect(replica, reply)
            case ErrorReply(code=code) if code in FORGOTTEN:
                # The replicas forgot this client: register again; the outcome stays unknown.
                self._client_id = NO_CLIENT
                self._finished(Reply(request.op_id, ReplyStatus.INDETERMINATE))
            case Registered(_, client_id):
                self._client_id = client_id
                self._finished(Reply(request.op_id, ReplyStatus.OK, client_id))
            case ReadReply() if request.kind is OpKind.INCREMENT:
                seen = read_value(reply)
                self._request = evolve(request, sequence=self._take_sequence(), value=seen)
                self._begin_phase()
            case ReadReply():
                self._finished(
                    Reply(request.op_id, ReplyStatus.OK, read_value(reply), reply.applied_index)
                )
            case WriteReply(_, index, result):
                self._written(request, index, result)
            case _:
                raise AssertionError(f"{self.name}: unexpected {reply!r} to {request!r}")

    def _written(self, request: Request, index: int, result: object) -> None:
        value = request.value if request.kind is OpKind.WRITE else request.value + 1
        if request.kind is OpKind.INCREMENT and request.value < 0:
            value = 1
        status = ReplyStatus.OK if changed(result) else ReplyStatus.CONFLICT  # type: ignore[arg-type]
        self._finished(Reply(request.op_id, status, value, index, result))  # type: ignore[arg-type]

    def _redirect(self, replica: str, reply: ErrorReply) -> None:
        if reply.code is ErrorCode.NOT_MASTER:
            hint = reply.master_hint
            if hint is not None and hint != replica and hint in self._replicas:
                self._target = self._replicas.index(hint)
            else:
                self._target = (self._replicas.index(replica) + 1) % len(self._replicas)
        self._attempt += 1  # the pending timeout no longer applies
        attempt, request = self._attempt, self._request

        def again() -> None:
            if self._request is request and self._attempt == attempt:
                self._transmit()

        self._scheduler.after(self._rng.randint(5, 50) * MILLISECOND, again)

    def _finished(self, reply: Reply) -> None:
        request = self._request
        assert request is not None
        self._observer.completed(self.name, request, reply, self._scheduler.now)
        self._request = None
        self._scheduler.after(self._rng.randint(0, 30) * MILLISECOND, self._next_operation)


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
        self._next_sequence = 1
        self._op_id = 0
        self._sent: dict[int, Request] = {}
        self.replies: dict[int, ServerReply] = {}

    def register(self, replica: str) -> int:
        return self._request(replica, OpKind.REGISTER, sequence=self._number * 1_000_000)

    def write(self, replica: str, key: str, value: int) -> int:
        assert self.client_id != NO_CLIENT, "register first"
        sequence = self._next_sequence
        self._next_sequence += 1
        return self._request(replica, OpKind.WRITE, sequence=sequence, key=key, value=value)

    def read(self, replica: str, key: str) -> int:
        return self._request(replica, OpKind.READ, key=key)

    def _request(
        self, replica: str, kind: OpKind, *, sequence: int = 0, key: str = "", value: int = 0
    ) -> int:
        self._op_id += 1
        request = Request(self.name, self._op_id, kind, self.client_id, sequence, key, value)
        self._sent[self._op_id] = request
        self._observer.invoked(self.name, request, self._scheduler.now)
        self._send(self.name, replica, wire_request(request, RequestId(self._op_id)))
        return self._op_id

    def reply_received(self, replica: str, reply: ServerReply) -> None:
        request = self._sent.get(reply.request_id)
        if request is None or reply.request_id in self.replies:
            return
        self.replies[reply.request_id] = reply
        match reply:
            case Registered(_, client_id):
                self.client_id = client_id
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
