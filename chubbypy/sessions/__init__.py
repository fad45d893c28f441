"""Sessions and handles (Chubby §2.3, §2.8, §2.9). Pure: the replicated record of a
session, the master's in-memory session table (leases, KeepAlives, events) driven by
ticks, and handles with their check digits; and plain clients' credentials, MACs under
the same key in a domain of their own."""

# HandleMode and EventMask are wire values (`chubbypy.protocol.session`); they are named
# here too for callers that still import them from this package.
from chubbypy.protocol.session import EventKind, EventMask, HandleMode, SessionEvent
from chubbypy.sessions._handles import (
    Handle,
    client_credential,
    client_credential_matches,
    credential_matches,
    decode_handle,
    handle_epoch,
    handle_id_for,
    session_credential,
)
from chubbypy.sessions._records import SESSION_NAME_CHARS_MAX, SessionCalls, SessionRecord
from chubbypy.sessions._table import (
    KeepAliveAnswer,
    Outputs,
    SessionTable,
    SessionTiming,
)

__all__ = [
    "SESSION_NAME_CHARS_MAX",
    "EventKind",
    "EventMask",
    "Handle",
    "HandleMode",
    "KeepAliveAnswer",
    "Outputs",
    "SessionCalls",
    "SessionEvent",
    "SessionRecord",
    "SessionTable",
    "SessionTiming",
    "client_credential",
    "client_credential_matches",
    "credential_matches",
    "decode_handle",
    "handle_epoch",
    "handle_id_for",
    "session_credential",
]
