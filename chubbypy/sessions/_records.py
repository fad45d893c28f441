"""What is replicated of a session: that it exists. Pure: a value.

Chubby §2.8, §2.9. A session's *existence* is a committed fact (`OpenSession`, `EndSession`
in the log), so its locks and ephemeral nodes outlive the master that granted them; its
*lease* is not: the authoritative session-lease timer runs in the master's memory, is never
written to the log, and a new master conservatively restarts every session's lease (a
lease may be extended, never shortened, so starting it again is always safe).
"""

from __future__ import annotations

from attrs import frozen

from chubbypy.protocol.session import SESSION_NAME_CHARS_MAX
from chubbypy.protocol.values import SessionId

__all__ = ["SESSION_NAME_CHARS_MAX", "SessionRecord"]


@frozen(order=True)
class SessionRecord:
    """One live session as the replicated database holds it."""

    session_id: SessionId
    """Unique in the cell, never reused: allocated like node instances, from the log index
    of the `OpenSession` that created it."""
    name: str
    """Who the client says it is (``chubbypy@host:pid`` by default)."""
