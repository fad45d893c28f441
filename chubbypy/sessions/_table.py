"""The master's session table: session leases, KeepAlives, and the events they carry.
Pure: driven by ticks of the master's clock and by what the log applied; no I/O.

Chubby §2.8, §2.9. Theory of operation.

* **Leases.** Every live session has a lease expiry, in ticks of the master's clock. The
  master promises not to end a session before it, so the expiry only ever moves forward:
  when a session is opened (`opened`), when a master starts (`start`: every session the
  database holds gets a whole lease from now, which is at least as long as anything the
  previous master, whose own master lease has run out, could have granted, plus
  `failover_extra_ticks` for clock drift), and when the master answers a KeepAlive.
* **KeepAlives.** The client keeps one KeepAlive parked at the master (`keep_alive`). The
  master answers it when its lease has `answer_before_ticks` or less to run, or at once
  when there are events to deliver; answering extends the lease to a whole
  `lease_ticks` from now. Each answer carries every event not yet acknowledged; the next
  KeepAlive acknowledges them by sequence number (`acked_through`), and a KeepAlive that
  leaves some unacknowledged (its answer was lost with a connection) is answered at once
  with them again; the client drops sequence numbers it has seen. A second KeepAlive for
  the same session answers the first at once.
* **Owing an acknowledgement.** Some events hold others up until the session acknowledges
  them (`AWAITED`): the fail-over event holds every write (see below), an invalidation
  holds the write that changes the name (`chubbypy.master._cache`). A session *owes* such
  an event from `start` (the fail-over event: the lease `start` grants covers it) or from
  the answer that first delivered it (an invalidation), until a KeepAlive acknowledges
  it; while it owes one its KeepAlives are still answered, with its events, but its lease
  does not grow (`_answer`). So a client that KeepAlives without acknowledging cannot
  hold a write up past the lease it had when it was told: its session then ends, as
  expired, and the write goes (Chubby §2.5: the master waits for every cacher's
  acknowledgement *or* for its lease to expire). A client library acknowledges every
  event in the KeepAlive it sends after the answer that carried it, so an honest client
  never owes one when its next KeepAlive is answered, and its lease grows as always.
* **Ending, never early.** The master ends a session only once its lease has run out on
  the master's clock (the client's own view of its lease is shorter, see the client), by
  listing it once in `Outputs.expire`: the shell proposes `EndSession(expired=True)` and
  calls `ended` when it was applied (or a later master does, if this one lost mastership
  first). From then on its KeepAlives are refused, never answered, so its lease cannot
  grow while the end is in flight. A client that closes its session ends it at once
  (`EndSession(expired=False)`, through the shell); as in Chubby, it is the client
  library that closes a session idle for a minute with no open handles, because only the
  client knows its handles across a fail-over.
* **An operator's end** (`operator_ending`, for `MasterService.kill_session`) is no
  exception: from then on the session's KeepAlives are refused (the parked one at once),
  so its lease stops growing and its client hears that the session is over, but it is
  expired only when the lease it has runs out, as a doomed one is. Until then its client
  may still believe in its lease and act on its locks and its cache; ending it earlier
  would hand its locks on while it may still act on them. The mark is memory: a new
  master grants the session a whole lease like every other (an operator ends it again).
* **Fail-over (§2.9).** `start` queues a master-fail-over event for every session; until
  each has acknowledged it or its lease is over (or it is closing), `failover_complete` is
  False and the shell serves KeepAlives only, so no session acts on state it may have
  cached from the old master; a session that KeepAlives without acknowledging it owes
  it, and so gets no lease past the one `start` gave it. Event numbers carry the
  master's epoch in their high bits
  (`first_sequence`), so a new master's events always number above the old one's, and a
  client that acknowledged the old master's events does not take the new ones for
  repeats.
* **Closing.** `closing` marks a session whose close is in flight: like an ending one it
  is no longer live and its KeepAlives are refused.
* **Refused, not yet ended.** A doomed session, a closing one and one an operator ended
  all stop being extended the same way (`_stop_extending`): refused, and expired at the
  end of the lease they have. A doomed one and one an operator ended may not know it yet
  (`awaits_expiry`): its client may still use its cache, and it still holds the
  fail-over up, until that lease is over.
* **Principals.** Each session remembers the principal of its client as heard from the
  session's own calls (`heard_from`: its creation, KeepAlives, opens and reads), for
  operators' listings. It is memory, not replicated: a new master knows it from each
  session's next call, which after a fail-over is a KeepAlive within the lease.
* **Backlog.** At most `events_pending_max` events wait per session. A session that falls
  further behind is *doomed*: its events are dropped and its KeepAlives refused, so its
  client learns at once that its session is gone; it is ended, as expired, when its lease
  runs out (the promise above).

The table keeps each parked KeepAlive's token (the master's `CallToken`) only to hand it
back in `take`, so it is generic over the token's type.
"""

from __future__ import annotations

import enum
import heapq
import math
from typing import Generic, TypeVar

from attrs import define, field, frozen

from chubbypy.paxos import drift_fraction, ticks_covering, ticks_within
from chubbypy.protocol.session import EventKind, SessionEvent
from chubbypy.protocol.values import NO_HANDLE, HandleId, SessionId

Token = TypeVar("Token")
"""What the caller knows a parked KeepAlive by."""

AWAITED = frozenset((EventKind.MASTER_FAILOVER, EventKind.INVALIDATE))
"""Events that hold others up until the session acknowledges them: the fail-over event
(every write waits for the fail-over to complete) and an invalidation (the write that
changes the name waits for it). See "Owing an acknowledgement" in the module docstring."""


@frozen
class SessionTiming:
    """The session table's durations, in ticks of the master's clock, and its bound."""

    lease_ticks: int
    """A session lease (Chubby's default is 12 s)."""
    answer_before_ticks: int
    """Answer a parked KeepAlive when the lease has this long to run."""
    failover_extra_ticks: int = 0
    """Added to the lease a new master grants every session: clock drift's margin."""
    events_pending_max: int = 1000

    def __attrs_post_init__(self) -> None:
        assert 1 <= self.answer_before_ticks < self.lease_ticks, self
        assert self.failover_extra_ticks >= 0, self
        assert self.events_pending_max >= 1, self

    @classmethod
    def from_seconds(
        cls,
        *,
        tick_seconds: float,
        lease_seconds: float,
        answer_before_seconds: float,
        clock_drift_max: float,
        events_pending_max: int,
    ) -> SessionTiming:
        """Configured seconds as ticks, each rounded the safe way: the lease down (a client
        is told no more than the master counts), the answer-before up (answered earlier).

        A new master's whole lease must outlast any its predecessor granted, on any clocks
        within the drift bound e: it is stretched by 2e/(1-e) of a lease, rounded up, and a
        tick more for where in its tick the old lease began (Chubby §2.9)."""
        lease_ticks = ticks_within(lease_seconds, tick_seconds)
        drift = drift_fraction(clock_drift_max)
        extra = math.ceil(lease_ticks * 2 * drift / (1 - drift)) + 1
        return cls(
            lease_ticks=lease_ticks,
            answer_before_ticks=ticks_covering(answer_before_seconds, tick_seconds),
            failover_extra_ticks=extra,
            events_pending_max=events_pending_max,
        )


@frozen
class KeepAliveAnswer(Generic[Token]):
    """Reply now to the KeepAlive the shell knows as `token`."""

    session_id: SessionId
    token: Token
    lease_ticks: int
    """How long the lease runs from now, on the master's clock."""
    events: tuple[SessionEvent, ...]
    held_ticks: int = 0
    """How long the master held this KeepAlive before answering: the client may count its
    new lease from its sending plus this (the master received it no earlier than sent)."""


@frozen
class Outputs(Generic[Token]):
    """What the shell must do: answer KeepAlives, refuse them, expire sessions."""

    answers: tuple[KeepAliveAnswer[Token], ...] = ()
    refused: tuple[tuple[SessionId, Token], ...] = ()
    """(session, token) of KeepAlives to answer SESSION_EXPIRED: the session is not live
    (doomed, ended by an operator, closing) or gone."""
    expire: tuple[SessionId, ...] = ()
    """Sessions whose lease ran out: propose EndSession(expired=True)."""


class _State(enum.Enum):
    LIVE = "live"
    DOOMED = "doomed"
    """Too far behind on events: refused, and expired when its lease runs out."""
    OPERATOR_ENDED = "operator-ended"
    """An operator ended it: refused, and expired when its lease runs out."""
    CLOSING = "closing"
    """Its close is in flight; refused, and still expired at its lease end should the
    close never be applied (a client that died right after asking, say)."""
    ENDING = "ending"
    """Listed in `expire`; waiting for the EndSession to be applied."""


@define
class _Session(Generic[Token]):
    expiry: int
    events: list[SessionEvent] = field(factory=list)
    next_sequence: int = 1
    parked: Token | None = None
    parked_at: int = 0
    failover_sequence: int = 0
    """The sequence number of the fail-over event still to be acknowledged, or 0."""
    owed_through: int = 0
    """The highest-numbered `AWAITED` event the session owes an acknowledgement of (the
    fail-over event from `start`, an invalidation from the answer that delivered it), or
    0: while it owes one, its lease does not grow."""
    state: _State = _State.LIVE
    version: int = 0
    """Bumped whenever its next deadline is scheduled again; older heap entries are stale."""
    principal: str = ""
    """Whom its latest call to this master came from ("" until one did)."""


class SessionTable(Generic[Token]):
    """The master's in-memory sessions; see the module docstring."""

    def __init__(self, timing: SessionTiming) -> None:
        self._timing = timing
        self._sessions: dict[SessionId, _Session[Token]] = {}
        self._deadlines: list[tuple[int, SessionId, int]] = []
        """(tick, session, version): when each session next needs a look. A tick costs
        only the sessions due, however many are idle."""
        self._now = 0
        self._first_sequence = 1
        self._failover_done = False
        self._awaiting_failover: set[SessionId] = set()
        """Sessions that have neither acknowledged the fail-over event nor stopped (closing
        or ending): the fail-over is complete once none is left."""
        self._answers: list[KeepAliveAnswer[Token]] = []
        self._refused: list[tuple[SessionId, Token]] = []
        self._expire: list[SessionId] = []

    # ------------------------------------------------------------------------- inputs

    def start(self, now: int, session_ids: list[SessionId], first_sequence: int = 1) -> None:
        """This replica became master at tick `now`; the database holds `session_ids`.
        Events are numbered from `first_sequence` (see the module docstring)."""
        assert not self._sessions, "a table serves one mastership"
        assert first_sequence >= 1, first_sequence
        self._now = now
        self._first_sequence = first_sequence
        lease = self._timing.lease_ticks + self._timing.failover_extra_ticks
        for session_id in session_ids:
            session: _Session[Token] = _Session(expiry=now + lease, next_sequence=first_sequence)
            self._sessions[session_id] = session
            event = self._queue(session_id, session, EventKind.MASTER_FAILOVER)
            session.failover_sequence = event.sequence if event else 0
            session.owed_through = session.failover_sequence
            if session.failover_sequence:
                self._awaiting_failover.add(session_id)
            self._schedule(session_id, session)

    def opened(self, session_id: SessionId) -> None:
        """`OpenSession` for `session_id` was applied (now)."""
        assert session_id not in self._sessions, session_id
        session: _Session[Token] = _Session(self._now + self._timing.lease_ticks)
        session.next_sequence = self._first_sequence
        self._sessions[session_id] = session
        self._schedule(session_id, session)

    def heard_from(self, session_id: SessionId, principal: str) -> None:
        """A call of the session (proven by its credential or its handle) came from a
        connection acting as `principal`."""
        session = self._sessions.get(session_id)
        if session is not None:
            session.principal = principal

    def ended(self, session_id: SessionId) -> None:
        """`EndSession` was applied: forget the session; refuse its parked KeepAlive."""
        session = self._sessions.pop(session_id, None)
        self._awaiting_failover.discard(session_id)
        if session is not None and session.parked is not None:
            self._refused.append((session_id, session.parked))

    def keep_alive(self, session_id: SessionId, token: Token, acked_through: int) -> bool:
        """A KeepAlive arrived; False if the session is unknown or not live (doomed, ended
        by an operator, closing or ending: answer SESSION_EXPIRED at once). Otherwise it
        is parked and answered through `take`."""
        session = self._sessions.get(session_id)
        if session is None or session.state is not _State.LIVE:
            return False
        if session.parked is not None:
            self._answer(session_id, session)
        session.events = [e for e in session.events if e.sequence > acked_through]
        if acked_through >= session.owed_through:
            session.owed_through = 0
        if session.failover_sequence and acked_through >= session.failover_sequence:
            session.failover_sequence = 0
            self._awaiting_failover.discard(session_id)
        session.parked = token
        session.parked_at = self._now
        if session.events:
            self._answer(session_id, session)
        self._schedule(session_id, session)
        return True

    def push(
        self,
        session_id: SessionId,
        kind: EventKind,
        path: str = "",
        handle_id: HandleId = NO_HANDLE,
    ) -> int | None:
        """Queue an event for the session; its parked KeepAlive is answered at once. The
        event's sequence number, or None if it was not queued (the session is not live, or
        fell too far behind and is doomed by this event)."""
        session = self._sessions.get(session_id)
        if session is None or session.state is not _State.LIVE:
            return None
        event = self._queue(session_id, session, kind, path, handle_id)
        if event is not None and session.parked is not None:
            self._answer(session_id, session)
        return None if event is None else event.sequence

    def closing(self, session_id: SessionId) -> None:
        """The session's end is in flight (its client closed it, or an operator ended it):
        refuse its KeepAlives, the one parked too; it is not live."""
        session = self._sessions.get(session_id)
        if session is not None and session.state is not _State.ENDING:
            self._stop_extending(session_id, session, _State.CLOSING)

    def operator_ending(self, session_id: SessionId) -> None:
        """An operator ended the session: refuse its KeepAlives from now on, the one parked
        too, and expire it when its lease runs out (see the module docstring). A session
        not live (doomed, closing or ending already) is left as it is."""
        session = self._sessions.get(session_id)
        if session is not None and session.state is _State.LIVE:
            self._stop_extending(session_id, session, _State.OPERATOR_ENDED)

    def tick(self, now: int) -> None:
        """The master's clock reads `now`: answer KeepAlives due, expire sessions due."""
        assert now >= self._now, (now, self._now)
        self._now = now
        while self._deadlines and self._deadlines[0][0] <= now:
            _, session_id, version = heapq.heappop(self._deadlines)
            session = self._sessions.get(session_id)
            if session is None or session.version != version:
                continue  # ended, or scheduled again since
            remaining = session.expiry - now
            if session.parked is not None and remaining <= self._timing.answer_before_ticks:
                self._answer(session_id, session)
            if session.state is not _State.ENDING and session.expiry <= now:
                self._expire.append(session_id)
                session.state = _State.ENDING
                self._awaiting_failover.discard(session_id)
            self._schedule(session_id, session)

    # ------------------------------------------------------------------------- outputs

    def take(self) -> Outputs[Token]:
        """What to do since the last call; the lists start again empty."""
        outputs = Outputs(tuple(self._answers), tuple(self._refused), tuple(self._expire))
        self._answers, self._refused, self._expire = [], [], []
        return outputs

    # ------------------------------------------------------------------------- queries

    def lease_expiry(self, session_id: SessionId) -> int | None:
        session = self._sessions.get(session_id)
        return None if session is None else session.expiry

    def principal(self, session_id: SessionId) -> str:
        """The principal the session's latest call came from ("" if unknown)."""
        session = self._sessions.get(session_id)
        return "" if session is None else session.principal

    def is_doomed(self, session_id: SessionId) -> bool:
        """Refused for falling behind, its lease still running."""
        session = self._sessions.get(session_id)
        return session is not None and session.state is _State.DOOMED

    def is_operator_ended(self, session_id: SessionId) -> bool:
        """Refused because an operator ended it, its lease still running."""
        session = self._sessions.get(session_id)
        return session is not None and session.state is _State.OPERATOR_ENDED

    def awaits_expiry(self, session_id: SessionId) -> bool:
        """Refused, though its client may not know it yet (doomed, or ended by an
        operator): until its lease runs out the client may still use what it cached."""
        session = self._sessions.get(session_id)
        return session is not None and session.state in (_State.DOOMED, _State.OPERATOR_ENDED)

    def next_sequence(self, session_id: SessionId) -> int:
        """The number the session's next event will get (0 if it is unknown)."""
        session = self._sessions.get(session_id)
        return 0 if session is None else session.next_sequence

    def is_live(self, session_id: SessionId) -> bool:
        """Known, not doomed and not ending: its calls may be served."""
        session = self._sessions.get(session_id)
        return session is not None and session.state is _State.LIVE

    @property
    def failover_complete(self) -> bool:
        """Every session acknowledged the fail-over event of `start`, or its lease is
        over (or it is closing): none can still act on what the old master told it. Once
        true it stays true (later sessions never saw the old master); until then the
        sessions still awaited are kept as they change, so asking costs nothing."""
        if not self._failover_done:
            self._failover_done = not self._awaiting_failover
        return self._failover_done

    def __len__(self) -> int:
        return len(self._sessions)

    # ------------------------------------------------------------------------- helpers

    def _queue(
        self,
        session_id: SessionId,
        session: _Session[Token],
        kind: EventKind,
        path: str = "",
        handle: HandleId = NO_HANDLE,
    ) -> SessionEvent | None:
        if len(session.events) >= self._timing.events_pending_max:
            self._doom(session_id, session)
            return None
        event = SessionEvent(session.next_sequence, kind, path, handle)
        session.next_sequence += 1
        session.events.append(event)
        return event

    def _doom(self, session_id: SessionId, session: _Session[Token]) -> None:
        """Too far behind: drop its events, refuse its KeepAlives; its lease still runs
        (and so does any fail-over it has not acknowledged: its client may act on an old
        master's word until its lease is over)."""
        session.events = []
        self._stop_extending(session_id, session, _State.DOOMED)

    def _stop_extending(
        self, session_id: SessionId, session: _Session[Token], state: _State
    ) -> None:
        """The one way a session's lease stops growing before it ends: it is refused from
        now on (its parked KeepAlive too), and expired when the lease it has runs out.
        Three reasons: doomed, closing, or ended by an operator."""
        assert state in (_State.DOOMED, _State.CLOSING, _State.OPERATOR_ENDED), state
        session.state = state
        if state is _State.CLOSING:
            self._awaiting_failover.discard(session_id)
        if session.parked is not None:
            self._refused.append((session_id, session.parked))
            session.parked = None
        self._schedule(session_id, session)

    def _schedule(self, session_id: SessionId, session: _Session[Token]) -> None:
        """When the session next needs a look: its parked KeepAlive's answer, or its
        expiry; nothing once its end is in flight."""
        session.version += 1
        if session.state is _State.ENDING:
            return
        due = session.expiry
        if session.parked is not None:
            due = min(due, session.expiry - self._timing.answer_before_ticks)
        heapq.heappush(self._deadlines, (due, session_id, session.version))

    def _answer(self, session_id: SessionId, session: _Session[Token]) -> None:
        assert session.parked is not None
        if not session.owed_through:
            # A session that owes an acknowledgement keeps the lease it has and no more:
            # else a client that KeepAlives without ever acknowledging would hold the
            # fail-over, or a write to a name it caches, for as long as it liked.
            session.expiry = max(session.expiry, self._now + self._timing.lease_ticks)
        # Both durations are reported a tick short: the answer (and the KeepAlive's
        # arrival) may fall anywhere within a tick, and the client must never count on
        # more than the master will honour.
        self._answers.append(
            KeepAliveAnswer(
                session_id,
                session.parked,
                session.expiry - self._now - 1,
                tuple(session.events),
                max(0, self._now - session.parked_at - 1),
            )
        )
        session.parked = None
        # What this answer delivers is owed from now on: the next KeepAlive acknowledges
        # it (an honest client's does), or the lease stops growing.
        awaited = [e.sequence for e in session.events if e.kind in AWAITED]
        session.owed_through = max([session.owed_through, *awaited])
        self._schedule(session_id, session)
