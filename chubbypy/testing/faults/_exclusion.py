"""Mutual exclusion and fencing over one lock's history: direct checks, no search. Pure.

These say in one line what went wrong where the lock's linearizability check
(`chubbypy.testing.faults._models.FencedLock`) would only say that no order fits.

* **Mutual exclusion**: no two acquisitions are granted the same lock generation; the
  generations granted rise in real time (an acquisition granted before another was asked
  for has the lower one); and no holder's sequencer is still valid after a later holder's
  acquisition completed: an operation that needs it valid (a release answered ok, a fenced
  write applied) sent after a higher generation's grant was answered is a violation, since
  at the instant that operation took effect both sequencers were valid.
* **Fencing**: the fenced writes the cell applied, in the order of the content generations
  they made (the file's own total order of its writes), carry non-decreasing lock
  generations: once a holder's write is applied, no earlier holder's ever is.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from attrs import frozen

from chubbypy.testing.faults._history import Kind, Op, Outcome

__all__ = ["Finding", "check_exclusion", "check_fencing"]


@frozen
class Finding:
    """One violation of mutual exclusion or fencing."""

    checker: str
    key: str
    message: str
    ops: tuple[Op, ...]

    def explain(self) -> str:
        return "\n".join(
            [
                f"{self.checker} on {self.key}: {self.message}",
                *(f"    {op.describe()}" for op in self.ops),
            ]
        )


def _grants(ops: Sequence[Op]) -> list[Op]:
    """The acquisitions answered with a sequencer, by lock generation."""
    granted = [op for op in ops if op.kind is Kind.ACQUIRE and op.outcome is Outcome.OK]
    return sorted(granted, key=lambda op: (op.sequencer or 0, op.invoke_ns))


def _earliest_later_grant(grants: list[Op]) -> list[Op | None]:
    """For each grant (`grants` by generation): the grant of a higher generation answered
    first, if any."""
    earliest: list[Op | None] = [None] * len(grants)
    best: Op | None = None
    position = len(grants) - 1
    while position >= 0:
        generation = grants[position].sequencer
        group = position
        while group >= 0 and grants[group].sequencer == generation:
            earliest[group] = best
            group -= 1
        for op in grants[group + 1 : position + 1]:
            if best is None or _done(op) < _done(best):
                best = op
        position = group
    return earliest


def _done(op: Op) -> int:
    assert op.complete_ns is not None, op
    return op.complete_ns


def check_exclusion(key: str, ops: Sequence[Op]) -> list[Finding]:
    """Mutual exclusion on one lock; see the module docstring."""
    findings = []
    grants = _grants(ops)
    for first, second in itertools.pairwise(grants):
        if first.sequencer == second.sequencer:
            findings.append(
                Finding(
                    "mutual exclusion", key, "two acquisitions got one generation", (first, second)
                )
            )
    later = _earliest_later_grant(grants)
    position_of = {op.sequencer: position for position, op in enumerate(grants)}
    for position, grant in enumerate(grants):
        other = later[position]
        if other is not None and _done(other) < grant.invoke_ns:
            findings.append(
                Finding(
                    "mutual exclusion",
                    key,
                    f"generation {other.sequencer} was granted before generation "
                    f"{grant.sequencer} was asked for",
                    (other, grant),
                )
            )
    for op in ops:
        needs_lock = op.kind in (Kind.RELEASE, Kind.FENCED_WRITE)
        if not needs_lock or op.outcome is not Outcome.OK or op.sequencer not in position_of:
            continue
        other = later[position_of[op.sequencer]]
        if other is not None and _done(other) < op.invoke_ns:
            findings.append(
                Finding(
                    "mutual exclusion",
                    key,
                    f"the holder of generation {op.sequencer} still held the lock after "
                    f"generation {other.sequencer} was granted",
                    (other, op),
                )
            )
    return findings


def check_fencing(key: str, ops: Sequence[Op]) -> list[Finding]:
    """Fencing on one lock; see the module docstring."""
    findings = []
    applied = sorted(
        (op for op in ops if op.kind is Kind.FENCED_WRITE and op.outcome is Outcome.OK),
        key=lambda op: (op.generation or 0, op.invoke_ns),
    )
    for before, after in itertools.pairwise(applied):
        if before.generation == after.generation:
            findings.append(
                Finding(
                    "fencing", key, "two fenced writes made one content generation", (before, after)
                )
            )
        elif (after.sequencer or 0) < (before.sequencer or 0):
            findings.append(
                Finding(
                    "fencing",
                    key,
                    f"a write fenced by generation {after.sequencer} was applied after one "
                    f"fenced by generation {before.sequencer}",
                    (before, after),
                )
            )
    return findings
