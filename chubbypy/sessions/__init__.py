"""Sessions (Chubby §2.8, §2.9). Pure: the replicated record of a session; the master's
session leases and KeepAlives come next (issue 4)."""

from chubbypy.sessions._records import SESSION_NAME_CHARS_MAX, SessionRecord

__all__ = ["SESSION_NAME_CHARS_MAX", "SessionRecord"]
