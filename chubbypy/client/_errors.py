"""Client-side failures that have no wire code: a replica out of reach, a client closed.

Shell (STYLE §1, §9). Operating errors the cell reports are the `ChubbyError` classes of
`chubbypy.protocol.errors`; the exceptions here describe the path to the cell instead. A
`Cell` retries past `ReplicaUnreachable` (and says `Unavailable` when its deadline passes),
so only users of a bare `ReplicaConnection` see it.
"""

from __future__ import annotations

__all__ = ["CellClosed", "ConnectionClosed", "ReplicaUnreachable", "RequestTimedOut"]


class ReplicaUnreachable(Exception):
    """A replica could not be reached or stopped answering; a request's outcome is unknown."""


class ConnectionClosed(ReplicaUnreachable):
    """The connection failed or closed before the reply (or the welcome) arrived."""


class RequestTimedOut(ReplicaUnreachable):
    """No reply (or welcome) arrived within the request timeout."""


class CellClosed(Exception):
    """The client was closed; it makes no more requests."""
