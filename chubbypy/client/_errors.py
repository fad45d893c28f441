"""Client-side failures that have no wire code: a replica out of reach, a client closed.

Shell (STYLE §1, §9). Operating errors the cell reports are the `ChubbyError` classes of
`chubbypy.protocol.errors`; the exceptions here describe the path to the cell instead. A
`Cell` retries past `ReplicaUnreachable` (and says `Unavailable` when its deadline passes),
so only users of a bare `ReplicaConnection` see it.
"""

from __future__ import annotations

from chubbypy.protocol.errors import ChubbyError, ErrorCode, Unavailable

__all__ = [
    "CellClosed",
    "ConnectionClosed",
    "LockLost",
    "LockTimeout",
    "NotLeader",
    "OutcomeUnknown",
    "ReplicaUnreachable",
    "RequestTimedOut",
]


class ReplicaUnreachable(Exception):
    """A replica could not be reached or stopped answering; a request's outcome is unknown."""


class ConnectionClosed(ReplicaUnreachable):
    """The connection failed or closed before the reply (or the welcome) arrived."""


class RequestTimedOut(ReplicaUnreachable):
    """No reply (or welcome) arrived within the request timeout."""


class CellClosed(Exception):
    """The client was closed; it makes no more requests."""


class OutcomeUnknown(Unavailable):
    """A write that may or may not have been applied (once: never twice), and that the
    client must not send again: the cell evicted this client from its exactly-once table
    (to make room for newer clients) while the write was on its way, after more than one
    attempt of it was sent, so an earlier attempt may have been applied before the
    eviction. Read what it would have changed to find out. The client has registered
    again; its next writes go on as usual."""


class LockTimeout(Unavailable):
    """A lock was not acquired within the time allowed (the CLI's exit code 4)."""


class LockLost(ChubbyError):
    """A lock held by this client was lost: its session ended, or its file was deleted.
    Work done under it since may have overlapped another holder's."""

    code = ErrorCode.LOCK_NOT_HELD


class NotLeader(ChubbyError):
    """An election call that only the leader may make (`proclaim`), by one that is not."""

    code = ErrorCode.LOCK_NOT_HELD
