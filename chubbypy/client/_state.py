"""The states of a client's session (see `chubbypy.client._session` for what each means)."""

from __future__ import annotations

import enum

__all__ = ["SessionState"]


class SessionState(enum.Enum):
    CONNECTED = "connected"
    JEOPARDY = "jeopardy"
    SAFE = "safe"
    EXPIRED = "expired"
    CLOSED = "closed"

    @property
    def final(self) -> bool:
        """The session is over: expired, or closed."""
        return self in (SessionState.EXPIRED, SessionState.CLOSED)
