"""The fault suite's lock checkers: linearizability of a fenced lock, mutual exclusion, fencing."""

from __future__ import annotations

import pytest
from attrs import evolve

from chubbypy.testing.faults._exclusion import check_exclusion, check_fencing
from chubbypy.testing.faults._history import Kind, Op, Outcome
from chubbypy.testing.faults._linearizability import check_operations
from chubbypy.testing.faults._models import FencedLock

MS = 1_000_000
KEY = "lock/a"


def op(
    process: str,
    kind: Kind,
    invoke: float,
    complete: float | None,
    outcome: Outcome = Outcome.OK,
    **fields: object,
) -> Op:
    """An op on lock ``lock/a``, its times in milliseconds."""
    return Op(
        id=0,
        process=process,
        key=KEY,
        kind=kind,
        invoke_ns=int(invoke * MS),
        complete_ns=None if complete is None else int(complete * MS),
        outcome=outcome,
        **fields,  # type: ignore[arg-type]
    )


def acquire(process: str, invoke: float, complete: float, generation: int) -> Op:
    return op(process, Kind.ACQUIRE, invoke, complete, sequencer=generation)


def release(process: str, invoke: float, complete: float, generation: int) -> Op:
    return op(process, Kind.RELEASE, invoke, complete, sequencer=generation)


def fenced(
    process: str,
    invoke: float,
    complete: float | None,
    generation: int,
    value: str,
    content_generation: int | None,
    outcome: Outcome = Outcome.OK,
) -> Op:
    return op(
        process,
        Kind.FENCED_WRITE,
        invoke,
        complete,
        outcome,
        sequencer=generation,
        value=value,
        generation=content_generation,
    )


def linearizable(ops: list[Op]) -> bool | None:
    numbered = [evolve(o, id=i) for i, o in enumerate(ops, 1)]
    return check_operations(KEY, FencedLock(("init", 1)), numbered).linearizable


def turns() -> list[Op]:
    """Two holders one after the other, each writing under its sequencer and reading."""
    return [
        acquire("a", 0, 1, 1),
        fenced("a", 2, 3, 1, "a1", 2),
        op("a", Kind.LOCK_READ, 4, 5, value="a1", generation=2),
        release("a", 6, 7, 1),
        acquire("b", 1, 8, 2),  # waited while a held it
        fenced("b", 9, 10, 2, "b1", 3),
        release("b", 11, 12, 2),
    ]


def test_holders_in_turn_pass_every_checker() -> None:
    """Holders that take turns, each writing under its own sequencer: all checks pass."""
    ops = turns()
    assert linearizable(ops) is True
    assert check_exclusion(KEY, ops) == []
    assert check_fencing(KEY, ops) == []


def test_a_holder_writing_after_the_next_grant_violates_exclusion() -> None:
    """A's fenced write applied after B's acquisition completed: both sequencers valid."""
    ops = [
        acquire("a", 0, 1, 1),
        acquire("b", 2, 3, 2),
        fenced("a", 4, 5, 1, "a1", 2),
    ]
    assert linearizable(ops) is False
    (finding,) = check_exclusion(KEY, ops)
    assert "still held the lock after generation 2 was granted" in finding.message
    assert check_fencing(KEY, ops) == []


def test_a_release_answered_after_the_next_grant_violates_exclusion() -> None:
    """A's release answered ok although B acquired the lock before A asked."""
    ops = [acquire("a", 0, 1, 1), acquire("b", 2, 3, 2), release("a", 4, 5, 1)]
    assert linearizable(ops) is False
    assert len(check_exclusion(KEY, ops)) == 1


def test_a_lost_lock_refuses_the_old_holders_write() -> None:
    """A's session lost the lock unseen, B acquired it, and A's write was refused: fine."""
    ops = [
        acquire("a", 0, 1, 1),
        acquire("b", 2, 3, 2),
        fenced("a", 4, 5, 1, "a1", None, Outcome.FAIL),
        fenced("b", 6, 7, 2, "b1", 2),
    ]
    assert linearizable(ops) is True
    assert check_exclusion(KEY, ops) == []
    assert check_fencing(KEY, ops) == []


def test_an_old_sequencers_write_applied_after_a_newer_ones_violates_fencing() -> None:
    """In the file's own order of writes, generation 1 after generation 2 is a violation."""
    ops = [
        acquire("a", 0, 1, 1),
        fenced("a", 2, 20, 1, "a1", 3),
        acquire("b", 1.5, 3, 2),
        fenced("b", 4, 5, 2, "b1", 2),
    ]
    (finding,) = check_fencing(KEY, ops)
    assert "fenced by generation 1 was applied after one fenced by generation 2" in finding.message
    assert linearizable(ops) is False


def test_two_grants_of_one_generation_violate_exclusion() -> None:
    """Two acquisitions answered with the same lock generation."""
    ops = [acquire("a", 0, 1, 1), acquire("b", 0.5, 2, 1)]
    findings = check_exclusion(KEY, ops)
    assert [f.message for f in findings] == ["two acquisitions got one generation"]
    assert linearizable(ops) is False


def test_generations_rise_in_real_time() -> None:
    """A grant answered before another was asked for has the lower generation."""
    ops = [acquire("a", 0, 1, 2), acquire("b", 2, 3, 1)]
    findings = check_exclusion(KEY, ops)
    assert any("was granted before generation 1 was asked for" in f.message for f in findings)


def test_a_skipped_generation_needs_a_pending_acquisition() -> None:
    """Generation 2 after 0 needs an acquisition that took generation 1 unseen: a pending
    one explains it, nothing else does."""
    skipped = [acquire("a", 0, 1, 2)]
    assert linearizable(skipped) is False
    pending = op("c", Kind.ACQUIRE, -5, None, Outcome.UNKNOWN, error="timed out")
    assert linearizable([pending, *skipped]) is True


def test_a_stale_read_of_the_fenced_file_is_not_linearizable() -> None:
    """A plain read begun after a fenced write completed must see it."""
    ops = [
        acquire("a", 0, 1, 1),
        fenced("a", 2, 3, 1, "a1", 2),
        op("b", Kind.LOCK_READ, 4, 5, value="init", generation=1),
    ]
    assert linearizable(ops) is False


@pytest.mark.parametrize("seen", [True, False])
def test_a_pending_fenced_write_may_or_may_not_have_been_applied(seen: bool) -> None:
    """A fenced write whose answer was lost: a later read may see it or not."""
    read = op(
        "b", Kind.LOCK_READ, 10, 11, value="a1" if seen else "init", generation=2 if seen else 1
    )
    ops = [acquire("a", 0, 1, 1), fenced("a", 2, None, 1, "a1", None, Outcome.UNKNOWN), read]
    assert linearizable(ops) is True


def test_a_pending_release_lets_the_next_holder_in() -> None:
    """A release whose answer was lost, then another client's grant: fine either way."""
    ops = [
        acquire("a", 0, 1, 1),
        op("a", Kind.RELEASE, 2, None, Outcome.UNKNOWN, sequencer=1),
        acquire("b", 3, 4, 2),
        fenced("b", 5, 6, 2, "b1", 2),
    ]
    assert linearizable(ops) is True
