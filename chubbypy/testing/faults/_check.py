"""Judging a fault run's history: every checker over every register and lock. Pure.

Each register's operations are checked for linearizability against `Register`; each lock's
against `FencedLock`, and for mutual exclusion and fencing directly (`_exclusion`). The
report counts what was checked, says how long each search took, and explains each failure
with the operations involved.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from attrs import frozen

from chubbypy.testing.faults._exclusion import Finding, check_exclusion, check_fencing
from chubbypy.testing.faults._history import LOCK_PREFIX, History
from chubbypy.testing.faults._linearizability import (
    STEPS_MAX_DEFAULT,
    Model,
    Verdict,
    check_operations,
)
from chubbypy.testing.faults._models import FencedLock, Register

__all__ = ["Report", "check_history"]


@frozen
class Report:
    """Every checker's verdict on one history."""

    verdicts: tuple[Verdict[Any], ...]
    findings: tuple[Finding, ...]
    operations: int
    outcomes: dict[str, int]
    """Operations by outcome (ok, fail, unknown)."""
    kinds: dict[str, int]
    """Operations by kind (read, cas, acquire, ...)."""
    processes: int
    """Client processes of the history (threads with a session each)."""
    seconds: float

    @property
    def linearizable(self) -> bool:
        return all(verdict.linearizable is True for verdict in self.verdicts)

    @property
    def exclusive(self) -> bool:
        return not any(f.checker == "mutual exclusion" for f in self.findings)

    @property
    def fenced(self) -> bool:
        return not any(f.checker == "fencing" for f in self.findings)

    @property
    def passed(self) -> bool:
        return self.linearizable and self.exclusive and self.fenced

    def summary(self) -> list[str]:
        """A few lines: what was checked and what each checker concluded."""
        registers = [v for v in self.verdicts if not v.key.startswith(LOCK_PREFIX)]
        locks = [v for v in self.verdicts if v.key.startswith(LOCK_PREFIX)]
        slowest = max(self.verdicts, key=lambda v: v.seconds, default=None)
        kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(self.kinds.items()))
        outcomes = ", ".join(f"{count} {o}" for o, count in sorted(self.outcomes.items()))
        lines = [
            f"history: {self.operations} operations of {self.processes} client processes "
            f"({outcomes}); {kinds}",
            f"linearizable: {_verdicts(registers)} of {len(registers)} registers, "
            f"{_verdicts(locks)} of {len(locks)} locks",
            f"mutual exclusion: {'yes' if self.exclusive else 'VIOLATED'}; "
            f"fencing: {'yes' if self.fenced else 'VIOLATED'}",
            f"checked in {self.seconds:.2f} s"
            + (
                f" (largest search: {slowest.key}, {slowest.operations} operations, "
                f"{slowest.pending} pending, {slowest.steps} steps, {slowest.seconds:.2f} s)"
                if slowest
                else ""
            ),
        ]
        return lines

    def explain(self) -> str:
        """Every failure, with its operations."""
        parts = [v.explain() for v in self.verdicts if v.linearizable is False]
        parts += [
            f"{v.key}: undecided after {v.steps} search steps ({v.operations} operations, "
            f"{v.pending} pending)"
            for v in self.verdicts
            if v.linearizable is None
        ]
        parts += [finding.explain() for finding in self.findings]
        return "\n".join(parts)


def _verdicts(verdicts: list[Verdict[Any]]) -> str:
    good = sum(v.linearizable is True for v in verdicts)
    bad = sum(v.linearizable is False for v in verdicts)
    undecided = sum(v.linearizable is None for v in verdicts)
    text = f"{good}"
    if bad:
        text += f" (NOT linearizable: {bad})"
    if undecided:
        text += f" (undecided: {undecided})"
    return text


def check_history(
    history: History,
    steps_max: int = STEPS_MAX_DEFAULT,
    clock: Callable[[], float] = time.perf_counter,
) -> Report:
    """Run every checker over `history`; see the module docstring."""
    started = clock()
    verdicts: list[Verdict[Any]] = []
    findings: list[Finding] = []
    for key in history.objects():
        ops = history.of(key)
        initial = history.initial.get(key, (None, 1))
        model: Model[Any]
        if key.startswith(LOCK_PREFIX):
            model = FencedLock(initial)
            findings += check_exclusion(key, ops) + check_fencing(key, ops)
        else:
            model = Register(initial)
        verdicts.append(check_operations(key, model, ops, steps_max, clock))
    return Report(
        verdicts=tuple(verdicts),
        findings=tuple(findings),
        operations=len(history.ops),
        outcomes=dict(Counter(op.outcome.value for op in history.ops)),
        kinds=dict(Counter(op.kind.value for op in history.ops)),
        processes=len({op.process for op in history.ops}),
        seconds=clock() - started,
    )
