"""A simulated operator: now and then it ends a random live session, as ``chubbypy sessions
--end`` does, so that every checker judges what an operator's end does to a session's
client and its locks.

It lists the cell's sessions (`ListSessions`) and ends one of those listed "live"
(`KillSession`), each call carried to the master by the client library's own call core
(`chubbypy.client.core.MasterCall`, over the simulated network: `chubbypy.testing._calls`),
as the lock clients' calls are. It needs no session of its own: the simulated cell's
operators are its anonymous clients (``auth.admins``). The lock checkers then judge the
ended session as any other: it must not expire in the log before its client's view of its
lease ended (session safety), and its client must not act on its lock once the lock could
be someone else's (mutual exclusion, fencing), nor read a stale cache (cache coherence).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from chubbypy.client.core import CallSettings, CellView, Failed, Finished, MasterCall
from chubbypy.paxos import Chance
from chubbypy.protocol import NO_SESSION
from chubbypy.protocol.client import ServerReply, SessionReply, SessionRequest
from chubbypy.protocol.session import (
    KillSession,
    ListSessions,
    SessionCall,
    SessionEnding,
    SessionList,
)
from chubbypy.testing._calls import ClientProcess
from chubbypy.testing._client import simulated_view
from chubbypy.testing._lock_checks import LockObserver
from chubbypy.testing._world import SECOND

END_INTERVAL_SECONDS = 3.0
"""The mean time between two of the operator's ends (about one and a half session leases
of the simulated cell: most lock clients' sessions are ended once or twice in a run)."""


class SimOperator:
    """One operator's client process; see the module docstring."""

    def __init__(
        self,
        replicas: tuple[str, ...],
        process: ClientProcess,
        observer: LockObserver,
        rng: random.Random,
        calls: CallSettings,
        chance: Chance,
        say: Callable[[str], None],
    ) -> None:
        self.name = process.name
        self._process = process
        self._observer = observer
        self._rng = rng
        self._calls = calls
        self._chance = chance
        self._say = say
        self._view = simulated_view(replicas)
        self.stop_at = 0
        """No end starts at or after this true time."""

    def start(self, stop_at: int) -> None:
        self.stop_at = stop_at
        self._later()

    def reply_received(self, replica: str, reply: ServerReply) -> None:
        self._process.reply_received(replica, reply)

    def connection_lost(self, replica: str) -> None:
        self._process.connection_lost(replica)

    def _later(self) -> None:
        pause = self._rng.expovariate(1 / END_INTERVAL_SECONDS)
        self._process.after(int(pause * SECOND), self._list)

    def _list(self) -> None:
        if self._process.scheduler.now >= self.stop_at:
            return
        self._call(ListSessions(NO_SESSION, 100), self._listed)

    def _listed(self, result: object) -> None:
        live = [] if not isinstance(result, SessionList) else result.sessions
        live = [info for info in live if info.state == "live"]
        if not live:
            self._later()
            return
        chosen = self._rng.choice(live).session_id
        self._call(KillSession(chosen), lambda ended: self._ended(chosen, ended))

    def _ended(self, session_id: int, result: object) -> None:
        if isinstance(result, SessionEnding):
            self._say(
                f"operator: session {session_id} found {result.found}, ending already "
                f"{result.already}, ends in {result.ends_in_ms} ms"
            )
            self._observer.operator_ended(session_id, result)
        self._later()

    def _call(self, call: ListSessions | KillSession, ended: Callable[[object], None]) -> None:
        operator_call(self._process, self._view, self._calls, self._chance, call, ended)


def operator_call(
    process: ClientProcess,
    view: CellView,
    calls: CallSettings,
    chance: Chance,
    call: SessionCall,
    ended: Callable[[object], None],
) -> None:
    """Carry an operator's `call` (no session of its own) to the master with the client
    library's call core; `ended` hears its result, or its error."""
    deadline = process.now() + calls.timeout_seconds
    master_call = MasterCall(view, calls, deadline, chance=chance)

    def finished(end: Finished | Failed) -> None:
        if isinstance(end, Failed):
            ended(end.error)
        else:
            assert isinstance(end.reply, SessionReply), end.reply
            ended(end.reply.result)

    process.run(master_call, lambda rid: SessionRequest(rid, call), finished)
