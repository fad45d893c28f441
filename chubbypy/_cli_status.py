"""What ``chubbypy status`` concludes from the replicas' reports: the cell's problems.

Shell (STYLE §1), beside `chubbypy.cli`, but pure: a function from the reports `Cell.status`
gathered (each replica's own `ReplicaStatus`, or why it could not be asked) to the problems
an operator must hear of, each a value with its kind, its replica and a one-line message.
The command exits 1 when there is one, 3 when no replica answered at all.

A replica is

- **unreachable**: it did not answer (not running, not listening, another cell's);
- **lagging**: its applied index trails the highest one any replica reported by more than
  ``--lag-max`` entries (a follower that keeps up trails by the instances in flight, at
  most ``paxos.proposals_inflight_max``, 32 by default, while the requests cross);
- **diverged**: its state checksum differed from a peer's at the same index (its
  ``checksum_mismatches``): the replicas' states are not the same, which no replica repairs
  by itself (its admin port's ``/status`` says at which index and with whom).

And the whole cell has **no master** when no replica that answered says it is master (an
election under way, or no quorum). Lag and the master are judged only when every replica
was asked (``status`` without a REPLICA).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Literal

from attrs import frozen

from chubbypy.client._addresses import display_address
from chubbypy.client._cell import ReplicaReport

__all__ = ["LAG_MAX_DEFAULT", "StatusProblem", "problem_json", "status_problems", "summary"]

LAG_MAX_DEFAULT: Final = 1000
"""Entries a replica may trail the most advanced one before ``status`` calls it lagging."""

ProblemKind = Literal["unreachable", "lagging", "diverged", "removed", "no_master"]


@frozen
class StatusProblem:
    """One thing wrong with the cell, as ``status`` reports it."""

    kind: ProblemKind
    replica_id: str | None
    """None for a problem of the whole cell, or a replica that never said its id."""
    address: str | None
    """Where the replica was asked (``host:port``); None for the whole cell."""
    message: str
    """One line, without the replica's name."""
    lag: int | None = None
    """Entries behind the most advanced replica (lagging only)."""

    @property
    def who(self) -> str:
        """The replica's id, else its address, else "the cell"."""
        return self.replica_id or self.address or "the cell"


def status_problems(
    reports: Sequence[ReplicaReport], lag_max: int, whole_cell: bool
) -> tuple[StatusProblem, ...]:
    """Every problem `reports` show, replica by replica in their order, then the cell's;
    `whole_cell`: every replica was asked, so lag and the master can be judged."""
    assert lag_max >= 0
    answered = [r.status for r in reports if r.status is not None]
    top = max((s.applied_index for s in answered), default=0)
    ahead = next((s.replica_id for s in answered if s.applied_index == top), None)
    problems = []
    for report in reports:
        where = display_address(report.address)
        status = report.status
        if status is None:
            message = f"unreachable: {report.problem or 'no answer'}"
            problems.append(StatusProblem("unreachable", report.replica_id, where, message))
            continue
        if status.checksum_mismatches:
            message = (
                f"diverged: {status.checksum_mismatches} of its state checksums differed from "
                "a peer's at the same index (its admin port's /status says where)"
            )
            problems.append(StatusProblem("diverged", status.replica_id, where, message))
        if status.member_role == "removed":
            message = (
                "removed: an operator removed it from the cell, and it still runs (stop it, "
                "and take it out of the cell file)"
            )
            problems.append(StatusProblem("removed", status.replica_id, where, message))
            continue
        lag = top - status.applied_index
        if whole_cell and lag > lag_max:
            message = (
                f"lagging: {lag} entries behind {ahead} (applied {status.applied_index} "
                f"of {top}; --lag-max {lag_max})"
            )
            problems.append(StatusProblem("lagging", status.replica_id, where, message, lag))
    if whole_cell and answered and not any(s.role == "master" for s in answered):
        message = "no master: no replica says it is master (an election, or no quorum)"
        problems.append(StatusProblem("no_master", None, None, message))
    return tuple(problems)


def summary(problems: Sequence[StatusProblem]) -> str:
    """The line for standard error: how many problems, and whose."""
    assert problems
    parts = [f"{p.who} {p.kind.replace('_', ' ')}" for p in problems if p.kind != "no_master"]
    parts += ["no master" for p in problems if p.kind == "no_master"]
    count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
    return f"the cell is not healthy, {count}: {', '.join(parts)}"


def problem_json(problem: StatusProblem) -> dict[str, Any]:
    """One entry of ``status``'s "problems" list (the documented PROBLEM object)."""
    return {
        "kind": problem.kind,
        "replica_id": problem.replica_id,
        "address": problem.address,
        "message": problem.message,
        "lag": problem.lag,
    }
