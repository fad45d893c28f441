"""Carrying one call to a cell's master: where to send it, what to retry, how long to wait.

Pure core (STYLE §1): no reactor, no sockets, no clock and no randomness of its own. Time
comes in as local seconds (floats), randomness and rare paths from a `Chance`. A driver (the
Twisted `Cell`, or the simulator's client) owns the connections and the timers; it feeds a
`MasterCall` what happened (a reply, a connection failure or timeout, a pause that ended)
and does the step each input returns, until the call is `Finished` or `Failed`.

Theory of operation.

* **What the client believes** about its cell is a `CellView`, shared by every call: each
  member's address, which of them is master, and when a replica last answered. Seeds (the
  addresses the program gave) have no known id until a replica names them.
* **Finding the master.** Any replica answers `LocateMaster` with the master's id (None
  during an election) and every member's address. A call that believes in no master asks
  every known replica at once (`AskLocations`, a `LocationRound`) and follows the first
  answer that names a known member; every answer teaches the members' addresses, so one
  seed is enough to learn the whole cell. When no answer names a master the round fails
  with every replica's problem, or with a refused hello (`WrongCell`, ...), which no retry
  mends.
* **Following it.** Each attempt goes to the believed master (`SendRequest`). A
  `NOT_MASTER` reply that names another member redirects at once, at most `REDIRECTS_MAX`
  times in a row (hints can chase each other during an election); without a hint, or after
  a connection failure or timeout, the client forgets that master, pauses and locates
  again. `EPOCH_CHANGED`, `BUSY` and `UNAVAILABLE` say "not now": the request had no
  effect, and the same request is sent again after a pause. Any other error reply is the
  call's answer (`Failed` with its `ChubbyError`), and so is a refusal of the connection.
* **Pausing.** Exponential back-off from `backoff_initial_seconds`, with jitter (half to
  all of it), so clients that failed together do not retry together. While some replica
  answered within `ALIVE_SECONDS` the cell is up and only its master is missing (an
  election, or replicas naming a master that just died): the pause is then capped at
  `poll_seconds`, so the client sees a new master within that of its election; when no
  replica answers it grows to `backoff_max_seconds`, so a dead cell is not hammered.
* **Deadlines.** Each call has a deadline; when the next pause, or the next attempt, would
  pass it the call fails `Unavailable`, naming the last problem seen. Each attempt waits at
  most `request_timeout_seconds` (less near the deadline); a call the master holds on
  purpose (a KeepAlive, a blocking acquire) gives its own attempt time instead.
* **Send times.** `Finished` says when the call was first and last sent. A session lease
  counts from the *first* sending of the call that was answered: the answer may be to that
  one, made before any retry left (the simulator's session-safety checker found this).

Chance sites (FoundationDB's BUGGIFY; `chance.buggify(site)` is always False outside the
simulator): `DROP_AFTER_SEND` asks the driver to drop the connection right after sending,
as a crash of the link would; `RESEND_EARLY` gives up on an attempt long before its time,
so a duplicate of the call is in flight.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final, assert_never

from attrs import define, field, frozen

from chubbypy.client._addresses import client_endpoint_string, display_address
from chubbypy.client._errors import ReplicaUnreachable
from chubbypy.paxos import Chance, NoChance
from chubbypy.protocol.client import ErrorReply, MasterLocation, ReplicaAddress, ServerReply
from chubbypy.protocol.errors import (
    ChubbyError,
    ErrorCode,
    PermissionDenied,
    Unavailable,
    UnsupportedVersion,
    WrongCell,
    error_for,
)
from chubbypy.protocol.values import ReplicaId

__all__ = [
    "ALIVE_SECONDS",
    "DROP_AFTER_SEND",
    "FINAL_CONNECT_ERRORS",
    "REDIRECTS_MAX",
    "RESEND_EARLY",
    "RETRIED_CODES",
    "AskLocations",
    "CallSettings",
    "CallStep",
    "CellView",
    "Failed",
    "Finished",
    "Located",
    "LocationRound",
    "MasterCall",
    "NotLocated",
    "Pause",
    "SendRequest",
    "SendTimes",
    "describe",
]

RETRIED_CODES: Final = frozenset({ErrorCode.EPOCH_CHANGED, ErrorCode.BUSY, ErrorCode.UNAVAILABLE})
"""Errors that say "not now": the request had no effect, and the same request is retried."""
FINAL_CONNECT_ERRORS: Final = (WrongCell, UnsupportedVersion, PermissionDenied)
"""Refusals of the hello (or of the credentials): a configuration mistake no retry mends."""
REDIRECTS_MAX: Final = 3
"""NOT_MASTER hints followed in a row without a pause (then back-off takes over)."""
ALIVE_SECONDS: Final = 1.0
"""A replica answered this recently: the cell is up, so retries poll."""
JITTER_STEPS: Final = 1 << 20
"""The back-off jitter is drawn as an integer in [0, JITTER_STEPS] (a `Chance` draws ints)."""
CONNECT_SECONDS_MIN: Final = 0.001
"""The least time an attempt is given, so that a deadline a hair away still gets one try."""

DROP_AFTER_SEND: Final = "client.drop-connection-after-send"
"""Chance site: the connection is dropped right after the request is written."""
RESEND_EARLY: Final = "client.resend-before-timeout"
"""Chance site: the attempt is given up early, so the retry is a duplicate in flight."""
RESEND_EARLY_FRACTION: Final = 0.1
"""How much of its time an attempt given up early waits."""


@frozen
class CallSettings:
    """How long calls may take and how they back off (the `Cell`'s constructor options)."""

    timeout_seconds: float = 10.0
    """Each call's deadline, from its start, unless the caller gives one."""
    request_timeout_seconds: float = 2.0
    backoff_initial_seconds: float = 0.05
    backoff_max_seconds: float = 1.0
    poll_seconds: float = 0.1

    def attempt_seconds(self, now: float, deadline: float) -> float | None:
        """How long one attempt may wait: the request timeout, or less near the deadline;
        None once the deadline has passed."""
        remaining = deadline - now
        if remaining <= 0:
            return None
        return min(self.request_timeout_seconds, remaining)

    def pause_seconds(self, pauses: int, polling: bool, jitter: float) -> float:
        """The `pauses`-th pause in a row: doubling from the initial back-off, capped at
        the maximum (at the poll interval while `polling`), times `jitter` in [0.5, 1]."""
        assert pauses >= 1
        assert 0.5 <= jitter <= 1.0
        cap = self.backoff_max_seconds
        if polling:
            cap = min(cap, self.poll_seconds)
        doubled: float = self.backoff_initial_seconds * 2 ** min(pauses - 1, 30)
        return min(cap, doubled) * jitter

    def unavailable(self, problem: str) -> Unavailable:
        """The error of a call whose deadline passed, naming the last problem if any."""
        message = f"no master answered within {self.timeout_seconds:g} s"
        return Unavailable(f"{message}; last problem: {problem}" if problem else message)


def _endpoint_of(member: ReplicaAddress) -> str | None:
    """The address a client connects to for `member` (None if it cannot use it)."""
    try:
        return client_endpoint_string(member.client_endpoint)
    except ValueError:
        return None


@define
class CellView:
    """What the client believes about its cell; see the module docstring. `endpoint_of`
    turns a member named in a `MasterLocation` into the address the driver uses (None: it
    cannot be used): a Twisted client endpoint by default, a replica id in simulation."""

    seeds: tuple[str, ...]
    endpoint_of: Callable[[ReplicaAddress], str | None] = _endpoint_of
    members: dict[ReplicaId, str] = field(factory=dict)
    """Every member's address, in the cell's order."""
    master: str | None = None
    """The address of the believed master."""
    answered_at: float = -math.inf
    """When a replica last answered anything: the cell is up."""

    def known_addresses(self) -> tuple[str, ...]:
        """Every address to ask where the master is: the members, then the seeds."""
        return tuple(dict.fromkeys([*self.members.values(), *self.seeds]))

    def replica_id_of(self, address: str) -> ReplicaId | None:
        return next((rid for rid, known in self.members.items() if known == address), None)

    def replica_answered(self, now: float) -> None:
        self.answered_at = now

    def polling(self, now: float) -> bool:
        """A replica answered lately: retries should poll, not back off."""
        return now - self.answered_at < ALIVE_SECONDS

    def welcomed(self, address: str, replica_id: ReplicaId) -> None:
        """The replica at `address` said who it is."""
        self.members.setdefault(replica_id, address)

    def location_learned(self, location: MasterLocation) -> None:
        """Every member's address, in the cell's order (then any the reply left out)."""
        learned: dict[ReplicaId, str] = {}
        for member in location.replicas:
            address = self.endpoint_of(member)
            if address is not None:  # else: an address this client cannot use
                learned[member.replica_id] = address
        others = {rid: a for rid, a in self.members.items() if rid not in learned}
        self.members = {**learned, **others}

    def hint_followed(self, address: str, hint: ReplicaId | None) -> bool:
        """Believe the replica at `address` that the master is `hint`; whether that names
        another replica to try at once."""
        hinted = None if hint is None else self.members.get(hint)
        self.master = hinted if hinted != address else None
        return self.master is not None

    def master_forgotten(self, address: str) -> None:
        if self.master == address:
            self.master = None


@frozen
class SendTimes:
    """When a call was first and last sent (local seconds)."""

    first_seconds: float
    last_seconds: float


@frozen
class SendRequest:
    """Send the call's request to the replica at `address`: connect (or reuse the
    connection) waiting at most `connect_seconds`, then wait `reply_seconds` for the reply.
    With `drop_after_send`, drop the connection right after writing the request."""

    address: str
    connect_seconds: float
    reply_seconds: float
    drop_after_send: bool = False


@frozen
class AskLocations:
    """Ask every replica at `addresses`, at once, where the master is (`LocateMaster`),
    each waiting at most `attempt_seconds`; report each answer or failure."""

    addresses: tuple[str, ...]
    attempt_seconds: float


@frozen
class Pause:
    """Wait until `until_seconds`, then report that the pause ended."""

    until_seconds: float


@frozen
class Finished:
    """The call's answer: `reply` is not an error reply (for a locate-only call, the
    `MasterLocation` that named the master)."""

    reply: ServerReply
    sent: SendTimes


@frozen
class Failed:
    """The call is over without an answer: raise `error`."""

    error: ChubbyError


CallStep = SendRequest | AskLocations | Pause | Finished | Failed


@frozen
class Located:
    """A location round found what it asked for."""

    location: MasterLocation


@frozen
class NotLocated:
    """No replica of a location round named a master: why, and a refusal no retry mends."""

    problem: str
    refusal: ChubbyError | None


def describe(error: BaseException) -> str:
    """A one-line account of a failure, for the `Unavailable` that may end the call."""
    if isinstance(error, ChubbyError):
        return f"{error.code.name}: {error.message}"
    return str(error) or type(error).__name__


@define
class LocationRound:
    """One `AskLocations`: the answers and failures of every replica asked. With
    `need_master`, only an answer naming a known member ends it early."""

    view: CellView
    asked: tuple[str, ...]
    need_master: bool = True
    _waiting: set[str] = field(init=False)
    _problems: dict[str, str] = field(init=False, factory=dict)
    _refusal: ChubbyError | None = field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        assert self.asked, "a location round asks at least one replica"
        self._waiting = set(self.asked)

    @property
    def over(self) -> bool:
        return not self._waiting

    def answered(self, now: float, address: str, reply: ServerReply) -> Located | NotLocated | None:
        """The replica at `address` answered `reply`; the round's outcome, or None while
        others may still answer. Answers from replicas not (or no longer) asked are ignored."""
        if address not in self._waiting:
            return None
        self._waiting.discard(address)
        self.view.replica_answered(now)
        shown = display_address(address)
        if isinstance(reply, ErrorReply):
            return self._failed(address, f"{shown}: {reply.code.name}: {reply.message}")
        if not isinstance(reply, MasterLocation):
            return self._failed(address, f"{shown}: unexpected {type(reply).__name__}")
        self.view.location_learned(reply)
        if self.need_master and (reply.master is None or reply.master not in self.view.members):
            problem = f"{shown}: knows no master (an election may be under way)"
            return self._failed(address, problem)
        self._waiting.clear()
        return Located(reply)

    def failed(self, address: str, error: Exception) -> NotLocated | None:
        """Asking `address` failed with `error`: the connection (`ReplicaUnreachable`) or a
        refusal (a `ChubbyError`). The round's outcome, or None while others may answer."""
        if address not in self._waiting:
            return None
        self._waiting.discard(address)
        if isinstance(error, FINAL_CONNECT_ERRORS) and self._refusal is None:
            self._refusal = error
        return self._failed(address, describe(error))

    def _failed(self, address: str, problem: str) -> NotLocated | None:
        self._problems[address] = problem
        if self._waiting:
            return None
        problems = "; ".join(self._problems[a] for a in self.asked if a in self._problems)
        return NotLocated(problems, self._refusal)


@define
class MasterCall:
    """One call carried to the master; see the module docstring.

    `deadline` is in local seconds. `attempt_seconds` overrides how long one attempt may
    wait (a call the master holds on purpose). With `locate_only` the call only finds the
    master: it finishes with the `MasterLocation` that named it.

    Inputs return the next `CallStep`: `started` first; then, for a `SendRequest`,
    `replied` or `send_failed`; for `AskLocations`, `location_answered` or
    `location_failed` for each replica (None while the round waits for others); for a
    `Pause`, `pause_ended`. `Finished` and `Failed` end the call.

    The driver's side of the contract: it reports exactly one outcome per `SendRequest`
    (the reply, or a failure once `reply_seconds` passed without one), and drops replies
    to attempts it gave up on, as a connection drops a reply to a request that timed out.
    A driver without connections (the simulator) may ignore `connect_seconds`. Answers to
    `LocateMaster` may come late, twice, or from a round already over: they are ignored.
    """

    view: CellView
    settings: CallSettings
    deadline: float
    attempt_seconds: float | None = None
    chance: Chance = field(factory=NoChance)
    locate_only: bool = False
    _pauses: int = field(init=False, default=0)
    _redirects: int = field(init=False, default=0)
    _problem: str = field(init=False, default="")
    """The last thing that went wrong, for the `Unavailable` that may end the call."""
    _round: LocationRound | None = field(init=False, default=None)
    _sending_to: str | None = field(init=False, default=None)
    _first_sent: float | None = field(init=False, default=None)
    _last_sent: float = field(init=False, default=0.0)

    # ------------------------------------------------------------------------- inputs

    def started(self, now: float) -> CallStep:
        """The call begins."""
        return self._next_attempt(now)

    def replied(self, now: float, reply: ServerReply) -> CallStep:
        """The replica the request was sent to answered `reply`."""
        address = self._sending_to
        assert address is not None, "a reply to no request"
        self._sending_to = None
        self.view.replica_answered(now)
        if not isinstance(reply, ErrorReply):
            return self._finished(now, reply)
        self._problem = f"{display_address(address)}: {reply.code.name}: {reply.message}"
        if reply.code is ErrorCode.NOT_MASTER:
            hinted = self.view.hint_followed(address, reply.master_hint)
            if hinted and self._redirects < REDIRECTS_MAX:
                self._redirects += 1
                return self._next_attempt(now)
        elif reply.code not in RETRIED_CODES:
            return Failed(error_for(reply.code, reply.message, reply.master_hint))
        return self._paused(now)

    def send_failed(self, now: float, error: Exception) -> CallStep:
        """The request could not be sent or answered: the connection failed or timed out
        (`ReplicaUnreachable`: retried elsewhere), or it was refused (a `ChubbyError`, such
        as a hello for the wrong cell or a request above the frame limit: final)."""
        address = self._sending_to
        assert address is not None, "a failure of no request"
        self._sending_to = None
        if not isinstance(error, ReplicaUnreachable):
            assert isinstance(error, ChubbyError), f"unexpected {error!r}"
            return Failed(error)
        self.view.master_forgotten(address)
        self._problem = str(error)
        return self._paused(now)

    def location_answered(self, now: float, address: str, reply: ServerReply) -> CallStep | None:
        """The replica at `address` answered the `LocateMaster`."""
        if self._round is None:
            return None  # late: the round is over
        return self._round_ended(now, self._round.answered(now, address, reply))

    def location_failed(self, now: float, address: str, error: Exception) -> CallStep | None:
        """Asking the replica at `address` failed (see `LocationRound.failed`)."""
        if self._round is None:
            return None
        return self._round_ended(now, self._round.failed(address, error))

    def pause_ended(self, now: float) -> CallStep:
        """The pause asked for is over."""
        return self._next_attempt(now)

    # ------------------------------------------------------------------------- steps

    def _next_attempt(self, now: float) -> CallStep:
        attempt = self.settings.attempt_seconds(now, self.deadline)
        if attempt is None:
            return Failed(self.settings.unavailable(self._problem))
        master = self.view.master
        if master is None or self.locate_only:
            self._round = LocationRound(self.view, self.view.known_addresses())
            return AskLocations(self._round.asked, attempt)
        return self._send(now, master, attempt)

    def _send(self, now: float, address: str, connect_seconds: float) -> SendRequest:
        reply_seconds = connect_seconds
        if self.attempt_seconds is not None:
            remaining = max(self.deadline - now, CONNECT_SECONDS_MIN)
            reply_seconds = min(self.attempt_seconds, remaining)
        if self.chance.buggify(RESEND_EARLY):
            reply_seconds *= RESEND_EARLY_FRACTION
        self._sending_to = address
        if self._first_sent is None:
            self._first_sent = now
        self._last_sent = now
        drop = self.chance.buggify(DROP_AFTER_SEND)
        return SendRequest(address, connect_seconds, reply_seconds, drop_after_send=drop)

    def _round_ended(self, now: float, outcome: Located | NotLocated | None) -> CallStep | None:
        match outcome:
            case None:
                return None
            case Located(location):
                self._round = None
                assert location.master is not None
                self.view.master = self.view.members[location.master]
                if self.locate_only:
                    return self._finished(now, location)
                return self._next_attempt(now)
            case NotLocated(problem, refusal):
                self._round = None
                if refusal is not None:
                    return Failed(refusal)
                self._problem = problem
                return self._paused(now)
            case _:
                assert_never(outcome)

    def _paused(self, now: float) -> CallStep:
        """Wait before retrying, longer after each failure; `Unavailable` if the wait
        would pass the deadline."""
        self._pauses += 1
        self._redirects = 0
        # Jitter: clients that failed at the same moment retry at different ones.
        jitter = 0.5 + 0.5 * self.chance.randint(0, JITTER_STEPS) / JITTER_STEPS
        delay = self.settings.pause_seconds(self._pauses, self.view.polling(now), jitter)
        if now + delay >= self.deadline:
            return Failed(self.settings.unavailable(self._problem))
        return Pause(now + delay)

    def _finished(self, now: float, reply: ServerReply) -> Finished:
        first = now if self._first_sent is None else self._first_sent
        last = now if self._first_sent is None else self._last_sent
        return Finished(reply, SendTimes(first, last))
