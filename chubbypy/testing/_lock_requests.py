"""A simulated lock client's calls and their answers, in its own terms (simulation only); what
crosses the simulated network is the wire protocol's own values."""

from __future__ import annotations

import enum

from attrs import frozen

from chubbypy.protocol.errors import ErrorCode
from chubbypy.protocol.namespace import Stat
from chubbypy.sessions import SessionEvent

LOCK_PATH_FORMAT = "/ls/sim/lock{}"
LOCK_COUNT = 2


class LockBug(enum.Enum):
    """Deliberate bugs in the lock simulation, to show its checkers can fail (PML §6.3)."""

    LEASE_FROM_LAST_SEND = "lease-from-last-send"
    """The client counts its lease from its last retry instead of its first sending."""
    HOLDER_IGNORES_JEOPARDY = "holder-ignores-jeopardy"
    """The client keeps believing it holds its lock after its local lease ran out."""
    CACHE_IGNORES_INVALIDATION = "cache-ignores-invalidation"
    """The client acknowledges INVALIDATE events without dropping what it cached."""


class LockOp(enum.Enum):
    CREATE_SESSION = "create session"
    KEEPALIVE = "keepalive"
    OPEN = "open"
    ACQUIRE = "acquire"
    """Blocking: answered when granted."""
    RELEASE = "release"
    FENCED_WRITE = "fenced write"
    """Write the lock file, guarded by the holder's sequencer (a MultiOp with LockHeldAt)."""
    CLOSE_SESSION = "close session"
    READ = "read"
    """Read a lock file through the master; with `cache`, ask to cache it."""


class LockStatus(enum.Enum):
    OK = "ok"
    NOT_MASTER = "not master"
    FAILED = "failed"
    """Refused by the master (with `code`)."""


@frozen
class LockRequest:
    client: str
    op_id: int
    kind: LockOp
    session_id: int = 0
    credential: bytes = b""
    acked: int = 0
    path: str = ""
    handle: bytes = b""
    sequencer: bytes = b""
    value: int = 0
    lock_delay_ms: int = 0
    generation: int = 0
    cache: bool = False


@frozen
class LockReply:
    op_id: int
    status: LockStatus
    code: ErrorCode | None = None
    session_id: int = 0
    credential: bytes = b""
    lease_ms: int = 0
    held_ms: int = 0
    handle: bytes = b""
    sequencer: bytes = b""
    generation: int = 0
    """The lock generation granted."""
    events: tuple[SessionEvent, ...] = ()
    hint: str | None = None
    stat: Stat | None = None
    contents: bytes = b""
    cached: bool = False
    event_sequence: int = 0
