"""A simulated client: a workload of writes, reads and increments, retried across fail-overs.

One operation at a time. A write or increment keeps its (client id, sequence) across every
retry, so the replicas can apply it exactly once; the client moves to another replica on a
timeout, and to the hinted master on a "not master" reply.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from chubbypy.protocol import NO_CLIENT, ClientId
from chubbypy.testing._requests import OpKind, Reply, ReplyStatus, Request
from chubbypy.testing._world import MILLISECOND, Scheduler

if TYPE_CHECKING:
    from chubbypy.testing._checkers import Observer

REGISTERS = ("k0", "k1", "k2", "k3")
COUNTERS = ("c0", "c1")


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
        send: Callable[[str, str, Request], None],
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
        self._attempt = 0
        self._transmit()

    def _choose(self) -> Request:
        if self._client_id == NO_CLIENT:
            nonce = self._number * 1_000_000 + self._op_id
            return Request(self.name, self._op_id, OpKind.REGISTER, sequence=nonce)
        roll = self._rng.random()
        if roll < 0.35:
            return Request(self.name, self._op_id, OpKind.READ, key=self._rng.choice(REGISTERS))
        sequence = self._next_sequence
        self._next_sequence += 1
        if roll < 0.7:
            key = self._rng.choice(REGISTERS)
            value = self._number * 1_000_000 + self._op_id
            return Request(
                self.name, self._op_id, OpKind.WRITE, self._client_id, sequence, key, value
            )
        key = self._rng.choice(COUNTERS)
        return Request(self.name, self._op_id, OpKind.INCREMENT, self._client_id, sequence, key)

    def _transmit(self) -> None:
        request = self._request
        assert request is not None
        self._attempt += 1
        attempt = self._attempt
        self._send(self.name, self._replicas[self._target], request)
        self._scheduler.after(self._timeout_us, lambda: self._timed_out(request.op_id, attempt))

    def _timed_out(self, op_id: int, attempt: int) -> None:
        if self._request is None or self._request.op_id != op_id or self._attempt != attempt:
            return
        self._target = (self._target + 1) % len(self._replicas)
        self._transmit()

    def reply_received(self, replica: str, reply: Reply) -> None:
        request = self._request
        if request is None or reply.op_id != request.op_id:
            return  # a late reply to an operation already finished
        match reply.status:
            case ReplyStatus.OK:
                if request.kind is OpKind.REGISTER:
                    self._client_id = ClientId(reply.value)
                self._finished(reply)
            case ReplyStatus.INDETERMINATE:
                # The replicas forgot this client: register again; the outcome stays unknown.
                self._client_id = NO_CLIENT
                self._finished(reply)
            case ReplyStatus.NOT_MASTER:
                if reply.hint is not None and reply.hint != replica:
                    self._target = self._replicas.index(reply.hint)
                else:
                    self._target = (self._replicas.index(replica) + 1) % len(self._replicas)
                self._retry_soon()
            case ReplyStatus.BUSY | ReplyStatus.RETRY:
                self._retry_soon()

    def _retry_soon(self) -> None:
        request = self._request
        assert request is not None
        self._attempt += 1  # the pending timeout no longer applies
        attempt = self._attempt

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
        self,
        name: str,
        number: int,
        scheduler: Scheduler,
        observer: Observer,
        send: Callable[[str, str, Request], None],
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
        self.replies: dict[int, Reply] = {}

    def register(self, replica: str) -> int:
        return self._request(replica, OpKind.REGISTER, sequence=self._number * 1_000_000)

    def write(self, replica: str, key: str, value: int) -> int:
        return self._command(replica, OpKind.WRITE, key, value)

    def increment(self, replica: str, key: str) -> int:
        return self._command(replica, OpKind.INCREMENT, key, 0)

    def read(self, replica: str, key: str) -> int:
        return self._request(replica, OpKind.READ, key=key)

    def _command(self, replica: str, kind: OpKind, key: str, value: int) -> int:
        assert self.client_id != NO_CLIENT, "register first"
        sequence = self._next_sequence
        self._next_sequence += 1
        return self._request(replica, kind, sequence=sequence, key=key, value=value)

    def _request(
        self, replica: str, kind: OpKind, *, sequence: int = 0, key: str = "", value: int = 0
    ) -> int:
        self._op_id += 1
        request = Request(self.name, self._op_id, kind, self.client_id, sequence, key, value)
        self._sent[self._op_id] = request
        self._observer.invoked(self.name, request, self._scheduler.now)
        self._send(self.name, replica, request)
        return self._op_id

    def reply_received(self, replica: str, reply: Reply) -> None:
        request = self._sent.get(reply.op_id)
        if request is None or reply.op_id in self.replies:
            return
        self.replies[reply.op_id] = reply
        if request.kind is OpKind.REGISTER and reply.status is ReplyStatus.OK:
            self.client_id = ClientId(reply.value)
        self._observer.completed(self.name, request, reply, self._scheduler.now)
