"""chubbypy status flags a replica that was removed from the cell and still runs."""

from __future__ import annotations

from attrs import evolve

from chubbypy._cli_status import status_problems
from tests.unit.client.test_cli_status import report, status


def test_a_removed_replica_still_running_is_a_problem() -> None:
    """A replica whose member_role is 'removed' is reported once, saying what to do, and
    is not also judged lagging (it no longer receives the log)."""
    removed = evolve(status("r1", applied=3), member_role="removed")
    master = status("r2", role="master", applied=900)
    reports = [report("r1", removed), report("r2", master), report("r3", status("r3", applied=900))]
    problems = status_problems(reports, lag_max=10, whole_cell=True)
    assert [(p.kind, p.replica_id) for p in problems] == [("removed", "r1")]
    assert "stop it" in problems[0].message
