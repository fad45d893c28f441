"""MultiOp: every guard test reported, one branch applied, atomically, within its limit."""

from __future__ import annotations

import pytest
from attrs import evolve

from chubbypy.namespace import DEFAULT_LIMITS, INSTANCES_PER_INDEX
from chubbypy.protocol import LogIndex
from chubbypy.protocol.errors import ErrorCode
from chubbypy.protocol.namespace import (
    Absent,
    AclGenerationIs,
    AclNames,
    ContentGenerationIs,
    ContentsAre,
    Create,
    Delete,
    Exists,
    InstanceIs,
    MultiOp,
    MultiResult,
    SetAcl,
    SetContents,
    Test,
    Written,
)
from tests.unit.namespace.harness import ROOT, Cell, at

ACL = AclNames("r", "w", "c")


def _cell() -> Cell:
    """A cell with /d (a directory holding f, contents b"x", created at index 2)."""
    cell = Cell()
    cell.ok(Create(at("d"), is_directory=True))
    cell.ok(Create(at("d", "f"), contents=b"x"))
    return cell


F_INSTANCE = 2 * INSTANCES_PER_INDEX


@pytest.mark.parametrize(
    ("test", "holds"),
    [
        (Exists(at("d", "f")), True),
        (Exists(at("d", "g")), False),
        (Absent(at("d", "g")), True),
        (Absent(at("d")), False),
        (ContentGenerationIs(at("d", "f"), 1), True),
        (ContentGenerationIs(at("d", "f"), 2), False),
        (ContentGenerationIs(at("d"), 0), True),
        (ContentGenerationIs(at("g"), 0), False),
        (AclGenerationIs(at("d", "f"), 1), True),
        (AclGenerationIs(at("d", "f"), 0), False),
        (AclGenerationIs(at("g"), 1), False),
        (InstanceIs(at("d", "f"), F_INSTANCE), True),
        (InstanceIs(at("d", "f"), F_INSTANCE + 1), False),
        (InstanceIs(at("g"), 0), False),
        (ContentsAre(at("d", "f"), b"x"), True),
        (ContentsAre(at("d", "f"), b"y"), False),
        (ContentsAre(at("d"), b""), False),
        (ContentsAre(at("g"), b""), False),
        (Exists(ROOT), True),
    ],
)
def test_each_guard_test(test: Test, holds: bool) -> None:
    """Each test looks at one node; a test of a property of a missing node is false, and
    a directory's contents are never equal to anything."""
    assert _cell().multi(MultiOp((test,), ())).tests == (holds,)


def test_every_test_is_reported_and_all_must_hold_for_if_true() -> None:
    """All tests run and are returned, even after a false one; if_false runs then."""
    cell = _cell()
    guard = (Exists(at("x")), Exists(at("d")), Absent(at("d")))
    result = cell.multi(MultiOp(guard, (Create(at("t")),), (Create(at("e")),)))
    assert result.guard_held is False
    assert result.tests == (False, True, False)
    assert cell.names(ROOT) == ["d", "e"]


def test_if_true_runs_when_every_test_holds() -> None:
    """With the guard true, if_true's operations run in order and each result is returned."""
    cell = _cell()
    result = cell.multi(
        MultiOp(
            (Exists(at("d", "f")), ContentGenerationIs(at("d", "f"), 1)),
            (SetContents(at("d", "f"), b"y"), Create(at("d", "g")), Delete(at("d", "g"))),
            (Create(at("never")),),
        )
    )
    assert result.guard_held
    assert result.tests == (True, True)
    assert len(result.results) == 3
    assert result.results[0] == Written(cell.stat(at("d", "f")))
    assert result.results[2] == Written(None)
    assert cell.contents(at("d", "f")) == b"y"
    assert cell.names(at("d")) == ["f"]


def test_an_empty_guard_holds_and_empty_branches_do_nothing() -> None:
    """No tests means if_true; an empty branch is a successful no-op."""
    cell = _cell()
    before = cell.machine.snapshot()
    assert cell.multi(MultiOp((), ())) == MultiResult(True, (), ())
    assert cell.multi(MultiOp((Absent(ROOT),), (Delete(at("d", "f")),))) == MultiResult(
        False, (False,), ()
    )
    assert cell.machine.snapshot() == before


def test_later_operations_see_earlier_ones() -> None:
    """A branch may create a directory, fill it and write with CAS on what it just made."""
    cell = Cell()
    cell.multi(
        MultiOp(
            (Absent(at("new")),),
            (
                Create(at("new"), is_directory=True, acl=ACL),
                Create(at("new", "f"), contents=b"1"),
                SetContents(at("new", "f"), b"2", expected_generation=1),
                SetAcl(at("new", "f"), AclNames("a", "b", "c"), expected_generation=1),
            ),
        )
    )
    stat = cell.stat(at("new", "f"))
    assert (stat.content_generation, stat.acl_generation) == (2, 2)
    assert stat.acl == AclNames("a", "b", "c")


def test_a_failing_operation_rolls_back_the_whole_branch() -> None:
    """When the fourth operation fails, the first three leave no trace anywhere: nodes,
    listings, sizes, change tracking; the result is that operation's own Failure."""
    cell = _cell()
    cell.machine.take_changes()
    before = cell.machine.snapshot()
    failure = cell.fails(
        MultiOp(
            (),
            (
                Create(at("d", "g"), is_directory=True),
                Delete(at("d", "f")),
                SetAcl(at("d"), ACL),
                SetContents(at("d", "f"), b"gone"),
            ),
        )
    )
    assert failure.code is ErrorCode.NO_SUCH_NODE
    assert failure.message == f"if_true[3]: no node {at('d', 'f')}; nothing was applied"
    assert cell.machine.snapshot() == before
    assert cell.names(at("d")) == ["f"]
    assert cell.stat(at("d")).size == 1
    assert cell.machine.take_changes().upserts == ()


def test_a_failure_in_if_false_names_that_branch() -> None:
    """The failing operation's place is given as if_false[i] when if_false ran."""
    cell = _cell()
    failure = cell.fails(MultiOp((Absent(ROOT),), (), (Create(at("e")), Create(at("e")))))
    assert failure.code is ErrorCode.EXISTS
    assert failure.message.startswith("if_false[1]: ")
    assert cell.names(ROOT) == ["d"]


def test_a_rolled_back_delete_of_a_directory_restores_it_and_its_children() -> None:
    """Deleting a tree bottom-up and failing afterwards puts every node back in its place."""
    cell = _cell()
    before = cell.machine.snapshot()
    failing = (Delete(at("d", "f")), Delete(at("d")), Create(at("d", "x")))
    assert cell.code(MultiOp((), failing)) is ErrorCode.NO_SUCH_NODE
    assert cell.machine.snapshot() == before
    assert cell.contents(at("d", "f")) == b"x"
    assert cell.ok(Create(at("d", "g"))) is not None


def test_re_creating_a_name_in_one_multiop_gives_a_new_instance() -> None:
    """Create, delete and re-create in one MultiOp yields two distinct instances."""
    cell = Cell()
    ops = (Create(at("f")), Delete(at("f")), Create(at("f")))
    result = cell.multi(MultiOp((), ops))
    first, _, second = result.results
    assert first.stat is not None
    assert second.stat is not None
    assert second.stat.instance == first.stat.instance + 1


def test_request_problems_in_either_branch_fail_the_multiop() -> None:
    """A malformed operation fails the MultiOp even in the branch that would not run."""
    cell = _cell()
    failure = cell.fails(MultiOp((), (Create(at("ok")),), (Create(at("bad name")),)))
    assert failure.code is ErrorCode.INVALID_NAME
    assert failure.message.startswith("if_false[0]: ")
    failure = cell.fails(MultiOp((Exists(ROOT), Exists("/ls/other")), ()))
    assert failure.message.startswith("guard[1]: ")
    big = b"x" * (DEFAULT_LIMITS.file_bytes_max + 1)
    assert cell.code(MultiOp((), (), (SetContents(at("d", "f"), big),))) is ErrorCode.TOO_LARGE
    assert cell.code(MultiOp((), (Delete(ROOT),))) is ErrorCode.INVALID_NAME


def test_the_operation_limit_counts_tests_and_both_branches() -> None:
    """multiop_operations_max tests plus operations are accepted; one more is TOO_LARGE."""
    cell = Cell(evolve(DEFAULT_LIMITS, multiop_operations_max=4))
    fits = MultiOp((Exists(ROOT), Exists(ROOT)), (Create(at("a")),), (Create(at("b")),))
    assert cell.multi(fits).guard_held
    too_many = evolve(fits, if_false=(Create(at("b")), Create(at("c"))))
    failure = cell.fails(too_many)
    assert failure.code is ErrorCode.TOO_LARGE
    assert "5 tests and operations; at most 4" in failure.message


def test_applied_lists_the_changed_names_in_order() -> None:
    """Applied.changed holds each name the branch wrote, once, in path order."""
    cell = _cell()
    applied = cell.machine.apply_write(
        LogIndex(10),
        MultiOp((), (Create(at("z")), SetContents(at("d", "f"), b"y"), Delete(at("z")))),
    )
    assert applied.changed == (at("d", "f"), at("z"))
    failed = cell.machine.apply_write(LogIndex(11), MultiOp((), (Delete(at("z")),)))
    assert failed.changed == ()
