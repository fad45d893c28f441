"""The checkers themselves, on hand-made histories: what they flag and what they let be."""

from __future__ import annotations

from chubbypy.protocol import ClientId
from chubbypy.testing import Observer
from chubbypy.testing._requests import OpKind, Reply, ReplyStatus, Request

SECOND = 1_000_000
WRITE = Request("c1", 1, OpKind.WRITE, ClientId(1), 1, "k0", 7)


def test_a_call_begun_after_the_heal_that_found_no_master_breaks_liveness() -> None:
    """An operation begun once the cell was whole that ended Unavailable is reported."""
    observer = Observer(fail_fast=False)
    observer.invoked("c1", WRITE, 5 * SECOND)
    observer.completed("c1", WRITE, Reply(1, ReplyStatus.UNAVAILABLE), 10 * SECOND)
    observer.check_liveness(healed_us=4 * SECOND, bound_us=10 * SECOND, end_us=20 * SECOND)
    assert [v.checker for v in observer.violations] == ["liveness"]


def test_a_call_begun_during_the_faults_may_find_no_master() -> None:
    """An operation begun before the heal may end Unavailable, if it ended in time."""
    observer = Observer(fail_fast=False)
    observer.invoked("c1", WRITE, 3 * SECOND)
    observer.completed("c1", WRITE, Reply(1, ReplyStatus.UNAVAILABLE), 8 * SECOND)
    observer.check_liveness(healed_us=4 * SECOND, bound_us=10 * SECOND, end_us=20 * SECOND)
    assert observer.violations == []


def test_an_operation_never_answered_breaks_liveness() -> None:
    """An operation still open past the bound after the heal is reported."""
    observer = Observer(fail_fast=False)
    observer.invoked("c1", WRITE, 3 * SECOND)
    observer.check_liveness(healed_us=4 * SECOND, bound_us=10 * SECOND, end_us=20 * SECOND)
    assert [v.checker for v in observer.violations] == ["liveness"]


def test_a_known_bug_is_kept_apart() -> None:
    """A violation of a checker named a known bug does not count against the run."""
    observer = Observer(fail_fast=True, known_bugs=frozenset({"at most once"}))
    observer.violation("at most once", "applied twice")
    assert observer.violations == []
    assert [v.checker for v in observer.known] == ["at most once"]
    observer.violation("agreement", "two values")
    assert observer.failed
