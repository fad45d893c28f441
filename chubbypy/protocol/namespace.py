"""Namespace operations and results, as frozen data: what clients ask of the replicated database.

Part of `chubbypy.protocol`. Writes (`Create`, `SetContents`, `Delete`, `SetAcl`, `MultiOp`)
go through the log and are applied by `chubbypy.namespace`; reads (`GetContentsAndStat`,
`GetStat`, `ReadDir`) are answered by the master from memory under its lease. Names are full
paths, ``/ls/<cell>/a/b`` (Chubby §2.3). Expected failures are `Failure` values, never
exceptions.
"""

from __future__ import annotations

import enum

from attrs import frozen

from chubbypy.protocol.errors import Failure
from chubbypy.protocol.values import CallNumber, HandleId, SessionId

# ----------------------------------------------------------------------------- metadata


@frozen
class AclNames:
    """The three ACL names of a node: each names a file in the cell's ACL directory."""

    read: str
    write: str
    change: str


@frozen
class Stat:
    """A node's metadata (Chubby §2.3): four monotonic numbers, a checksum, ACL names."""

    instance: int
    """Greater than the instance of any earlier node with the same name (the creating log
    index times 2**16, plus the nodes created earlier in that same entry), so a deleted and
    re-created name is a different node."""
    content_generation: int
    """Rises on every write of the contents (files only; 0 for directories)."""
    lock_generation: int
    """Rises on every free-to-held transition of the node's lock."""
    acl_generation: int
    """Rises on every change of the ACL names."""
    checksum: int
    """64-bit checksum of the contents (0 for directories)."""
    acl: AclNames
    is_directory: bool
    ephemeral: bool
    size: int
    """Bytes of contents (files) or number of children (directories)."""


# ----------------------------------------------------------------------------- writes


@frozen
class Create:
    """Create a file or directory; its parent must exist. ACL names default to the parent's."""

    path: str
    is_directory: bool = False
    contents: bytes = b""
    acl: AclNames | None = None
    ephemeral: bool = False


@frozen
class SetContents:
    """Replace a file's whole contents; only if its content generation is `expected_generation`,
    when given (compare-and-swap)."""

    path: str
    contents: bytes
    expected_generation: int | None = None


@frozen
class Delete:
    """Delete a node; a directory must be empty. Only if its instance is `expected_instance`,
    when given (so a handle never deletes a re-created node)."""

    path: str
    expected_instance: int | None = None


@frozen
class SetAcl:
    """Replace a node's ACL names; only if its ACL generation is `expected_generation`,
    when given."""

    path: str
    acl: AclNames
    expected_generation: int | None = None


# MultiOp guard tests (Paxos Made Live §5.6): each looks at one node.


@frozen
class Exists:
    path: str


@frozen
class Absent:
    path: str


@frozen
class ContentGenerationIs:
    path: str
    generation: int


@frozen
class AclGenerationIs:
    path: str
    generation: int


@frozen
class InstanceIs:
    path: str
    instance: int


@frozen
class ContentsAre:
    path: str
    contents: bytes


class LockMode(enum.IntEnum):
    """How a handle holds a lock (Chubby §2.4). Values are stable: they cross the wire."""

    EXCLUSIVE = 1
    SHARED = 2


@frozen
class LockHeldAt:
    """The node `path` of `instance` is locked in `mode` at `lock_generation`: what a
    sequencer names, so a write guarded by one is applied only while it is valid."""

    path: str
    instance: int
    mode: LockMode
    lock_generation: int


Test = (
    Exists | Absent | ContentGenerationIs | AclGenerationIs | InstanceIs | ContentsAre | LockHeldAt
)

SimpleWrite = Create | SetContents | Delete | SetAcl


@frozen
class MultiOp:
    """Atomically: if every test in `guard` holds, apply `if_true`, else `if_false`.

    All the chosen branch's operations apply, or (if one fails) none does.
    """

    guard: tuple[Test, ...]
    if_true: tuple[SimpleWrite, ...]
    if_false: tuple[SimpleWrite, ...] = ()


Write = Create | SetContents | Delete | SetAcl | MultiOp

# ----------------------------------------------------------------------------- session commands

# Log commands the master proposes itself, after checking the caller's session and handle;
# a client never sends them (its WriteRequest carries a `Write`). Chubby §2.4, §2.8, §2.9:
# the existence of sessions, their locks and their ephemeral nodes is replicated, so all of
# it outlives the master that granted it.


@frozen
class OpenSession:
    """Start a session; the result is `SessionOpened`. `name` says who the client is.
    With a `nonce`, a second OpenSession of the same nonce (a retried CreateSession) opens
    nothing: its result is the session the first one opened, while that lives."""

    name: str
    nonce: int = 0


@frozen
class EndSession:
    """End a session: drop its locks and delete its ephemeral nodes. `expired` (decided by
    the master when the session lease ran out) puts each lock it frees into lock-delay; a
    session the client closed frees its locks at once."""

    session_id: SessionId
    expired: bool


@frozen
class InSession:
    """`write` on behalf of session `session_id`, which must still exist when it is applied
    (so nothing a session asked for happens after it expired); an ephemeral node created by
    `write` belongs to the session and is deleted when it ends."""

    session_id: SessionId
    write: Write
    number: CallNumber | None = None
    """The session call this carries out: applied once, whatever the retries (see
    `CallNumber`); its result is kept for them."""


@frozen
class Acquire:
    """Handle `handle_id` of session `session_id` takes the lock of node `path` (of
    `instance`, so a re-created node is never locked by an old handle) in `mode`.
    `lock_delay_ms` applies if the session expires while holding it."""

    session_id: SessionId
    handle_id: HandleId
    path: str
    instance: int
    mode: LockMode
    lock_delay_ms: int = 0


@frozen
class Release:
    """The handle lets go of the lock; it is free at once if no one else holds it. With
    `lock_generation`, only the hold of that acquisition: a release delayed or duplicated
    on the way must not free a later acquisition by the same handle."""

    session_id: SessionId
    handle_id: HandleId
    path: str
    instance: int
    lock_generation: int | None = None
    number: CallNumber | None = None
    """The session call this carries out (see `InSession.number`)."""


@frozen
class EndLockDelay:
    """The master's clock says the lock-delay of node `path` (of `instance`) is over."""

    path: str
    instance: int


SessionCommand = OpenSession | EndSession | InSession | Acquire | Release | EndLockDelay

LogWrite = Write | SessionCommand
"""What a namespace log command carries: a client's write, or a session command."""

# ----------------------------------------------------------------------------- reads


@frozen
class GetContentsAndStat:
    path: str


@frozen
class GetStat:
    path: str


@frozen
class ReadDir:
    """Children of a directory in name order, after `after` (exclusive), at most `limit`."""

    path: str
    after: str = ""
    limit: int = 1000


Read = GetContentsAndStat | GetStat | ReadDir

# ----------------------------------------------------------------------------- results


@frozen
class Written:
    """A write's success: the node's metadata after it (None for a Delete)."""

    stat: Stat | None


@frozen
class Contents:
    """A file's whole contents and its metadata, read together (GetContentsAndStat)."""

    contents: bytes
    stat: Stat


@frozen
class DirEntry:
    """One child of a directory: its name (the last part of its path) and metadata."""

    name: str
    stat: Stat | None
    """None when the reader may not read the child itself (its read ACL does not admit
    them): a listing shows every name, but a child's metadata only to its readers."""


@frozen
class Listing:
    """One page of a directory's children, in name order (ReadDir)."""

    entries: tuple[DirEntry, ...]
    more: bool
    """More children follow the last one listed: ask again with `after` set to its name."""


@frozen
class MultiResult:
    """A MultiOp's outcome: which branch ran, each test's result, each operation's result."""

    guard_held: bool
    tests: tuple[bool, ...]
    results: tuple[Written, ...]


@frozen
class SessionOpened:
    session_id: SessionId


WriteResult = Written | MultiResult | SessionOpened | Failure
ReadResult = Contents | Stat | Listing | Failure
