"""When `chubbypy cell` starts a child again, and how it says what happened. Pure.

Shell (STYLE §1), beside `chubbypy._cli_cell`, which keeps one count per child (its quick
exits in a row) and asks `after_exit` what to do each time the child exits while the cell
runs. The rule, with the ``supervisor:`` keys of the cell file:

- a child that ran at least ``quick_exit_seconds`` exited after a useful life (a crash
  days in, a kill -9): it is started again after ``restart_delay_seconds``, and its count
  of quick exits starts afresh;
- a child that exited sooner exited *quickly*: the n-th quick exit in a row waits
  ``restart_delay_seconds * 2**(n-1)``, at most ``restart_delay_max_seconds`` (a replica
  whose disk is full, or whose port another process took, is not restarted in a tight loop);
- at the ``quick_exits_max``-th quick exit in a row the child is given up: it will not get
  better by itself, and the operator has been told why each time.
"""

from __future__ import annotations

import signal

from attrs import frozen

from chubbypy.config import SupervisorConfig

__all__ = ["GiveUp", "Restart", "after_exit", "describe_exit", "quorum_left"]

DOUBLINGS_MAX = 62
"""Beyond this many doublings every delay is the maximum (and 2**n stays a small int)."""


@frozen
class Restart:
    """Start the child again in `delay_seconds`; it then has `quick_exits` in a row."""

    delay_seconds: float
    quick_exits: int


@frozen
class GiveUp:
    """Do not start the child again: it exited quickly `quick_exits` times in a row."""

    quick_exits: int


def after_exit(policy: SupervisorConfig, quick_exits: int, ran_seconds: float) -> Restart | GiveUp:
    """What to do about a child that exited after running `ran_seconds`, having exited
    quickly `quick_exits` times in a row before."""
    assert quick_exits >= 0
    if ran_seconds >= policy.quick_exit_seconds:
        return Restart(policy.restart_delay_seconds, 0)
    count = quick_exits + 1
    if count >= policy.quick_exits_max:
        return GiveUp(count)
    growth = 2 ** min(count - 1, DOUBLINGS_MAX)
    delay = min(policy.restart_delay_seconds * growth, policy.restart_delay_max_seconds)
    return Restart(delay, count)


def describe_exit(exit_code: int | None, signal_number: int | None) -> str:
    """How a process ended, for a person: "was killed by signal 9 (SIGKILL)", "exited with
    status 1"."""
    if signal_number is not None:
        try:
            name = f" ({signal.Signals(signal_number).name})"
        except ValueError:
            name = ""
        return f"was killed by signal {signal_number}{name}"
    return f"exited with status {exit_code if exit_code is not None else 'unknown'}"


def quorum_left(running: int, members: int) -> str:
    """What `running` replicas of `members` mean for the cell, as a clause."""
    assert 0 <= running <= members
    majority = members // 2 + 1
    if running < majority:
        return (
            f"{running} of {members} replicas run: no majority ({majority}), so the cell "
            "cannot choose a master or serve until enough are back"
        )
    spare = running - majority
    if spare == 0:
        return (
            f"{running} of {members} replicas run: the cell serves, but one more failure stops it"
        )
    return (
        f"{running} of {members} replicas run: the cell serves and survives {spare} more failure"
        + ("s" if spare > 1 else "")
    )
