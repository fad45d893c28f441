"""Sessions (Chubby §2.8, §2.9). Pure: the replicated record of a session, and the master's
in-memory session table (leases, KeepAlives, events), driven by ticks."""

from chubbypy.sessions._records import SESSION_NAME_CHARS_MAX, SessionRecord
from chubbypy.sessions._table import (
    EventKind,
    KeepAliveAnswer,
    Outputs,
    SessionEvent,
    SessionTable,
    SessionTiming,
)

__all__ = [
    "SESSION_NAME_CHARS_MAX",
    "EventKind",
    "KeepAliveAnswer",
    "Outputs",
    "SessionEvent",
    "SessionRecord",
    "SessionTable",
    "SessionTiming",
]
