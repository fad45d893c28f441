"""The checkers themselves, on hand-made histories: what they flag and what they let be."""

from __future__ import annotations

from chubbypy.paxos import Outcome, OutcomeKind
from chubbypy.protocol import (
    MASTER_CLIENT,
    Ballot,
    ClientId,
    Command,
    Entry,
    Epoch,
    HandleId,
    LogIndex,
    ReplicaId,
    SessionId,
    Value,
    ValueKind,
)
from chubbypy.protocol.namespace import (
    AclNames,
    Acquire,
    EndSession,
    LockMode,
    LogWrite,
    Release,
    Stat,
    WriteResult,
    Written,
)
from chubbypy.protocol.namespace_codec import encode_log_write, encode_result
from chubbypy.protocol.session import LockHolderInfo, LockInfo
from chubbypy.testing import Observer
from chubbypy.testing._lock_checks import LockObserver
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


# ----------------------------------------------------------------------------- lock info

LOCK = "/ls/sim/lock0"


class LockLog:
    """A LockObserver fed master commands as replicas apply them, at a true time."""

    def __init__(self) -> None:
        self.now = 0
        self.violations: list[tuple[str, str]] = []
        self.observer = LockObserver(lambda c, m: self.violations.append((c, m)), lambda: self.now)
        self.index = 0
        self.replicas = ["r1"]
        """The replicas that apply each entry (at the same instant)."""

    def applied(self, at: int, write: LogWrite, result: WriteResult) -> None:
        self.now, self.index = at, self.index + 1
        index = LogIndex(self.index)
        command = Command(MASTER_CLIENT, self.index, encode_log_write(write))
        value = Value(Epoch(1), ValueKind.COMMANDS, (command,))
        outcome = Outcome(index, OutcomeKind.APPLIED, MASTER_CLIENT, self.index,
                          encode_result(result))  # fmt: skip
        entry = Entry(index, Ballot(1, ReplicaId("r1")), value)
        for replica in self.replicas:
            self.observer.entry_applied(replica, entry, (outcome,))

    def grant(self, at: int, session: int, generation: int) -> None:
        acquire = Acquire(SessionId(session), HandleId(1), LOCK, 1, LockMode.EXCLUSIVE)
        stat = Stat(1, 1, generation, 1, 0, AclNames("all", "all", "all"), False, False, 0)
        self.applied(at, acquire, Written(stat))

    def answer(self, asked: int, at: int, generation: int, *holders: int) -> list[str]:
        """The checkers that judged an answer given at `at` to a question asked at `asked`."""
        self.now = at
        held = tuple(LockHolderInfo(SessionId(s), "c", "", "exclusive", 0) for s in holders)
        mode = "exclusive" if holders else "free"
        info = LockInfo(LOCK, 1, mode, generation, held, len(held), (), 0, 0)
        before = len(self.violations)
        self.observer.lock_info_answered("c1", info, asked)
        return [checker for checker, _ in self.violations[before:]]


def test_lock_info_must_be_a_replicas_state_at_an_instant_between_asking_and_answer() -> None:
    """An answer naming the holder and generation a replica had applied at some instant
    between the question and the answer passes; a holder the log never had, a generation
    from before the question, or one from after the answer, is a violation; a replica
    that applies later makes its older state a valid answer for longer."""
    log = LockLog()
    assert log.answer(0, 5, 0) == []  # never locked
    log.grant(10, session=7, generation=1)
    log.applied(20, Release(SessionId(7), HandleId(1), LOCK, 1, 1), Written(None))
    log.grant(30, session=8, generation=2)
    assert log.answer(15, 25, 1, 7) == []  # held by 7 at 15
    assert log.answer(15, 25, 1) == []  # free at 20, in between
    assert log.answer(25, 35, 2, 8) == []
    assert log.answer(25, 35, 1) == []  # still free at 25
    assert log.answer(35, 40, 1, 7) == ["lock info"]  # from before the question
    assert log.answer(12, 18, 2, 8) == ["lock info"]  # from after the answer
    assert log.answer(35, 40, 2, 9) == ["lock info"]  # a holder the log never had
    log.applied(50, EndSession(SessionId(8), expired=True), Written(None))
    assert log.answer(55, 60, 2) == []
    assert log.answer(55, 60, 2, 8) == ["lock info"]  # its session ended before the question


def test_a_replica_that_applies_later_may_answer_its_older_state_meanwhile() -> None:
    """While one replica has not applied a grant yet, the state before it is a valid
    answer (that replica may be the master); once every replica applied it, it is not."""
    log = LockLog()
    log.replicas = ["r1", "r2"]
    log.grant(10, session=7, generation=1)
    log.replicas = ["r1"]
    log.grant(20, session=8, generation=2)  # r1 only (with session 7's end, below)
    log.applied(20, EndSession(SessionId(7), expired=False), Written(None))
    assert log.answer(25, 30, 1, 7) == []  # r2 is still at the first grant
    assert log.answer(25, 30, 2, 7, 8) == ["lock info"]  # no replica ever had that
    log.replicas = ["r2"]
    log.applied(40, EndSession(SessionId(7), expired=False), Written(None))
    assert log.answer(45, 50, 1, 7) == ["lock info"]
