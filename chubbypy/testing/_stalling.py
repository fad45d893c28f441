"""A hostile cacher for the simulator: a session that caches files and never acknowledges
their invalidations (issue 13's review, `cache_stall.py`).

It speaks the wire protocol directly, as an attacker would, not through the client
library: it creates a session, reads every file of its list with caching on, and keeps
the session alive with KeepAlives that acknowledge nothing. Every write to one of those
files then waits on it, until its lease runs out and the master expires it (the session
table gives a session that owes an invalidation's acknowledgement no longer lease). It
then opens another session and caches the files again; a file whose invalidation it was
sent is read again (cached once the write has landed), so that the next write to it
waits too. The scenario ``stalling-cacher`` runs it against the whole cell's workload,
whose liveness checker, with a bound of about one session lease, then says "no write is
held up by a cacher longer than a lease".
"""

from __future__ import annotations

from collections.abc import Callable

from chubbypy.protocol import NO_SESSION, SessionId
from chubbypy.protocol.client import (
    ErrorReply,
    RequestId,
    ServerReply,
    SessionReply,
    SessionRequest,
)
from chubbypy.protocol.errors import ErrorCode
from chubbypy.protocol.session import (
    CreateSession,
    EventKind,
    KeepAlive,
    LeaseExtended,
    NodeRead,
    ReadNode,
    SessionCall,
    SessionCreated,
)
from chubbypy.testing._calls import Send
from chubbypy.testing._world import MILLISECOND, Scheduler

PAUSE_US = 100 * MILLISECOND
"""How long it waits before asking again: a KeepAlive answered at once (it owes an
acknowledgement, so each is), a read answered uncached, a refusal."""


class StallingCacher:
    """The hostile cacher; see the module docstring. It talks to one replica (the master
    of a scenario without faults) and never follows another."""

    def __init__(self, name: str, scheduler: Scheduler, send: Send, paths: tuple[str, ...]) -> None:
        self.name = name
        self._scheduler = scheduler
        self._send = send
        self._paths = paths
        self._replica = ""
        self._session = NO_SESSION
        self._credential = b""
        self._generation = 0
        """Bumped with each new session: what was asked under an older one is ignored."""
        self._next_id = 0
        self._asked: dict[RequestId, tuple[int, SessionCall]] = {}
        self.sessions_opened = 0
        self.invalidations_left_unacknowledged = 0

    def start(self, replica: str) -> None:
        self._replica = replica
        self._create()

    # ------------------------------------------------------------------ the network

    def reply_received(self, replica: str, reply: ServerReply) -> None:
        asked = self._asked.pop(RequestId(reply.request_id), None)
        if asked is None or asked[0] != self._generation:
            return
        _, call = asked
        match reply:
            case SessionReply(_, SessionCreated(session_id, _, credential)):
                self._created(session_id, credential)
            case SessionReply(_, LeaseExtended(_, events)):
                invalidated = {e.path for e in events if e.kind is EventKind.INVALIDATE}
                self.invalidations_left_unacknowledged = len(invalidated)
                for path in sorted(invalidated):
                    self._read(path)
                self._later(self._keep_alive)
            case SessionReply(_, NodeRead(cached=False)) if isinstance(call, ReadNode):
                path = call.path
                self._later(lambda: self._read(path))  # busy: a write is on its way
            case ErrorReply(_, ErrorCode.SESSION_EXPIRED) if isinstance(call, KeepAlive):
                self._create()  # expired, as it should be: start again
            case ErrorReply():
                self._later(lambda: self._ask(call))

    def connection_lost(self, replica: str) -> None:
        """Nothing: it asks again when its answers stop coming (they do not, here)."""

    # ------------------------------------------------------------------ helpers

    def _create(self) -> None:
        self._generation += 1
        self._session, self._credential = NO_SESSION, b""
        self._ask(CreateSession(f"stalling-cacher {self._generation}", self._generation))

    def _created(self, session_id: SessionId, credential: bytes) -> None:
        self._session, self._credential = session_id, credential
        self.sessions_opened += 1
        for path in self._paths:
            self._read(path)
        self._keep_alive()

    def _read(self, path: str) -> None:
        self._ask(ReadNode(self._session, self._credential, path, True))

    def _keep_alive(self) -> None:
        self._ask(KeepAlive(self._session, self._credential, 0))  # acknowledges nothing

    def _ask(self, call: SessionCall) -> None:
        self._next_id += 1
        request_id = RequestId(self._next_id)
        self._asked[request_id] = (self._generation, call)
        self._send(self.name, self._replica, SessionRequest(request_id, call))

    def _later(self, action: Callable[[], None]) -> None:
        generation = self._generation

        def act() -> None:
            if generation == self._generation:
                action()

        self._scheduler.after(PAUSE_US, act)
