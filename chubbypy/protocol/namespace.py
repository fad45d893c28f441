"""Namespace operations and results, as frozen data: what clients ask of the replicated database.

Part of `chubbypy.protocol`. Writes (`Create`, `SetContents`, `Delete`, `SetAcl`, `MultiOp`)
go through the log and are applied by `chubbypy.namespace`; reads (`GetContentsAndStat`,
`GetStat`, `ReadDir`) are answered by the master from memory under its lease. Names are full
paths, ``/ls/<cell>/a/b`` (Chubby §2.3). Expected failures are `Failure` values, never
exceptions.
"""

from __future__ import annotations

from attrs import frozen

from chubbypy.protocol.errors import Failure

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


Test = Exists | Absent | ContentGenerationIs | AclGenerationIs | InstanceIs | ContentsAre

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
    contents: bytes
    stat: Stat


@frozen
class DirEntry:
    name: str
    stat: Stat


@frozen
class Listing:
    entries: tuple[DirEntry, ...]
    more: bool
    """More children follow the last one listed: ask again with `after` set to its name."""


@frozen
class MultiResult:
    """A MultiOp's outcome: which branch ran, each test's result, each operation's result."""

    guard_held: bool
    tests: tuple[bool, ...]
    results: tuple[Written, ...]


WriteResult = Written | MultiResult | Failure
ReadResult = Contents | Stat | Listing | Failure
