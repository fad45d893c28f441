"""What the master answers to session, handle and lock calls. Pure values."""

from __future__ import annotations

from attrs import frozen

from chubbypy.protocol.errors import Failure
from chubbypy.protocol.namespace import LogWrite, Stat
from chubbypy.sessions import SessionEvent


@frozen
class SessionStarted:
    session_id: int
    lease_ticks: int
    """How long the new session's lease runs from now, on the master's clock."""


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


@frozen
class LockGranted:
    stat: Stat
    sequencer: bytes


@frozen
class Done:
    """The call succeeded and has nothing to return."""


@frozen
class SequencerChecked:
    valid: bool


CallResult = (
    SessionStarted | KeepAliveAnswered | HandleOpened | LockGranted | Done | SequencerChecked
) | Failure


@frozen
class Reply:
    """Answer the call the shell knows as `token` with `result`."""

    token: int
    result: CallResult


@frozen
class Proposal:
    """Propose `write` through the log; report it with `applied(token, ...)` once applied.

    `token` is the call it serves, or None for the master's own decisions (expiring a
    session, ending a lock-delay), which no client waits for.
    """

    token: int | None
    write: LogWrite
