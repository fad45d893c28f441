"""What the master answers to session, handle and lock calls. Pure values."""

from __future__ import annotations

from attrs import frozen

from chubbypy.master._ids import CallToken, GateTicket
from chubbypy.protocol import HandleId, SessionId
from chubbypy.protocol.errors import Failure
from chubbypy.protocol.namespace import LogWrite, Stat
from chubbypy.protocol.session import LockHolderInfo, SessionEvent


@frozen
class SessionStarted:
    session_id: SessionId
    lease_ticks: int
    """How long the new session's lease runs from now, on the master's clock, at least
    (a tick short, like `KeepAliveAnswered.lease_ticks`)."""


@frozen
class KeepAliveAnswered:
    lease_ticks: int
    events: tuple[SessionEvent, ...]
    held_ticks: int = 0
    """How long the master held the KeepAlive (see `KeepAliveAnswer.held_ticks`)."""


@frozen
class HandleOpened:
    handle: bytes
    """The handle's bytes, with check digits: the client passes them back on every call."""
    created: bool
    """Whether this open created the node."""
    stat: Stat
    handle_id: HandleId
    """The handle's number: the events meant for this handle carry it."""


@frozen
class LockGranted:
    stat: Stat
    sequencer: bytes


@frozen
class Done:
    """The call succeeded; a handle write says the node's metadata after it (None for a
    delete), others nothing."""

    stat: Stat | None = None


@frozen
class SequencerChecked:
    valid: bool


@frozen
class NodeRead:
    """A node as the master has it: `stat` None if there is no such node (contents empty
    then, and for a directory)."""

    stat: Stat | None
    contents: bytes
    cached: bool
    """The session is registered as caching the name: the master will invalidate it before
    changing it, so the client may keep what it read until told otherwise."""
    event_sequence: int
    """The session's next event number when the read was answered: an invalidation of this
    name numbered at or above it came after the read, whenever it arrives."""
    uncached_because: str = ""
    """Why a read that asked to be cached was not, when a limit said so (for the log and
    /metrics: `limits.cached_names_per_session_max`); "" otherwise (a change under way
    is no news)."""


@frozen
class SessionSummary:
    """One session as this master sees it, for operators: the wire's `SessionInfo` with
    its lease in ticks (see `chubbypy.protocol.session.SessionInfo` for each field)."""

    session_id: SessionId
    name: str
    state: str
    lease_remaining_ticks: int
    handles: int
    locks: tuple[tuple[str, str], ...]
    lock_count: int
    ephemeral: tuple[str, ...]
    ephemeral_count: int
    cached_names: int
    principal: str = ""


@frozen
class SessionsListed:
    """One page of sessions in id order, and whether more follow."""

    sessions: tuple[SessionSummary, ...]
    more: bool


@frozen
class LockWaiterSummary:
    """One blocked acquire in a lock's queue, for operators: the wire's `LockWaiterInfo`
    with how long it has waited in ticks."""

    session_id: SessionId
    client: str
    principal: str
    mode: str
    waited_ticks: int


@frozen
class LockSummary:
    """A node's lock as this master sees it, for operators: the wire's `LockInfo` with its
    durations in ticks (see `chubbypy.protocol.session.LockInfo` for each field)."""

    path: str
    instance: int
    mode: str
    lock_generation: int
    holders: tuple[LockHolderInfo, ...]
    holder_count: int
    waiters: tuple[LockWaiterSummary, ...]
    waiter_count: int
    delay_remaining_ticks: int


@frozen
class SessionEnding:
    """An operator's end of a session (the wire's `SessionEnding`, in ticks): `found`
    False if there was no such session; else `already` says whether it was ending before
    this call, and `ends_in_ticks` how long the lease it has still runs on this master's
    clock (it is ended as expired then)."""

    found: bool
    already: bool
    ends_in_ticks: int


CallResult = (
    SessionStarted
    | KeepAliveAnswered
    | HandleOpened
    | LockGranted
    | Done
    | SequencerChecked
    | NodeRead
    | SessionsListed
    | LockSummary
    | SessionEnding
) | Failure


@frozen
class Reply:
    """Answer the call the shell knows as `token` with `result`."""

    token: CallToken
    result: CallResult


@frozen
class Proposal:
    """Propose `write` through the log; report it with `applied(token, ...)` once applied.

    `token` is the call it serves, or None for the master's own decisions (expiring a
    session, ending a lock-delay), which no client waits for.
    """

    token: CallToken | None
    write: LogWrite
    ticket: GateTicket
    """The cache gate's number for it: report `MasterService.landed(ticket)` once it was
    applied or refused."""
    principal: str = ""
    """Whom the write is done for: the principal of the connection whose call it serves
    (the namespace charges it for what it creates); "" for the master's own decisions."""


@frozen
class ClientWrite:
    """A client's write handed to `MasterService.submit_write` as `ticket` passed the cache
    gate: propose it now, and report `landed(ticket)` once applied or refused."""

    ticket: GateTicket
