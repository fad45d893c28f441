"""Create, SetContents, Delete and SetAcl: results, generations, inheritance, failures."""

from __future__ import annotations

import pytest
from attrs import evolve

from chubbypy.namespace import (
    DEFAULT_LIMITS,
    INSTANCES_PER_INDEX,
    ROOT_ACL_DEFAULT,
    contents_checksum,
)
from chubbypy.protocol import LogIndex
from chubbypy.protocol.errors import ErrorCode
from chubbypy.protocol.namespace import (
    AclNames,
    Create,
    Delete,
    GetStat,
    InSession,
    OpenSession,
    SessionOpened,
    SetAcl,
    SetContents,
    Stat,
    Written,
)
from tests.unit.namespace.harness import ROOT, Cell, at

ACL = AclNames("readers", "writers", "admins")


# ----------------------------------------------------------------------------- Create


def test_a_new_file_has_generation_one_and_its_checksum() -> None:
    """A file created at log index i has instance i * 2**16, generations 1/0/1, the
    checksum and size of its contents, and its parent's ACL names."""
    cell = Cell()
    assert cell.ok(Create(at("f"), contents=b"hello")) == Stat(
        instance=1 * INSTANCES_PER_INDEX,
        content_generation=1,
        lock_generation=0,
        acl_generation=1,
        checksum=contents_checksum(b"hello"),
        acl=ROOT_ACL_DEFAULT,
        is_directory=False,
        ephemeral=False,
        size=5,
    )
    assert cell.contents(at("f")) == b"hello"


def test_the_checksum_is_64_bits_of_blake2b() -> None:
    """The checksum is the big-endian 8-byte BLAKE2b digest of the contents."""
    assert contents_checksum(b"") == 0xE4A6A0577479B2B4  # hashlib.blake2b(b"", digest_size=8)
    assert 0 <= contents_checksum(b"x" * 1000) < 2**64


def test_a_new_directory_has_no_contents_and_counts_its_children() -> None:
    """A directory has content generation 0, checksum 0 and size = number of children."""
    cell = Cell()
    stat = cell.ok(Create(at("d"), is_directory=True))
    assert stat is not None
    assert (stat.is_directory, stat.content_generation, stat.checksum, stat.size) == (True, 0, 0, 0)
    cell.ok(Create(at("d", "x")))
    cell.ok(Create(at("d", "y"), is_directory=True))
    assert cell.stat(at("d")).size == 2
    assert cell.stat(ROOT).size == 1


def test_the_root_exists_from_the_start() -> None:
    """A new cell's root is a permanent directory with instance 0 and the default ACL."""
    assert Cell().stat(ROOT) == Stat(0, 0, 0, 1, 0, ROOT_ACL_DEFAULT, True, False, 0)


def test_acl_names_are_inherited_unless_given() -> None:
    """A node without ACL names takes its parent's; given ones are kept and passed down."""
    cell = Cell()
    cell.ok(Create(at("d"), is_directory=True, acl=ACL))
    cell.ok(Create(at("d", "e"), is_directory=True))
    cell.ok(Create(at("d", "e", "f")))
    cell.ok(Create(at("d", "g"), acl=AclNames("a", "b", "c")))
    assert cell.stat(at("d", "e")).acl == ACL
    assert cell.stat(at("d", "e", "f")).acl == ACL
    assert cell.stat(at("d", "g")).acl == AclNames("a", "b", "c")
    assert cell.stat(ROOT).acl == ROOT_ACL_DEFAULT


def test_the_ephemeral_flag_is_stored() -> None:
    """Create(ephemeral=True) in a session gives an ephemeral file owned by the session."""
    cell = Cell()
    opened = cell.write(OpenSession("client"))
    assert isinstance(opened, SessionOpened)
    cell.ok(InSession(opened.session_id, Create(at("e"), ephemeral=True)))
    assert cell.stat(at("e")).ephemeral
    assert not cell.stat(ROOT).ephemeral
    (record,) = [r for r in cell.machine.records() if r.path == at("e")]
    assert record.owner_session == opened.session_id


def test_create_failures() -> None:
    """EXISTS, NO_SUCH_NODE (no parent) and NOT_A_DIRECTORY (the parent is a file)."""
    cell = Cell()
    cell.ok(Create(at("f")))
    assert cell.code(Create(at("f"))) is ErrorCode.EXISTS
    assert cell.code(Create(at("f"), is_directory=True)) is ErrorCode.EXISTS
    assert cell.code(Create(ROOT, is_directory=True)) is ErrorCode.EXISTS
    assert cell.code(Create(at("no", "x"))) is ErrorCode.NO_SUCH_NODE
    assert cell.code(Create(at("f", "x"))) is ErrorCode.NOT_A_DIRECTORY


def test_a_directory_cannot_be_created_with_contents() -> None:
    """Contents for a new directory are refused as IS_A_DIRECTORY, as SetContents on one is."""
    failure = Cell().fails(Create(at("d"), is_directory=True, contents=b"x"))
    assert failure.code is ErrorCode.IS_A_DIRECTORY
    assert "a directory has no contents" in failure.message


def test_contents_up_to_the_limit_are_accepted() -> None:
    """Create and SetContents accept file_bytes_max bytes and refuse one more as TOO_LARGE."""
    cell = Cell()
    limit = DEFAULT_LIMITS.file_bytes_max
    assert cell.ok(Create(at("f"), contents=b"x" * limit)) is not None
    assert cell.code(Create(at("g"), contents=b"x" * (limit + 1))) is ErrorCode.TOO_LARGE
    assert cell.ok(SetContents(at("f"), b"y" * limit)) is not None
    assert cell.code(SetContents(at("f"), b"y" * (limit + 1))) is ErrorCode.TOO_LARGE
    small = Cell(evolve(DEFAULT_LIMITS, file_bytes_max=2))
    assert small.code(Create(at("f"), contents=b"abc")) is ErrorCode.TOO_LARGE


def test_request_problems_come_before_state_problems() -> None:
    """A bad name or size is reported even where the state would also refuse."""
    cell = Cell()
    cell.ok(Create(at("f")))
    too_big = b"x" * (DEFAULT_LIMITS.file_bytes_max + 1)
    assert cell.code(Create(at("f"), contents=too_big)) is ErrorCode.TOO_LARGE
    assert cell.code(SetContents(at("missing"), too_big)) is ErrorCode.TOO_LARGE
    assert cell.code(Create(at("f"), acl=AclNames("", "", ""))) is ErrorCode.INVALID_NAME


# ----------------------------------------------------------------------------- instances


def test_a_re_created_node_has_a_greater_instance() -> None:
    """Deleting and re-creating a name gives a new, greater instance number."""
    cell = Cell()
    first = cell.ok(Create(at("f")))
    cell.ok(Delete(at("f")))
    second = cell.ok(Create(at("f")))
    assert first is not None
    assert second is not None
    assert second.instance > first.instance


def test_nodes_created_in_one_log_entry_have_distinct_instances() -> None:
    """Commands batched in one entry share its index, yet their nodes' instances differ."""
    cell = Cell()
    instances = []
    for _ in range(3):
        stat = cell.ok(Create(at("f")), same_entry=True)
        assert stat is not None
        instances.append(stat.instance)
        cell.ok(Delete(at("f")), same_entry=True)
    assert instances == [INSTANCES_PER_INDEX, INSTANCES_PER_INDEX + 1, INSTANCES_PER_INDEX + 2]
    assert cell.ok(Create(at("f"))) == evolve(cell.stat(at("f")), instance=2 * INSTANCES_PER_INDEX)


def test_a_log_entry_that_creates_too_many_nodes_is_busy() -> None:
    """Past INSTANCES_PER_INDEX creations in one entry, a Create is refused as BUSY; the next
    entry creates again."""
    cell = Cell()
    cell.ok(Create(at("first")))
    for _ in range(INSTANCES_PER_INDEX - 1):
        assert cell.machine.tree.new_instance(cell.index) is not None
    assert cell.machine.tree.new_instance(cell.index) is None
    result = cell.machine.apply_write(LogIndex(cell.index), Create(at("f")))
    assert result.result.code is ErrorCode.BUSY  # type: ignore[union-attr]
    assert cell.ok(Create(at("f"))) is not None


# ----------------------------------------------------------------------------- SetContents


def test_set_contents_raises_the_content_generation() -> None:
    """Each write of a file's contents adds one to its content generation, even the same
    contents, and updates its checksum and size; nothing else changes."""
    cell = Cell()
    created = cell.ok(Create(at("f"), contents=b"a"))
    assert created is not None
    after = cell.ok(SetContents(at("f"), b"bcd"))
    assert after == evolve(
        created, content_generation=2, checksum=contents_checksum(b"bcd"), size=3
    )
    again = cell.ok(SetContents(at("f"), b"bcd"))
    assert again == evolve(after, content_generation=3)
    assert cell.contents(at("f")) == b"bcd"


def test_set_contents_compare_and_swap() -> None:
    """With expected_generation, the write happens only if it is current."""
    cell = Cell()
    cell.ok(Create(at("f"), contents=b"a"))
    assert cell.ok(SetContents(at("f"), b"b", expected_generation=1)) is not None
    failure = cell.fails(SetContents(at("f"), b"c", expected_generation=1))
    assert failure.code is ErrorCode.GENERATION_MISMATCH
    assert "content generation is 2, not 1" in failure.message
    assert cell.contents(at("f")) == b"b"


def test_set_contents_failures() -> None:
    """NO_SUCH_NODE for a missing file and IS_A_DIRECTORY for a directory."""
    cell = Cell()
    cell.ok(Create(at("d"), is_directory=True))
    assert cell.code(SetContents(at("f"), b"x")) is ErrorCode.NO_SUCH_NODE
    assert cell.code(SetContents(at("d"), b"x")) is ErrorCode.IS_A_DIRECTORY
    assert cell.code(SetContents(ROOT, b"")) is ErrorCode.IS_A_DIRECTORY
    assert cell.code(SetContents(at("d"), b"", expected_generation=0)) is ErrorCode.IS_A_DIRECTORY


# ----------------------------------------------------------------------------- Delete


def test_delete_removes_a_node_and_its_parent_counts_one_child_less() -> None:
    """Delete of a file or an empty directory succeeds with Written(None)."""
    cell = Cell()
    cell.ok(Create(at("d"), is_directory=True))
    cell.ok(Create(at("d", "f")))
    assert cell.write(Delete(at("d", "f"))) == Written(None)
    assert cell.stat(at("d")).size == 0
    assert cell.write(Delete(at("d"))) == Written(None)
    assert cell.read_code(GetStat(at("d"))) is ErrorCode.NO_SUCH_NODE
    assert cell.stat(ROOT).size == 0


def test_delete_failures() -> None:
    """NO_SUCH_NODE, NOT_EMPTY for a directory with children, INVALID_NAME for the root."""
    cell = Cell()
    cell.ok(Create(at("d"), is_directory=True))
    cell.ok(Create(at("d", "f")))
    assert cell.code(Delete(at("x"))) is ErrorCode.NO_SUCH_NODE
    assert cell.code(Delete(at("d"))) is ErrorCode.NOT_EMPTY
    failure = cell.fails(Delete(ROOT))
    assert failure.code is ErrorCode.INVALID_NAME
    assert "cell root cannot be deleted" in failure.message


def test_delete_with_expected_instance() -> None:
    """Delete with the node's instance succeeds; with another one (a re-created node's
    predecessor, say) it is GENERATION_MISMATCH."""
    cell = Cell()
    old = cell.ok(Create(at("f")))
    assert old is not None
    cell.ok(Delete(at("f")))
    new = cell.ok(Create(at("f")))
    assert new is not None
    failure = cell.fails(Delete(at("f"), expected_instance=old.instance))
    assert failure.code is ErrorCode.GENERATION_MISMATCH
    assert f"instance is {new.instance}, not {old.instance}" in failure.message
    assert cell.write(Delete(at("f"), expected_instance=new.instance)) == Written(None)


def test_instance_mismatch_is_reported_before_not_empty() -> None:
    """A Delete meant for another instance of a non-empty directory is GENERATION_MISMATCH."""
    cell = Cell()
    cell.ok(Create(at("d"), is_directory=True))
    cell.ok(Create(at("d", "f")))
    assert cell.code(Delete(at("d"), expected_instance=1)) is ErrorCode.GENERATION_MISMATCH


# ----------------------------------------------------------------------------- SetAcl


def test_set_acl_raises_the_acl_generation() -> None:
    """SetAcl replaces the ACL names and adds one to the ACL generation; nothing else."""
    cell = Cell()
    created = cell.ok(Create(at("f"), contents=b"x"))
    assert created is not None
    assert cell.ok(SetAcl(at("f"), ACL)) == evolve(created, acl=ACL, acl_generation=2)
    assert cell.ok(SetAcl(at("f"), ACL)) == evolve(created, acl=ACL, acl_generation=3)


def test_set_acl_compare_and_swap_and_failures() -> None:
    """expected_generation must be current; a missing node is NO_SUCH_NODE."""
    cell = Cell()
    cell.ok(Create(at("d"), is_directory=True))
    assert cell.ok(SetAcl(at("d"), ACL, expected_generation=1)) is not None
    failure = cell.fails(SetAcl(at("d"), ROOT_ACL_DEFAULT, expected_generation=1))
    assert failure.code is ErrorCode.GENERATION_MISMATCH
    assert "ACL generation is 2, not 1" in failure.message
    assert cell.code(SetAcl(at("x"), ACL)) is ErrorCode.NO_SUCH_NODE


def test_changing_the_root_acl_affects_only_new_children() -> None:
    """The root's ACL names can change; children inherit at creation, not afterwards."""
    cell = Cell()
    cell.ok(Create(at("before")))
    cell.ok(SetAcl(ROOT, ACL))
    cell.ok(Create(at("after")))
    assert cell.stat(ROOT).acl == ACL
    assert cell.stat(at("before")).acl == ROOT_ACL_DEFAULT
    assert cell.stat(at("after")).acl == ACL


@pytest.mark.parametrize(
    "write",
    [Create(at("d"), is_directory=True), SetAcl(ROOT, ACL)],
)
def test_lock_generation_is_zero_until_locks_exist(write: Create | SetAcl) -> None:
    """No write of this issue moves the lock generation."""
    stat = Cell().ok(write)
    assert stat is not None
    assert stat.lock_generation == 0
