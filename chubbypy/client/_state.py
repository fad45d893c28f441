"""The states of a client's session and the one table of moves between them.

Pure core (STYLE §1, §6): no I/O, no clock. Everything that changes a session's state is an
input in this table (h11's `_state.py`: "everything that affects the state machine must
live here"); `chubbypy.client._session_core.ClientSession` is the only caller of
`next_state`, and a move the table does not list is a programmer error.

Theory of operation::

    CONNECTED --lease ran out--> JEOPARDY --grace ran out---------------> EXPIRED
        ^                          |
        +---- SAFE <--lease extended (a KeepAlive answered in time)
    any live state --master ended it / KeepAlives gave up--> EXPIRED
    any live state --close requested--> CLOSING --close finished / master ended it--> CLOSED

*Live* states are CONNECTED, JEOPARDY and SAFE. SAFE is passed through at once (it is
reported, then the session is CONNECTED again). CLOSING is the program's own doing: the
CloseSession call is on its way, no KeepAlive follows, and the lease is no longer watched.
EXPIRED and CLOSED are final: nothing leaves them.
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = ["TRANSITIONS", "SessionInput", "SessionState", "next_state"]


class SessionState(enum.Enum):
    """Where a session is: connected, jeopardy, safe, closing, expired or closed (see
    `chubbypy.client.Session`). CLOSING is not reported to `on_state` callbacks or
    `states()` streams: the program asked for it."""

    CONNECTED = "connected"
    JEOPARDY = "jeopardy"
    SAFE = "safe"
    CLOSING = "closing"
    EXPIRED = "expired"
    CLOSED = "closed"

    @property
    def final(self) -> bool:
        """The session is over: expired, or closed."""
        return self in (SessionState.EXPIRED, SessionState.CLOSED)

    @property
    def live(self) -> bool:
        """Neither over nor being closed: KeepAlives run and the lease is watched."""
        return self in (SessionState.CONNECTED, SessionState.JEOPARDY, SessionState.SAFE)


class SessionInput(enum.Enum):
    """What can move a session from one state to another."""

    LEASE_RAN_OUT = "lease ran out"
    """The local lease ended without a KeepAlive answer."""
    LEASE_EXTENDED = "lease extended"
    """A KeepAlive was answered: the session lives on, whatever the state."""
    SAFETY_REPORTED = "safety reported"
    """SAFE was reported; the session is connected again."""
    GRACE_RAN_OUT = "grace ran out"
    """Jeopardy lasted the whole grace period."""
    MASTER_ENDED = "master ended"
    """A call was answered SESSION_EXPIRED: the master has ended the session."""
    KEEPALIVES_GAVE_UP = "keepalives gave up"
    """A KeepAlive found no master before its deadline, or the client was closed."""
    CLOSE_REQUESTED = "close requested"
    CLOSE_FINISHED = "close finished"
    """The CloseSession call ended (answered or not: the lease ends it anyway)."""


_S = SessionState
_I = SessionInput
_ENDINGS: Final = {_I.MASTER_ENDED: _S.EXPIRED, _I.KEEPALIVES_GAVE_UP: _S.EXPIRED}

TRANSITIONS: Final[dict[SessionState, dict[SessionInput, SessionState]]] = {
    _S.CONNECTED: {
        _I.LEASE_RAN_OUT: _S.JEOPARDY,
        _I.LEASE_EXTENDED: _S.CONNECTED,
        _I.CLOSE_REQUESTED: _S.CLOSING,
        **_ENDINGS,
    },
    _S.JEOPARDY: {
        _I.LEASE_EXTENDED: _S.SAFE,
        _I.GRACE_RAN_OUT: _S.EXPIRED,
        _I.CLOSE_REQUESTED: _S.CLOSING,
        **_ENDINGS,
    },
    _S.SAFE: {_I.SAFETY_REPORTED: _S.CONNECTED, _I.CLOSE_REQUESTED: _S.CLOSING, **_ENDINGS},
    _S.CLOSING: {
        _I.LEASE_EXTENDED: _S.CLOSING,
        _I.CLOSE_FINISHED: _S.CLOSED,
        _I.MASTER_ENDED: _S.CLOSED,
        _I.KEEPALIVES_GAVE_UP: _S.CLOSED,
    },
    _S.EXPIRED: {},
    _S.CLOSED: {},
}
"""Each state's moves: the state an input leads to. Anything not listed cannot happen."""


def next_state(state: SessionState, event: SessionInput) -> SessionState:
    """The state `event` moves `state` to; asserts that the table allows the move."""
    moves = TRANSITIONS[state]
    assert event in moves, f"no move from {state.name} on {event.name}"
    return moves[event]
