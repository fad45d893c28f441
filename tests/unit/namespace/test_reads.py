"""GetStat, GetContentsAndStat and ReadDir: answers, failures, and paging in name order."""

from __future__ import annotations

import random

import pytest
from attrs import evolve

from chubbypy.namespace import (
    DEFAULT_LIMITS,
    INSTANCES_PER_INDEX,
    ROOT_ACL_DEFAULT,
    NodeRecord,
    contents_checksum,
)
from chubbypy.protocol.errors import ErrorCode
from chubbypy.protocol.namespace import (
    Contents,
    Create,
    Delete,
    DirEntry,
    GetContentsAndStat,
    GetStat,
    Listing,
    ReadDir,
)
from tests.unit.namespace.harness import ROOT, Cell, at


def test_get_contents_and_stat_of_a_file() -> None:
    """GetContentsAndStat returns a file's whole contents and its Stat."""
    cell = Cell()
    stat = cell.ok(Create(at("f"), contents=b"data"))
    assert stat is not None
    assert cell.read(GetContentsAndStat(at("f"))) == Contents(b"data", stat)
    assert cell.read(GetStat(at("f"))) == stat


def test_read_failures() -> None:
    """NO_SUCH_NODE for a missing node; a directory has no contents (IS_A_DIRECTORY)."""
    cell = Cell()
    cell.ok(Create(at("d"), is_directory=True))
    assert cell.read_code(GetStat(at("x"))) is ErrorCode.NO_SUCH_NODE
    assert cell.read_code(GetContentsAndStat(at("x"))) is ErrorCode.NO_SUCH_NODE
    assert cell.read_code(GetContentsAndStat(at("d"))) is ErrorCode.IS_A_DIRECTORY
    assert cell.read_code(GetContentsAndStat(ROOT)) is ErrorCode.IS_A_DIRECTORY


def test_read_dir_lists_children_in_name_order_with_their_stats() -> None:
    """ReadDir gives each child's name and Stat, sorted by name (byte order), and no more."""
    cell = Cell()
    for name in ["b", "a-1", "a", "B", "a.2", "_"]:
        cell.ok(Create(at(name)))
    listing = cell.listing(ROOT)
    assert [e.name for e in listing.entries] == ["B", "_", "a", "a-1", "a.2", "b"]
    assert not listing.more
    assert listing.entries[2] == DirEntry("a", cell.stat(at("a")))


def test_read_dir_failures() -> None:
    """NO_SUCH_NODE, NOT_A_DIRECTORY for a file, BAD_REQUEST for a limit below 1."""
    cell = Cell()
    cell.ok(Create(at("f")))
    assert cell.read_code(ReadDir(at("x"))) is ErrorCode.NO_SUCH_NODE
    assert cell.read_code(ReadDir(at("f"))) is ErrorCode.NOT_A_DIRECTORY
    assert cell.read_code(ReadDir(ROOT, limit=0)) is ErrorCode.BAD_REQUEST
    assert cell.read_code(ReadDir(ROOT, limit=-1)) is ErrorCode.BAD_REQUEST


def test_an_empty_directory_lists_nothing() -> None:
    """A new cell's root has no children."""
    assert Cell().listing(ROOT) == Listing((), more=False)


@pytest.mark.parametrize(
    ("after", "limit", "names", "more"),
    [
        ("", 2, ["a", "b"], True),
        ("b", 2, ["c", "d"], False),
        ("b", 3, ["c", "d"], False),
        ("", 4, ["a", "b", "c", "d"], False),
        ("a0", 1, ["b"], True),
        ("d", 5, [], False),
        ("zzz", 1, [], False),
        ("\U0010ffff", 1, [], False),
    ],
)
def test_read_dir_pages_after_a_name(after: str, limit: int, names: list[str], more: bool) -> None:
    """ReadDir lists up to `limit` names strictly after `after` (which need not exist), and
    `more` says whether any follow."""
    cell = Cell()
    for name in "dcba":
        cell.ok(Create(at(name)))
    listing = cell.listing(ROOT, after, limit)
    assert [e.name for e in listing.entries] == names
    assert listing.more is more


def test_a_limit_above_the_maximum_is_clamped() -> None:
    """A limit above readdir_entries_max gives that many entries and more=True."""
    cell = Cell(evolve(DEFAULT_LIMITS, readdir_entries_max=3))
    for name in "abcde":
        cell.ok(Create(at(name)))
    listing = cell.listing(ROOT, limit=1000)
    assert [e.name for e in listing.entries] == ["a", "b", "c"]
    assert listing.more


def test_a_directory_of_100000_children_pages_quickly() -> None:
    """Paging 100,000 children 1,000 at a time returns each once, in order, with sizes right;
    children added and removed in the middle show up in the next pages."""
    cell = Cell()
    names = [f"n{i:06d}" for i in range(0, 200_000, 2)]
    records = [_file_record(name, index) for index, name in enumerate(names, start=1)]
    cell.machine.restore_records([_root_record(), *records])
    cell.index = len(names)  # the checkpoint's index: later writes come after it
    assert cell.stat(ROOT).size == 100_000
    assert _page_all(cell) == names
    cell.ok(Create(at("n050001")))
    cell.ok(Delete(at("n050002")))
    listing = cell.listing(ROOT, after="n050000", limit=3)
    assert [e.name for e in listing.entries] == ["n050001", "n050004", "n050006"]
    assert listing.more


def test_children_created_in_any_order_are_listed_sorted() -> None:
    """Creating 10,000 children in shuffled order and deleting half still pages in order."""
    cell = Cell()
    names = [f"n{i:05d}" for i in range(10_000)]
    shuffled = names[:]
    random.Random(3).shuffle(shuffled)
    for name in shuffled:
        cell.ok(Create(at(name)))
    for name in shuffled[::2]:
        cell.ok(Delete(at(name)))
    assert _page_all(cell) == sorted(shuffled[1::2])


def _page_all(cell: Cell) -> list[str]:
    listed: list[str] = []
    while True:
        listing = cell.listing(ROOT, after=listed[-1] if listed else "", limit=1000)
        listed.extend(e.name for e in listing.entries)
        if not listing.more:
            return listed


def _root_record() -> NodeRecord:
    return NodeRecord(ROOT, True, False, b"", 0, 0, 0, 1, 0, ROOT_ACL_DEFAULT)


def _file_record(name: str, index: int) -> NodeRecord:
    instance = index * INSTANCES_PER_INDEX
    checksum = contents_checksum(b"")
    return NodeRecord(at(name), False, False, b"", instance, 1, 0, 1, checksum, ROOT_ACL_DEFAULT)
