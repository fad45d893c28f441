"""A Chubby session on the client, sans-IO: its states, local lease, KeepAlives, events and
cache rules.

Pure core (STYLE §1, §6): no reactor, no clock, no randomness of its own, no sockets. Time
comes in as local seconds (floats), rare paths from a `Chance`. `ClientSession` takes
inputs named after what happened (`keepalive_answered`, `lease_checked`, ...) and returns
outputs, frozen values that tell its driver what to do: report a state, deliver an event,
send a KeepAlive, arm a timer. The Twisted `Session` drives it over real connections; the
simulator drives the same code over its simulated network, so its checkers judge the
shipped rules. Calls themselves are carried by `chubbypy.client._calls.MasterCall`.

Theory of operation.

* **States** (`chubbypy.client._state`, one transition table): *connected* while the local
  lease is valid; *jeopardy* when it ran out without a KeepAlive answer (calls wait, the
  cache is flushed); *safe*, reported when a KeepAlive is answered in jeopardy, then
  connected again; *expired* when the master says the session ended or jeopardy lasts the
  grace period; *closing* once the program asked to close it, then *closed*.
* **The local lease** counts from when the answered KeepAlive (or CreateSession) was *first
  sent*, plus how long the master says it held it (the master extends the lease when it
  answers, and it received the call no earlier than it was sent), shrunk by the worst clock
  drift between client and master (`local_lease_end`), so it ends before the master's own
  view of the lease. A retry must not restart the count: the answer may be to the first
  sending (found by the simulator's session-safety checker). Without the hold, the client
  fell into jeopardy on every KeepAlive (found on a live cell).
* **KeepAlives.** One is at the master at all times (Chubby §2.8): the next is sent when
  the last is answered. The master holds a KeepAlive until its lease nearly ends, so one
  attempt may wait a whole lease plus a second; the call's deadline is the grace period
  past the later of the lease end and the sending. An answer extends the lease and
  carries events; SESSION_EXPIRED ends the session; a KeepAlive that found no master
  before its deadline gives up (expired); "unavailable" before the deadline sends again
  at once; any other failure (a refused connection, a rolling upgrade) sends again after
  `KEEPALIVE_RETRY_SECONDS`, so the session never sits in jeopardy for ever.
* **Events** are numbered; each KeepAlive acknowledges every event through the highest
  number seen, and an event numbered at or below it is a repeat (its answer was lost) and
  dropped. An event about a handle goes to that handle; a master fail-over goes to every
  handle that asked for events, which are then *presented* to the new master (Chubby §2.9
  step 8: it knows a handle made before the fail-over only once the handle is used, and
  until then would send it nothing). Every event but INVALIDATE goes to the session too.
* **Blocking acquires** (`blocking_acquire`): the master holds one until the lock is free
  or the wait asked for is over, and then withdraws it itself. One that no master answered
  by its deadline may have been granted all the same (`acquire_outcome_unknown`): the
  program closes its handle, which lets go of such a grant; a poison would not.
* **The cache** (`chubbypy.client._cache`) is used only while the session is connected and
  its local lease valid: the master's promise to invalidate an entry before it changes
  lasts as long as the lease, as this client counts it. An INVALIDATE drops its entry
  before the next KeepAlive acknowledges it; jeopardy, a master fail-over, closing and the
  end flush it. Handles the program closed may be kept for reuse under the same rule
  (Chubby caches handles too), at most `HANDLES_PARKED_MAX` of them.

Deliberate bugs (`ClientBug`, off unless a test switches them on) prove the simulator's
checkers can fail; chance sites (`KEEPALIVE_LATE`) take rare paths in simulation only.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Final

from attrs import define, field, frozen

from chubbypy.client._cache import CachedNode, ClientCache
from chubbypy.client._calls import SendTimes
from chubbypy.client._errors import CellClosed
from chubbypy.client._state import SessionInput, SessionState, next_state
from chubbypy.paxos import Chance, NoChance
from chubbypy.protocol.errors import SessionExpired, Unavailable
from chubbypy.protocol.namespace import Stat
from chubbypy.protocol.session import (
    CALLS_UNACKED_MAX,
    CloseSession,
    EventKind,
    KeepAlive,
    LeaseExtended,
    NodeRead,
    ReadNode,
    SessionCall,
    SessionEvent,
    is_numbered,
)
from chubbypy.protocol.values import CallNumber, HandleId, SessionId

__all__ = [
    "ACQUIRE_ANSWER_SECONDS",
    "ACQUIRE_FOREVER_SECONDS",
    "CLOCK_DRIFT_DEFAULT",
    "GRACE_SECONDS_DEFAULT",
    "HANDLES_PARKED_MAX",
    "KEEPALIVE_LATE",
    "KEEPALIVE_RETRY_SECONDS",
    "AcquireTiming",
    "Admission",
    "CheckLeaseAt",
    "ClientBug",
    "ClientSession",
    "EventDelivered",
    "HandleKey",
    "KeepAliveAt",
    "ParkedHandle",
    "PresentHandle",
    "ReadFromMaster",
    "SendClose",
    "SendKeepAlive",
    "SessionOutput",
    "SessionSettings",
    "StateChanged",
    "acquire_outcome_unknown",
    "blocking_acquire",
    "local_lease_end",
]

GRACE_SECONDS_DEFAULT: Final = 45.0
CLOCK_DRIFT_DEFAULT: Final = 0.01
"""At least the cell's ``paxos.clock_drift_max``."""
KEEPALIVE_RETRY_SECONDS: Final = 1.0
"""The pause before a KeepAlive that failed for an unexpected reason is sent again."""
KEEPALIVE_EXTRA_SECONDS: Final = 1.0
"""How much longer than a lease one KeepAlive attempt waits for the master's answer."""
HANDLES_PARKED_MAX: Final = 100
"""Closed handles kept for reuse per session; beyond it the oldest is really closed."""
KEEPALIVE_LATE: Final = "client.keepalive-late"
"""Chance site: the next KeepAlive goes out late, half a lease after the answer."""
KEEPALIVE_LATE_FRACTION: Final = 0.5

HandleKey = tuple[str, int, int, int]
"""(path, mode, events, lock-delay in ms): handles with equal keys are interchangeable."""


class ClientBug(enum.Enum):
    """Deliberate defects of the client session, switched on only by tests that prove the
    simulator's checkers catch them (Paxos Made Live §6.3)."""

    LEASE_FROM_ANSWER = "lease-from-answer"
    """Count the local lease from when the answer arrived, not from when the call was
    first sent: the lease then outlasts the master's by the answer's way back (and the
    KeepAlive's hold at the master, which is counted on top)."""
    CACHE_IGNORES_INVALIDATION = "cache-ignores-invalidation"
    """Acknowledge an INVALIDATE event without dropping the cached entry."""
    CALLS_UNNUMBERED = "calls-unnumbered"
    """Send calls that change state without their `CallNumber`, as before issue 12: a
    retry after a lost answer is carried out again."""


def local_lease_end(
    sent_seconds: float, lease_ms: int, held_ms: int, clock_drift_max: float
) -> float:
    """When a lease of `lease_ms`, granted in answer to a call sent at `sent_seconds` and
    held `held_ms` at the master, ends on the client's clock, at the latest.

    The master's lease runs `held_ms + lease_ms` of its clock from no earlier than the
    sending. Each clock may run fast or slow by `e` = `clock_drift_max` against true time:
    the master's span lasts at least (held + lease) / (1 + e) true seconds, and L local
    seconds last at most L / (1 - e). With L = (held + lease) (1 - e) / (1 + e) the local
    lease always ends first.
    """
    shrink = (1 - clock_drift_max) / (1 + clock_drift_max)
    return sent_seconds + (held_ms + lease_ms) / 1000 * shrink


ACQUIRE_FOREVER_SECONDS: Final = 10.0**9
"""A blocking acquire without a timeout waits as long as it takes (Chubby's Acquire)."""
ACQUIRE_ANSWER_SECONDS: Final = 5.0
"""How long past an acquire's timeout the client waits for the master's answer (the
master answers when the wait ends; a fail-over meanwhile resends the request)."""


@frozen
class AcquireTiming:
    """How a blocking acquire is carried: what it asks the master to wait (`wait_ms`, None:
    for ever), how long one attempt waits for the answer, and the call's deadline."""

    wait_ms: int | None
    attempt_seconds: float
    deadline_seconds: float


def blocking_acquire(now: float, timeout_seconds: float | None) -> AcquireTiming:
    """The timing of a blocking acquire begun at `now` that gives up after `timeout_seconds`
    (None: never). The master holds the call until the lock is free or the wait is over,
    so one attempt lasts as long as the wait (a second request would queue behind the
    first); the master withdraws the request itself when the wait ends, and the client
    waits a little longer for that answer."""
    if timeout_seconds is None:
        return AcquireTiming(None, ACQUIRE_FOREVER_SECONDS, now + ACQUIRE_FOREVER_SECONDS)
    wait_ms = max(0, round(timeout_seconds * 1000))
    attempt = timeout_seconds + ACQUIRE_ANSWER_SECONDS
    return AcquireTiming(wait_ms, attempt, now + attempt)


def acquire_outcome_unknown(ended: object) -> bool:
    """Whether a blocking acquire that `ended` so (its result, or the error it failed with)
    may have been granted all the same: no master answered it before its deadline
    (`Unavailable`). The program must then close its handle, which withdraws the request
    wherever it still waits and lets go of the lock if it was granted; a poison of the
    handle does only the first.

    A grant can be applied with no one to answer it: a master proposes the acquire and
    fails, and its successor applies what its predecessor's ballot accepted (and then
    answers every other call BUSY until each session has acknowledged the fail-over, which
    may outlast the acquire's deadline). A handle given up after a mere poison would hold
    that lock, unused, for as long as its session lives (the simulator's seed 20612: every
    other lock client waited for it for ever)."""
    return isinstance(ended, Unavailable)


@frozen
class SessionSettings:
    """How a session counts its lease and whether it caches (the `Cell`'s options)."""

    grace_seconds: float = GRACE_SECONDS_DEFAULT
    clock_drift_max: float = CLOCK_DRIFT_DEFAULT
    cache: bool = True


# ----------------------------------------------------------------------------- outputs


@frozen
class StateChanged:
    """The session is now in `state`: report it (a final state ends its streams)."""

    state: SessionState


@frozen
class EventDelivered:
    """A new event: deliver it to the handles `handle_ids`, then to the session."""

    event: SessionEvent
    handle_ids: tuple[HandleId, ...]


@frozen
class PresentHandle:
    """Show the handle `handle_id` to a new master with any call naming it."""

    handle_id: HandleId


@frozen
class SendKeepAlive:
    """Send `keepalive` now, each attempt waiting at most `attempt_seconds`, until
    `deadline_seconds`; report `keepalive_answered` or `keepalive_failed`."""

    keepalive: KeepAlive
    attempt_seconds: float
    deadline_seconds: float


@frozen
class KeepAliveAt:
    """Report `keepalive_due` at `at_seconds`."""

    at_seconds: float


@frozen
class CheckLeaseAt:
    """(Re)arm the lease timer: report `lease_checked` at `at_seconds`. It replaces any
    earlier lease timer."""

    at_seconds: float


@frozen
class SendClose:
    """Send `call`, then report `close_finished` however it ends."""

    call: CloseSession


SessionOutput = (
    StateChanged | EventDelivered | PresentHandle | SendKeepAlive | KeepAliveAt | CheckLeaseAt
    | SendClose
)  # fmt: skip


@frozen
class ReadFromMaster:
    """A read the cache cannot answer: send `call`, then report `read_answered` with
    `started`, whatever becomes of it."""

    call: ReadNode
    started: int


@frozen
class ParkedHandle:
    """A handle the program closed, kept open at the master for a later open."""

    handle: bytes
    stat: Stat
    handle_id: HandleId


class Admission(enum.Enum):
    """What a call the program makes in the session should do now."""

    SEND = "send"
    WAIT = "wait"
    """Jeopardy: wait for the next state change, then ask again."""
    REFUSE = "refuse"
    """The session is over: fail the call with `SessionExpired`."""


@define
class _HandleRecord:
    asked_for_events: bool
    poisoned: bool = False


# ----------------------------------------------------------------------------- the session


@define
class ClientSession:
    """One session's client side; see the module docstring. Made once CreateSession is
    answered; then report `session_created`. Every input returns the outputs to carry
    out, in order."""

    session_id: SessionId
    credential: bytes
    """Proof of ownership the master made: every call naming the session carries it."""
    settings: SessionSettings = field(factory=SessionSettings)
    bugs: frozenset[ClientBug] = frozenset()
    chance: Chance = field(factory=NoChance)
    cache: ClientCache = field(init=False, factory=ClientCache)
    _state: SessionState = field(init=False, default=SessionState.CONNECTED)
    _lease_end: float = field(init=False, default=0.0)
    _lease_ms: int = field(init=False, default=0)
    _acked: int = field(init=False, default=0)
    _keepalive_deadline: float | None = field(init=False, default=None)
    """The deadline of the KeepAlive at the master; None when none is on its way."""
    _handles: dict[HandleId, _HandleRecord] = field(init=False, factory=dict)
    _parked: dict[HandleKey, list[ParkedHandle]] = field(init=False, factory=dict)
    _parked_count: int = field(init=False, default=0)
    _next_number: int = field(init=False, default=1)
    _unanswered: set[int] = field(init=False, factory=set)
    """The numbers of the numbered calls in progress."""

    # ------------------------------------------------------------------------- queries

    @property
    def state(self) -> SessionState:
        return self._state

    @property
    def lease_end_seconds(self) -> float:
        """When the local lease ends, in local seconds (it never moves back)."""
        return self._lease_end

    @property
    def acked_through(self) -> int:
        """The highest event number received: the next KeepAlive acknowledges it."""
        return self._acked

    @property
    def open_handles(self) -> int:
        return len(self._handles)

    def cache_usable(self, now: float) -> bool:
        """Whether cached entries (and parked handles) may be used at `now`."""
        connected = self._state is SessionState.CONNECTED
        return self.settings.cache and connected and now < self._lease_end

    # ------------------------------------------------------------------------- the lease

    def session_created(
        self, now: float, sent: SendTimes, lease_ms: int
    ) -> tuple[SessionOutput, ...]:
        """The master answered CreateSession (sent at `sent`) with a lease of `lease_ms`."""
        assert self._lease_ms == 0, "created twice"
        self._extend(now, sent, lease_ms, 0)
        return (CheckLeaseAt(self._lease_end), *self._send_keepalive(now))

    def lease_checked(self, now: float) -> tuple[SessionOutput, ...]:
        """The lease timer fired: jeopardy once the local lease has ended, expiry once the
        grace period after it has."""
        outputs: list[SessionOutput] = []
        if self._state is SessionState.CONNECTED and now >= self._lease_end:
            outputs += self._moved(SessionInput.LEASE_RAN_OUT)
        grace_end = self._lease_end + self.settings.grace_seconds
        if self._state is SessionState.JEOPARDY and now >= grace_end:
            outputs += self._moved(SessionInput.GRACE_RAN_OUT)
        elif self._state is SessionState.JEOPARDY:
            outputs.append(CheckLeaseAt(grace_end))
        elif self._state is SessionState.CONNECTED:
            outputs.append(CheckLeaseAt(self._lease_end))
        return tuple(outputs)

    def _extend(self, now: float, sent: SendTimes, lease_ms: int, held_ms: int) -> None:
        counted_from = sent.first_seconds
        if ClientBug.LEASE_FROM_ANSWER in self.bugs:
            counted_from = now
        drift = self.settings.clock_drift_max
        self._lease_ms = lease_ms
        self._lease_end = max(
            self._lease_end, local_lease_end(counted_from, lease_ms, held_ms, drift)
        )

    # ------------------------------------------------------------------------- KeepAlives

    def keepalive_due(self, now: float) -> tuple[SessionOutput, ...]:
        """A `KeepAliveAt` came due."""
        return self._send_keepalive(now) if self._state.live else ()

    def keepalive_answered(
        self, now: float, sent: SendTimes, result: LeaseExtended
    ) -> tuple[SessionOutput, ...]:
        """The KeepAlive sent at `sent` was answered: the lease is extended, jeopardy is
        over, the events are delivered, and the next KeepAlive goes out."""
        self._keepalive_deadline = None
        if self._state.final:
            return ()
        self._extend(now, sent, result.lease_ms, result.held_ms)
        outputs = [*self._moved(SessionInput.LEASE_EXTENDED)]
        if self._state is SessionState.SAFE:
            outputs += self._moved(SessionInput.SAFETY_REPORTED)
        outputs += self._events_received(result.events)
        if self._state.live:
            outputs.append(CheckLeaseAt(self._lease_end))
            outputs += self._next_keepalive(now)
        return tuple(outputs)

    def keepalive_failed(self, now: float, error: Exception) -> tuple[SessionOutput, ...]:
        """The KeepAlive ended in `error` (see the module docstring for what each means)."""
        deadline, self._keepalive_deadline = self._keepalive_deadline, None
        assert deadline is not None or not self._state.live, "a failure of no KeepAlive"
        if isinstance(error, SessionExpired) and not self._state.final:
            return self._moved(SessionInput.MASTER_ENDED)
        if not self._state.live:
            gave_up = isinstance(error, CellClosed) and not self._state.final
            return self._moved(SessionInput.KEEPALIVES_GAVE_UP) if gave_up else ()
        assert deadline is not None
        if isinstance(error, CellClosed) or now >= deadline:
            return self._moved(SessionInput.KEEPALIVES_GAVE_UP)
        if isinstance(error, Unavailable):
            return self._send_keepalive(now)
        return (KeepAliveAt(now + KEEPALIVE_RETRY_SECONDS),)

    def _next_keepalive(self, now: float) -> tuple[SessionOutput, ...]:
        if self.chance.buggify(KEEPALIVE_LATE):
            return (KeepAliveAt(now + self._lease_ms / 1000 * KEEPALIVE_LATE_FRACTION),)
        return self._send_keepalive(now)

    def _send_keepalive(self, now: float) -> tuple[SessionOutput, ...]:
        assert self._keepalive_deadline is None, "one KeepAlive at a time"
        deadline = max(self._lease_end, now) + self.settings.grace_seconds
        self._keepalive_deadline = deadline
        # The master holds a KeepAlive until its own view of the lease nearly ends: wait
        # up to a whole lease for the answer (a retry would supersede it).
        attempt = self._lease_ms / 1000 + KEEPALIVE_EXTRA_SECONDS
        keepalive = KeepAlive(self.session_id, self.credential, self._acked)
        return (SendKeepAlive(keepalive, attempt, deadline),)

    # ------------------------------------------------------------------------- events

    def _events_received(self, events: Iterable[SessionEvent]) -> list[SessionOutput]:
        outputs: list[SessionOutput] = []
        for event in events:
            if event.sequence <= self._acked:
                continue  # sent again because an answer was lost: seen already
            self._acked = event.sequence
            outputs += self._event_received(event)
        return outputs

    def _event_received(self, event: SessionEvent) -> tuple[SessionOutput, ...]:
        if event.kind is EventKind.INVALIDATE:
            if ClientBug.CACHE_IGNORES_INVALIDATION not in self.bugs:
                self.cache.invalidate(event.path, event.sequence)
            return ()  # the cache's business; acknowledged by the next KeepAlive
        if event.kind is EventKind.MASTER_FAILOVER:
            self.cache.flush()  # the new master knows nothing of what we cached
            asking = tuple(hid for hid, record in self._handles.items() if record.asked_for_events)
            presented = [PresentHandle(hid) for hid in asking if not self._handles[hid].poisoned]
            return (EventDelivered(event, asking), *presented)
        mine = (event.handle_id,) if event.handle_id in self._handles else ()
        return (EventDelivered(event, mine),)

    # ------------------------------------------------------------------------- handles

    def handle_opened(self, handle_id: HandleId, *, asked_for_events: bool) -> None:
        """The program holds the handle `handle_id` (opened, or taken from the parked)."""
        self._handles[handle_id] = _HandleRecord(asked_for_events)

    def handle_poisoned(self, handle_id: HandleId) -> None:
        """Its calls all fail from now on: presenting it would be pointless."""
        if handle_id in self._handles:
            self._handles[handle_id].poisoned = True

    def handle_closed(self, handle_id: HandleId) -> None:
        self._handles.pop(handle_id, None)

    def park(self, now: float, key: HandleKey, parked: ParkedHandle) -> tuple[bytes, ...] | None:
        """Keep a handle the program closed for a later open with the same `key`. None if
        it cannot be kept (the cache is off or not usable now): close it at the master.
        Else the handles it pushed out of the full cache, to close at the master."""
        if not self.cache_usable(now):
            return None
        self._parked.setdefault(key, []).append(parked)
        self._parked_count += 1
        evicted: list[bytes] = []
        while self._parked_count > HANDLES_PARKED_MAX:
            oldest = next(iter(self._parked))
            evicted.append(self._take_parked(oldest, 0).handle)
        return tuple(evicted)

    def unpark(self, now: float, key: HandleKey) -> ParkedHandle | None:
        """A handle kept for `key`, if the cache is usable now: the caller checks that its
        node is still the one it opened (a read through the cache) before using it."""
        if not self.cache_usable(now) or not self._parked.get(key):
            return None
        return self._take_parked(key, -1)

    def _take_parked(self, key: HandleKey, index: int) -> ParkedHandle:
        handles = self._parked[key]
        taken = handles.pop(index)
        if not handles:
            del self._parked[key]
        self._parked_count -= 1
        return taken

    # ------------------------------------------------------------------------- reads

    def read_wanted(self, now: float, path: str) -> CachedNode | ReadFromMaster:
        """The program reads `path`: the cached node, or the read to send."""
        if self.cache_usable(now):
            cached = self.cache.get(path)
            if cached is not None:
                return cached
        started = self.cache.reading(path)
        read = ReadNode(self.session_id, self.credential, path, self.settings.cache)
        return ReadFromMaster(read, started)

    def read_answered(self, now: float, path: str, started: int, answer: NodeRead | None) -> None:
        """The read of `path` begun as `started` ended with `answer` (None: it failed)."""
        node = None if answer is None else CachedNode(answer.stat, answer.contents)
        self.cache.read_done(
            path,
            started,
            node,
            cached=answer is not None and answer.cached,
            event_sequence=0 if answer is None else answer.event_sequence,
            usable=self.cache_usable(now),
        )

    # ------------------------------------------------------------------------- calls, ending

    def call_wanted(self) -> Admission:
        """The program makes a call in this session: send it, wait out jeopardy, or refuse
        it once the session is over (a closing session still serves calls)."""
        if self._state.final:
            return Admission.REFUSE
        return Admission.WAIT if self._state is SessionState.JEOPARDY else Admission.SEND

    def number_wanted(self) -> bool:
        """Whether a numbered call may start now: not while it would run more than
        CALLS_UNACKED_MAX ahead of the oldest unanswered one (whose answer the cell must
        keep until this session acknowledges it)."""
        oldest = min(self._unanswered, default=self._next_number)
        return self._next_number - oldest < CALLS_UNACKED_MAX

    def call_number(self, call: SessionCall) -> CallNumber | None:
        """The number `call` carries on every attempt, if it takes one (`is_numbered`;
        `number_wanted` said it may start): the next of the session's, acknowledging every
        answer below its oldest call still unanswered."""
        if not is_numbered(call) or ClientBug.CALLS_UNNUMBERED in self.bugs:
            return None
        assert self.number_wanted(), "too far ahead of the oldest unanswered call"
        sequence, self._next_number = self._next_number, self._next_number + 1
        self._unanswered.add(sequence)
        return CallNumber(sequence, min(self._unanswered))

    def call_ended(self, number: CallNumber | None) -> None:
        """The numbered call ended: answered, or given up (its outcome unknown, and past
        the next call's acknowledgement it can no longer take effect)."""
        if number is not None:
            self._unanswered.discard(number.sequence)

    def expiry_reported(self) -> tuple[SessionOutput, ...]:
        """A call was answered SESSION_EXPIRED: the master has ended the session."""
        return () if self._state.final else self._moved(SessionInput.MASTER_ENDED)

    def close_requested(self) -> tuple[SessionOutput, ...]:
        """The program closes the session (nothing happens if it is closing or over)."""
        if not self._state.live:
            return ()
        moved = self._moved(SessionInput.CLOSE_REQUESTED)
        return (*moved, SendClose(CloseSession(self.session_id, self.credential)))

    def close_finished(self) -> tuple[SessionOutput, ...]:
        """The CloseSession call ended, answered or not (the lease ends the session at the
        master anyway)."""
        assert not self._state.live, "a close that was never requested"
        if self._state.final:
            return ()
        return self._moved(SessionInput.CLOSE_FINISHED)

    def _moved(self, event: SessionInput) -> tuple[SessionOutput, ...]:
        """Make the move the transition table gives; report it if the state changed."""
        before, self._state = self._state, next_state(self._state, event)
        if self._state is before:
            return ()
        if self._state not in (SessionState.CONNECTED, SessionState.SAFE):
            self.cache.flush()  # what is cached is no longer promised fresh
            self._parked, self._parked_count = {}, 0  # their nodes may have changed
        if self._state.final:
            self._handles.clear()
        return (StateChanged(self._state),)
