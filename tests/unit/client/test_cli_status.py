"""``chubbypy status``'s verdicts: which reports make which problems (`chubbypy._cli_status`)."""

from __future__ import annotations

from attrs import evolve

from chubbypy._cli_status import StatusProblem, status_problems, summary
from chubbypy.client import ReplicaReport
from chubbypy.protocol.client import ReplicaStatus
from chubbypy.protocol.values import Epoch, LogIndex, ReplicaId


def status(
    rid: str, *, role: str = "follower", applied: int = 100, mismatches: int = 0
) -> ReplicaStatus:
    return ReplicaStatus(
        replica_id=ReplicaId(rid),
        role=role,  # type: ignore[arg-type]
        epoch=Epoch(2),
        promised="2.r1",
        chosen_index=LogIndex(applied),
        applied_index=LogIndex(applied),
        first_index=LogIndex(1),
        last_index=LogIndex(applied),
        snapshot_index=LogIndex(0),
        serving=role == "master",
        lease_valid=True,
        lease_remaining_ms=500,
        master_hint=ReplicaId("r1"),
        uptime_ms=1000,
        checksum_mismatches=mismatches,
    )


def report(rid: str, found: ReplicaStatus | None, problem: str | None = None) -> ReplicaReport:
    port = 7200 + int(rid[1:])
    return ReplicaReport(f"tcp:host=127.0.0.1:port={port}", ReplicaId(rid), found, problem)


HEALTHY = (
    report("r1", status("r1", role="master", applied=1000)),
    report("r2", status("r2", applied=990)),
    report("r3", status("r3", applied=1000)),
)


def test_a_healthy_cell_has_no_problem() -> None:
    """All answered, one master, lags within the bound, no mismatch: no problem."""
    assert status_problems(HEALTHY, lag_max=10, whole_cell=True) == ()


def test_an_unreachable_replica_is_a_problem_naming_why() -> None:
    """A replica that did not answer is reported with the failure its client saw."""
    reports = (*HEALTHY[:2], report("r3", None, "cannot connect: refused"))
    assert status_problems(reports, lag_max=10, whole_cell=True) == (
        StatusProblem(
            "unreachable", "r3", "127.0.0.1:7203", "unreachable: cannot connect: refused"
        ),
    )


def test_lag_is_counted_from_the_most_advanced_replica_and_bounded_by_lag_max() -> None:
    """A replica more than lag_max entries behind the highest applied index is lagging;
    exactly lag_max behind is not."""
    reports = (*HEALTHY[:2], report("r3", status("r3", applied=989)))
    (problem,) = status_problems(reports, lag_max=10, whole_cell=True)
    assert (problem.kind, problem.replica_id, problem.lag) == ("lagging", "r3", 11)
    assert problem.message == "lagging: 11 entries behind r1 (applied 989 of 1000; --lag-max 10)"
    assert status_problems(reports, lag_max=11, whole_cell=True) == ()


def test_a_checksum_mismatch_is_divergence() -> None:
    """A replica that counted a state checksum differing from a peer's has diverged."""
    reports = (HEALTHY[0], report("r2", status("r2", applied=1000, mismatches=2)), HEALTHY[2])
    (problem,) = status_problems(reports, lag_max=10, whole_cell=True)
    assert (problem.kind, problem.replica_id) == ("diverged", "r2")
    assert problem.message.startswith("diverged: 2 of its state checksums differed")


def test_no_master_among_those_that_answered_is_a_problem_of_the_cell() -> None:
    """Answers with no master in them: one problem of the whole cell, with no replica."""
    reports = tuple(evolve(r, status=evolve(r.status, role="follower")) for r in HEALTHY)
    assert status_problems(reports, lag_max=10, whole_cell=True) == (
        StatusProblem(
            "no_master",
            None,
            None,
            "no master: no replica says it is master (an election, or no quorum)",
        ),
    )


def test_one_replica_asked_judges_neither_lag_nor_the_master() -> None:
    """status REPLICA: only that replica's own problems (unreachable, diverged)."""
    lone = (report("r2", status("r2", applied=5, mismatches=1)),)
    assert [p.kind for p in status_problems(lone, lag_max=0, whole_cell=False)] == ["diverged"]
    assert status_problems(lone[:0], lag_max=0, whole_cell=True) == ()


def test_nobody_answering_gives_only_the_unreachable() -> None:
    """No answer at all: each replica unreachable, and no lag or master verdict on nothing."""
    reports = (report("r1", None, "refused"), report("r2", None, None))
    found = status_problems(reports, lag_max=10, whole_cell=True)
    assert [(p.kind, p.message) for p in found] == [
        ("unreachable", "unreachable: refused"),
        ("unreachable", "unreachable: no answer"),
    ]


def test_the_summary_names_each_problem_in_order() -> None:
    """The standard error line counts the problems and says whose each is."""
    reports = (
        report("r1", status("r1", applied=1000)),
        report("r2", None, "refused"),
        report("r3", status("r3", applied=1, mismatches=1)),
    )
    found = status_problems(reports, lag_max=10, whole_cell=True)
    assert summary(found) == (
        "the cell is not healthy, 4 problems: r2 unreachable, r3 diverged, r3 lagging, no master"
    )
