"""The replica's reactor: epoll, with peers first and a bounded share for clients per turn.

Shell side (STYLE §6). Twisted's epoll reactor handles, in one turn, every descriptor that
is ready: with 20,000 client connections sending a hello at once, one turn took longer
than the master's lease, the master stopped hearing its peers and sending its renewals,
and lost the lease (issue 13). A master keeps its lease only if every turn is short and
its peers' messages are never queued behind clients' bytes.

Theory of operation. Descriptors are in one of two epoll sets. Everything starts in the
*first* set: the peer port and peer connections, the admin port, the client port's
listening socket, the store's and the waker's pipes. A client connection is moved to the
*client* set when it is made (`demote`, called by the client port), and stays there while
it lives; the client set's own descriptor is in the first set, so a ready client wakes
the reactor like anything else. Each turn (`doPoll`):

1. the first set is polled (waiting up to the timers' timeout), and every ready
   descriptor in it is handled: peers' messages, admin requests, accepts;
2. if the client set is ready, at most `client_events_per_turn` of its ready descriptors
   are handled, without waiting. Epoll hands level-triggered descriptors out in turn, so
   a busy client is not served twice before a waiting one is served once.

Then the reactor runs its timers (the node's ticks, the master's lease renewals, the
client port's next turn of requests) and turns again. So a turn costs at most the peers'
work plus `client_events_per_turn` client reads (each bounded: the client port queues what
a read brings and works through it under its own per-turn budget). Accepting is bounded
by the listening socket's backlog.

Platforms without epoll (or a reactor installed before this one) run with Twisted's
default reactor, without these bounds; the replica says so in its log.
"""

from __future__ import annotations

import errno
import select
import time
import weakref
from typing import Any, Final

from twisted.internet.epollreactor import EPollReactor
from twisted.python import log as legacy_log

from chubbypy.node import Histogram

__all__ = ["CLIENT_EVENTS_PER_TURN_DEFAULT", "PeersFirstReactor", "install"]

CLIENT_EVENTS_PER_TURN_DEFAULT: Final = 64
"""``limits.client_reads_per_turn``'s default."""


class PeersFirstReactor(EPollReactor):
    """Twisted's epoll reactor with client descriptors in a set of their own, polled
    second and at most `client_events_per_turn` at a time; see the module docstring."""

    def __init__(self) -> None:
        # Before Twisted's own set-up, which adds the waker through `_add`.
        self._client_poller = select.epoll()
        self._client_selectables: weakref.WeakSet[Any] = weakref.WeakSet()
        super().__init__()  # type: ignore[no-untyped-call]
        self._poller.register(self._client_poller.fileno(), select.EPOLLIN)
        self.client_events_per_turn = CLIENT_EVENTS_PER_TURN_DEFAULT
        self.client_events_deferred = 0
        """Turns that left ready client descriptors for a later turn."""
        self.turn_seconds = Histogram(
            "chubbypy_reactor_turn_seconds",
            "Time one turn of the event loop spent working (timers, then ready descriptors), "
            "not waiting. The master's lease needs every turn well under its length.",
            (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
        )
        self._timers_seconds = 0.0

    def demote(self, selectable: Any) -> None:
        """Serve `selectable` (a client connection's file descriptor) from the client set
        from now on: after the peers, and a bounded number per turn."""
        if selectable in self._client_selectables:
            return
        fd = selectable.fileno()
        self._client_selectables.add(selectable)
        if self._selectables.get(fd) is not selectable:
            return  # not registered yet: `_add` puts it in the client set
        flags = (select.EPOLLIN if fd in self._reads else 0) | (
            select.EPOLLOUT if fd in self._writes else 0
        )
        self._poller.unregister(fd)
        self._client_poller.register(fd, flags)

    # Twisted's `_add` and `_remove` keep its bookkeeping (`_reads`, `_writes`,
    # `_selectables`) and call `self._poller`; for a client descriptor they are pointed at
    # the client set for the duration of the call.

    def _add(self, xer: Any, *args: Any) -> None:
        if xer in self._client_selectables:
            main, self._poller = self._poller, self._client_poller
            try:
                super()._add(xer, *args)  # type: ignore[no-untyped-call]
            finally:
                self._poller = main
        else:
            super()._add(xer, *args)  # type: ignore[no-untyped-call]

    def _remove(self, xer: Any, *args: Any) -> None:
        if xer in self._client_selectables:
            main, self._poller = self._poller, self._client_poller
            try:
                super()._remove(xer, *args)  # type: ignore[no-untyped-call]
            finally:
                self._poller = main
        else:
            super()._remove(xer, *args)  # type: ignore[no-untyped-call]

    def runUntilCurrent(self) -> None:
        started = time.perf_counter()
        super().runUntilCurrent()
        self._timers_seconds = time.perf_counter() - started

    def doPoll(self, timeout: float | None) -> None:
        """One turn: the first set's ready descriptors, then a bounded share of clients'."""
        client_fd = self._client_poller.fileno()
        ready = self._poll(self._poller, -1 if timeout is None else timeout)
        started = time.perf_counter()
        try:
            self._handle(ready, client_fd)
        finally:
            busy = self._timers_seconds + time.perf_counter() - started
            self.turn_seconds.observe(busy)

    doIteration = doPoll

    def _handle(self, ready: list[tuple[int, int]], client_fd: int) -> None:
        clients_ready = False
        for fd, event in ready:
            if fd == client_fd:
                clients_ready = True
            else:
                self._dispatch(fd, event)
        if clients_ready:
            budget = self.client_events_per_turn
            events = self._poll(self._client_poller, 0, budget)
            if len(events) == budget:
                self.client_events_deferred += 1
            for fd, event in events:
                self._dispatch(fd, event)

    def _poll(
        self, poller: select.epoll, timeout: float, most: int | None = None
    ) -> list[tuple[int, int]]:
        try:
            return poller.poll(timeout, most or max(1, len(self._selectables) + 1))
        except OSError as error:
            if error.errno == errno.EINTR:
                return []
            raise

    def _dispatch(self, fd: int, event: int) -> None:
        selectable = self._selectables.get(fd)
        if selectable is not None:
            legacy_log.callWithLogger(  # type: ignore[no-untyped-call]
                selectable, self._doReadOrWrite, selectable, fd, event
            )


def install() -> PeersFirstReactor:
    """Install the replica's reactor as Twisted's global one (before anything imports
    ``twisted.internet.reactor``); the reactor installed."""
    from twisted.internet.main import installReactor

    reactor = PeersFirstReactor()
    installReactor(reactor)  # type: ignore[no-untyped-call]
    return reactor
