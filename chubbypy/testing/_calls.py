"""One simulated client process, and its calls carried by the client library's own core.

It plays, over the simulated network, the part that `chubbypy.client.PlainCell`'s call loop
and `ReplicaConnection` play over TCP, and only that part (I/O): it numbers requests and
sends them where a `chubbypy.client.core.MasterCall` step says, times each attempt out on
the process's drifting clock, asks every replica where the master is when told to, sleeps
out pauses, and reports every reply, failure and timeout back to the call, whose steps
decide everything else (where to go next, what to retry, how long to back off). Replies
to attempts already given up are dropped, as a connection drops the reply to a request
that timed out.

Connections. A replica's crash resets its connections: each client connected to it hears
of it over the network (which may lose the news, as a partition loses a reset), and its
attempts there fail at once. A `SendRequest` with `drop_after_send` closes the connection
right after the request left. A frozen process (SIGSTOP, a long GC) handles nothing until
it wakes, while its clock runs on.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

from attrs import define, field

from chubbypy.client.core import (
    AskLocations,
    CallStep,
    ConnectionClosed,
    Failed,
    Finished,
    MasterCall,
    Pause,
    RequestTimedOut,
    SendRequest,
)
from chubbypy.protocol.client import ClientRequest, LocateMaster, RequestId, ServerReply
from chubbypy.testing._world import SECOND, Clock, Scheduler

MakeRequest = Callable[[RequestId], ClientRequest]
Ended = Callable[[Finished | Failed], None]
Send = Callable[[str, str, ClientRequest], None]
"""(client, replica, request): over the simulated network."""
Close = Callable[[str, str], None]
"""(client, replica): the client closes its connection."""


@define
class _Running:
    """One call in progress: its core, its request, and what it waits for now."""

    call: MasterCall
    make: MakeRequest
    ended: Ended
    attempt: RequestId | None = None
    """The request id of the attempt it waits for (a `SendRequest`)."""
    address: str = ""
    asked: dict[RequestId, str] = field(factory=dict)
    """The `LocateMaster`s of the location round it waits for, by request id."""


class ClientProcess:
    """A simulated client process's clock, timers and calls; see the module docstring."""

    def __init__(
        self, name: str, clock: Clock, scheduler: Scheduler, send: Send, close: Close
    ) -> None:
        self.name = name
        self._clock = clock
        self.scheduler = scheduler
        self._send = send
        self._close = close
        self._request_ids = itertools.count(1)
        self._attempts: dict[RequestId, _Running] = {}
        self._paused_until = 0
        self._deferred: list[Callable[[], None]] = []
        """What happened while the process was frozen, in order."""

    # ------------------------------------------------------------------ time

    def now(self) -> float:
        """The process's local time, in seconds."""
        return self._clock.local(self.scheduler.now) / SECOND

    def true_at(self, local_seconds: float) -> int:
        """The true time (µs) at which the local clock reads `local_seconds`."""
        return self._clock.true_at(int(local_seconds * SECOND))

    def at(self, local_seconds: float, action: Callable[[], None]) -> None:
        """Run `action` once the local clock reads more than `local_seconds` (a timer set for
        a deadline finds it passed; the clock counts whole microseconds), or once awake."""
        local_us = math.ceil(local_seconds * SECOND) + 1
        when = max(self.scheduler.now, self._clock.true_at(local_us))
        self.scheduler.at(when, lambda: self.awake(action))

    def after(self, delay_us: int, action: Callable[[], None]) -> None:
        self.scheduler.after(delay_us, lambda: self.awake(action))

    def pause(self, until: int) -> None:
        """Freeze the process until true time `until`: it handles nothing meanwhile."""
        if until > self._paused_until:
            self._paused_until = until
            self.scheduler.at(until, lambda: self._woke(until))

    def resume(self) -> None:
        """Thaw the process now (SIGCONT), whatever its pause said."""
        self._paused_until = self.scheduler.now
        self._woke(self._paused_until)

    def awake(self, action: Callable[[], None]) -> None:
        """Run `action` now, or when the process wakes if it is frozen."""
        if self.scheduler.now < self._paused_until:
            self._deferred.append(action)
            return
        action()

    def _woke(self, until: int) -> None:
        if until != self._paused_until:
            return  # a later pause, or a resume, took over
        deferred, self._deferred = self._deferred, []
        for action in deferred:
            action()

    # ------------------------------------------------------------------ calls

    def run(self, call: MasterCall, make: MakeRequest, ended: Ended) -> None:
        """Carry `call` (its request made by `make`) until it ends, then tell `ended`."""
        running = _Running(call, make, ended)
        self._step(running, call.started(self.now()))

    def reply_received(self, replica: str, reply: ServerReply) -> None:
        self.awake(lambda: self._replied(replica, reply))

    def connection_lost(self, replica: str) -> None:
        """The connection to `replica` was reset: every attempt there fails now."""
        self.awake(lambda: self._lost(replica))

    def _replied(self, replica: str, reply: ServerReply) -> None:
        running = self._attempts.pop(reply.request_id, None)
        if running is None:
            return  # an attempt given up on, or a duplicate
        now = self.now()
        if reply.request_id == running.attempt:
            running.attempt = None
            self._step(running, running.call.replied(now, reply))
        elif running.asked.pop(reply.request_id, None) is not None:
            self._step(running, running.call.location_answered(now, replica, reply))

    def _lost(self, replica: str) -> None:
        for request_id, running in list(self._attempts.items()):
            if running.attempt == request_id and running.address == replica:
                self._attempt_failed(running, request_id, ConnectionClosed("connection reset"))
            elif running.asked.get(request_id) == replica:
                self._ask_failed(running, request_id, ConnectionClosed("connection reset"))

    # ------------------------------------------------------------------ steps

    def _step(self, running: _Running, step: CallStep | None) -> None:
        match step:
            case None:
                pass  # a location round waits for other replicas
            case SendRequest(address, _, reply_seconds, drop):
                self._attempt(running, address, reply_seconds, drop)
            case AskLocations(addresses, attempt_seconds):
                for address in addresses:
                    self._ask(running, address, attempt_seconds)
            case Pause(until):
                self.at(until, lambda: self._step(running, running.call.pause_ended(self.now())))
            case Finished() | Failed():
                running.ended(step)

    def _attempt(self, running: _Running, address: str, seconds: float, drop: bool) -> None:
        request_id = RequestId(next(self._request_ids))
        running.attempt, running.address = request_id, address
        self._attempts[request_id] = running
        self._send(self.name, address, running.make(request_id))
        if drop:
            self._close(self.name, address)
            self._attempt_failed(running, request_id, ConnectionClosed("dropped after sending"))
            return
        timeout = RequestTimedOut(f"{address}: no reply within {seconds:g} s")
        self.at(self.now() + seconds, lambda: self._attempt_failed(running, request_id, timeout))

    def _attempt_failed(self, running: _Running, request_id: RequestId, error: Exception) -> None:
        if running.attempt != request_id:
            return  # answered, or failed already
        running.attempt = None
        self._attempts.pop(request_id, None)
        self._step(running, running.call.send_failed(self.now(), error))

    def _ask(self, running: _Running, address: str, seconds: float) -> None:
        request_id = RequestId(next(self._request_ids))
        running.asked[request_id] = address
        self._attempts[request_id] = running
        self._send(self.name, address, LocateMaster(request_id))
        timeout = RequestTimedOut(f"{address}: no location within {seconds:g} s")
        self.at(self.now() + seconds, lambda: self._ask_failed(running, request_id, timeout))

    def _ask_failed(self, running: _Running, request_id: RequestId, error: Exception) -> None:
        address = running.asked.pop(request_id, None)
        if address is None:
            return
        self._attempts.pop(request_id, None)
        self._step(running, running.call.location_failed(self.now(), address, error))
