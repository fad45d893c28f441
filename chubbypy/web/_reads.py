"""What the pages and the JSON API read from the cell, once, for both.

Shell (STYLE §1). Each function here makes the client calls one view needs, as the
visitor's own client (so the cell's ACLs apply), and returns plain values: the API turns
them into JSON, the pages into HTML, so the two never disagree. Every answer is bounded
by a ``web:`` key: a page of at most ``children_per_page`` children, at most
``contents_shown_bytes_max`` bytes of contents with the whole size stated.
"""

from __future__ import annotations

import json
from typing import Any, Final

from attrs import frozen
from twisted.internet.defer import DeferredList

from chubbypy.client import Cell
from chubbypy.namespace import (
    ADMIN,
    EVERYONE,
    acl_file_admits,
    acl_files_needed,
    acl_path,
    listed_principals,
)
from chubbypy.namespace._names import component_problem, parent_of
from chubbypy.protocol.errors import (
    ChubbyError,
    InvalidName,
    IsADirectory,
    NoSuchNode,
    NotADirectory,
    PermissionDenied,
)
from chubbypy.protocol.namespace import AclNames, DirEntry, Stat

__all__ = [
    "AclView",
    "ContentsPage",
    "DirectoryPage",
    "NodeView",
    "acl_view",
    "contents_page",
    "directory_page",
    "hex_lines",
    "node_view",
    "pretty_json",
]

COMPONENT_BYTES_MAX: Final = 255
"""The cell's longest component (`NamespaceLimits.component_bytes_max`)."""


@frozen
class DirectoryPage:
    """One page of a directory's children in name order: those after `after` (and with
    names starting with `prefix`, when one is given); `more` says whether more follow."""

    path: str
    stat: Stat
    entries: tuple[DirEntry, ...]
    more: bool
    after: str
    """The name this page lists children after, as asked ("" on a first page)."""
    prefix: str

    @property
    def next_after(self) -> str | None:
        """What `after` is for the next page, or None on the last."""
        return self.entries[-1].name if self.more and self.entries else None


async def directory_page(
    cell: Cell, path: str, *, after: str = "", prefix: str = "", limit: int
) -> DirectoryPage:
    """A page of `path`'s children (`NotADirectory` for a file). With `prefix`, only the
    names that start with it: the directory is entered at the prefix (a lookup, however
    large the directory), never scanned."""
    if prefix:
        problem = component_problem(prefix, COMPONENT_BYTES_MAX)
        if problem is not None:
            raise InvalidName(f"the name searched for {problem}")
    stat = await cell.get_stat(path)
    if not stat.is_directory:
        raise NotADirectory(f"{path} is a file")
    entries: list[DirEntry] = []
    start = after
    if prefix and after < prefix:
        exact = await _entry(cell, f"{path}/{prefix}", prefix)
        entries += [exact] if exact is not None else []
        start = prefix
    listing = await cell.read_dir(path, start, limit)
    more = listing.more
    for entry in listing.entries:
        if prefix and not entry.name.startswith(prefix):
            more = False  # names in order: none after this one starts with the prefix
            break
        entries.append(entry)
    if len(entries) > limit:
        entries, more = entries[:limit], True
    return DirectoryPage(path, stat, tuple(entries), more, after, prefix)


async def _entry(cell: Cell, path: str, name: str) -> DirEntry | None:
    """The child `name` as a listing would show it, or None if there is none."""
    try:
        return DirEntry(name, await cell.get_stat(path))
    except NoSuchNode:
        return None
    except PermissionDenied:
        return DirEntry(name, None)  # it exists; its metadata is its readers' business


@frozen
class ContentsPage:
    """Part of a file's contents: `data` starts at `offset` of `size` bytes in all."""

    data: bytes
    offset: int
    size: int
    is_text: bool
    """The whole file is UTF-8 text."""

    @property
    def end(self) -> int:
        return self.offset + len(self.data)

    @property
    def more(self) -> bool:
        return self.end < self.size


def contents_page(contents: bytes, offset: int, length_max: int) -> ContentsPage:
    """At most `length_max` bytes of `contents` from `offset`; for UTF-8 text the page ends
    on a character boundary, so each page decodes by itself."""
    offset = max(0, min(offset, len(contents)))
    end = min(len(contents), offset + length_max)
    is_text = _is_utf8(contents)
    if is_text:
        while end < len(contents) and end > offset and contents[end] & 0xC0 == 0x80:
            end -= 1  # a continuation byte: the character began before the page's end
        while offset < end and contents[offset] & 0xC0 == 0x80:
            offset += 1
    return ContentsPage(contents[offset:end], offset, len(contents), is_text)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def pretty_json(contents: bytes) -> str | None:
    """The contents as indented JSON, or None if they are not JSON."""
    try:
        document: Any = json.loads(contents)
    except (ValueError, RecursionError):
        return None
    return json.dumps(document, indent=2, ensure_ascii=False, sort_keys=False)


def hex_lines(data: bytes, offset: int) -> list[tuple[str, str, str]]:
    """A hex dump of `data` (which starts at `offset` of its file): (offset, bytes in hex,
    printable ASCII with a dot for every other byte), sixteen bytes a line."""
    lines = []
    for start in range(0, len(data), 16):
        chunk = data[start : start + 16]
        hexed = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        lines.append((f"{offset + start:08x}", hexed, text))
    return lines


@frozen
class AclView:
    """One of a node's ACL names and what its file in the ACL directory lists."""

    role: str
    """read, write or change."""
    name: str
    path: str
    principals: tuple[str, ...] | None
    """The entries its file lists; None when it has no file or it cannot be read."""
    note: str
    """In words: who it admits, or why the list is not shown."""
    exists: bool
    """It has a file (that the visitor may or may not read)."""


async def acl_view(cell: Cell, acl: AclNames) -> tuple[AclView, ...]:
    """The three ACL names of a node, each with the principals its file lists (read as
    the visitor: an ACL file the visitor may not read is said to be unreadable)."""
    views = []
    files: dict[str, tuple[tuple[str, ...] | None, str, bool]] = {}
    for role, name in (("read", acl.read), ("write", acl.write), ("change", acl.change)):
        if name not in files:
            files[name] = await _acl_file(cell, name)
        principals, note, exists = files[name]
        views.append(AclView(role, name, acl_path(cell.cell, name), principals, note, exists))
    return tuple(views)


async def _acl_file(cell: Cell, name: str) -> tuple[tuple[str, ...] | None, str, bool]:
    try:
        contents = await cell.get_contents_and_stat(acl_path(cell.cell, name))
    except (NoSuchNode, IsADirectory):
        if name == EVERYONE:
            return None, "everyone (it has no file)", False
        return None, "no one: it has no file", False
    except PermissionDenied:
        return None, "its file is not readable by you", True
    listed = listed_principals(contents.contents)
    if "*" in listed:
        return listed, "everyone (*)", True
    return listed, ", ".join(listed) if listed else "no one: its file lists no principal", True


async def is_operator(cell: Cell | None, principal: str) -> bool:
    """Whether the ACL ``admin`` admits `principal`, so a page offers them an operator's
    action; False when its file cannot be read. It is read through the session of their
    client `cell`, so from its consistent cache after the first page (a page drawn costs
    no round trip for it). The cell checks each call itself: this only decides what is
    offered."""
    if cell is None:
        return False
    try:
        session = await cell.session()
        contents: bytes | None
        contents, _ = await session.get_contents_and_stat(acl_path(cell.cell, ADMIN))
    except (NoSuchNode, IsADirectory):
        contents = None  # no ACL file: the name admits no one
    except ChubbyError:
        return False
    return acl_file_admits(ADMIN, contents, principal)


async def unknown_acl_names(cell: Cell, acl: AclNames) -> tuple[str, ...]:
    """A warning for each ACL name with no file (`acl_files_needed`)."""
    warnings = []
    given = {"read": acl.read, "write": acl.write, "change": acl.change}
    for needed in acl_files_needed(cell.cell, given):
        try:
            found: Stat | None = await cell.get_stat(needed.path)
        except NoSuchNode:
            found = None
        except ChubbyError:
            continue  # unreadable or unreachable: it may well exist
        warning = needed.warning(found)
        if warning is not None:
            warnings.append(warning)
    return tuple(warnings)


@frozen
class NodeView:
    """A node as its page shows it: its metadata, and for a file its contents."""

    path: str
    stat: Stat
    contents: bytes | None
    """The whole contents of a file; None for a directory."""

    @property
    def parent(self) -> str:
        return parent_of(self.path)


async def node_view(cell: Cell, path: str) -> NodeView:
    """The node at `path`: a file with its contents, or a directory's metadata."""
    try:
        read = await cell.get_contents_and_stat(path)
    except IsADirectory:
        return NodeView(path, await cell.get_stat(path), None)
    return NodeView(path, read.stat, read.contents)


LOCK_LOOKUPS_MAX: Final = 50
"""The most children of one directory page whose lock is looked up."""


async def lock_modes(cell: Cell, listing: DirectoryPage) -> dict[str, str]:
    """The lock mode of the page's files that were ever locked (lock generation above 0),
    the first `LOCK_LOOKUPS_MAX` of them, asked of the master together; a child whose
    lock the visitor may not see, or that went meanwhile, is left out (free)."""
    names = [
        entry.name
        for entry in listing.entries
        if entry.stat is not None and entry.stat.lock_generation > 0
    ][:LOCK_LOOKUPS_MAX]
    asked = [cell.lock_info(f"{listing.path}/{name}") for name in names]
    answers = await DeferredList(asked, consumeErrors=True)
    return {name: info.mode for name, (ok, info) in zip(names, answers, strict=True) if ok}
