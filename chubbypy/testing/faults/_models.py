"""The sequential objects the fault suite's histories are checked against. Pure.

* `Register`: one file used as a register, read plainly or through the cache, written
  plainly or by compare-and-swap on its content generation. Its state is the file's
  contents and content generation (each write raises the generation by one, so a read
  that returns a generation says how many writes came before it).
* `FencedLock`: one file used as an exclusive lock, its contents written only under a
  sequencer (fenced writes) and read plainly. Its state is who holds the lock (the lock
  generation of the holding acquisition, or nobody), the lock generation, and the file's
  contents and content generation. A holder may lose the lock at any moment without an
  operation saying so (its session expired during a partition, or a handle was closed to
  withdraw a request that timed out): the model allows that before every acquisition.
  What it never allows is an operation that needs the lock held (a release answered ok, a
  fenced write applied) by a holder after another acquisition, nor an acquisition whose
  generation is not one above the last: so mutual exclusion and fencing are part of each
  lock's linearizability, besides the direct checks of `chubbypy.testing.faults._exclusion`.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from typing import Final

from attrs import evolve

from chubbypy.testing.faults._history import READ_KINDS, Kind, Op, Outcome

__all__ = ["UNREAD", "FencedLock", "Register"]

UNREAD: Final = "\x00a value no read returned"
"""What a pending write of a value nobody read writes, for the checker: every such write has
the same effect as any other of its kind, so they are interchangeable (see
`chubbypy.testing.faults._linearizability`)."""

RegisterState = tuple[str | None, int]
"""Contents (None: empty) and content generation."""

LockState = tuple[int | None, int, str | None, int]
"""Holder (the lock generation of the holding acquisition, or None), lock generation,
contents, content generation."""


def _read_values(ops: Sequence[Op]) -> set[str | None]:
    return {op.value for op in ops if op.kind in READ_KINDS and op.outcome is Outcome.OK}


def _unread(op: Op, read: set[str | None]) -> Op:
    """`op` with its value replaced by `UNREAD` if it is pending and nobody read it."""
    if op.pending and op.value not in read:
        return evolve(op, value=UNREAD)
    return op


class Register:
    """A file as a register with compare-and-swap; see the module docstring."""

    def __init__(self, initial: RegisterState) -> None:
        self._initial = initial

    def initial(self) -> RegisterState:
        return self._initial

    def prepare(self, ops: Sequence[Op]) -> list[Op]:
        read = _read_values(ops)
        kept = []
        for op in ops:
            if op.kind in READ_KINDS and op.outcome is not Outcome.OK:
                continue  # a read that failed, or was never answered, changed nothing
            if op.kind is Kind.WRITE and op.outcome is Outcome.FAIL:
                continue
            kept.append(_unread(op, read))
        return kept

    def observes(self, op: Op) -> bool:
        return op.kind in READ_KINDS or (op.kind is Kind.CAS and op.outcome is Outcome.FAIL)

    def settles(self, op: Op) -> bool:
        return op.kind in READ_KINDS

    def possible(self, state: RegisterState, op: Op) -> bool:
        _, generation = state
        match op.kind, op.outcome:
            case ((Kind.READ | Kind.CACHED_READ), Outcome.OK):
                return op.generation is None or op.generation >= generation
            case ((Kind.WRITE | Kind.CAS), Outcome.OK):
                return op.generation is None or op.generation > generation
        return True

    def interchangeable(self, op: Op) -> Hashable | None:
        if op.value == UNREAD and op.kind in (Kind.WRITE, Kind.CAS):
            return (op.kind, op.expected)
        return None

    def step(self, state: RegisterState, op: Op) -> Iterator[RegisterState]:
        _value, generation = state
        written = (op.value, generation + 1)
        match op.kind, op.outcome:
            case ((Kind.READ | Kind.CACHED_READ), Outcome.OK):
                if (op.value, op.generation) == state:
                    yield state
            case Kind.WRITE, Outcome.OK:
                if op.generation in (None, generation + 1):
                    yield written
            case Kind.WRITE, Outcome.UNKNOWN:
                yield written
            case Kind.CAS, Outcome.OK:
                if generation == op.expected and op.generation in (None, generation + 1):
                    yield written
            case Kind.CAS, Outcome.FAIL:
                if generation != op.expected:
                    yield state
            case Kind.CAS, Outcome.UNKNOWN:
                if generation == op.expected:
                    yield written
            case _:
                raise ValueError(f"a register has no {op.kind.value} ({op.describe()})")


class FencedLock:
    """A file as an exclusive lock with fenced writes; see the module docstring."""

    def __init__(self, initial: RegisterState, lock_generation: int = 0) -> None:
        self._initial: LockState = (None, lock_generation, *initial)

    def initial(self) -> LockState:
        return self._initial

    def prepare(self, ops: Sequence[Op]) -> list[Op]:
        read = _read_values(ops)
        kept = []
        for op in ops:
            if op.outcome is Outcome.FAIL and op.kind is not Kind.LOCK_READ:
                # Not granted, not released, not applied: each is what a lost lock allows,
                # and the model allows losing it at any moment, so they constrain nothing.
                continue
            if op.kind is Kind.LOCK_READ and op.outcome is not Outcome.OK:
                continue
            kept.append(_unread(op, read))
        return kept

    def observes(self, op: Op) -> bool:
        return op.kind is Kind.LOCK_READ

    def settles(self, op: Op) -> bool:
        # A read of the file pins its content generation; acquisitions and releases in
        # between change only who holds the lock, which the read does not look at.
        return op.kind is Kind.LOCK_READ

    def possible(self, state: LockState, op: Op) -> bool:
        holder, lock_generation, _, generation = state
        # The lock generation named is held now, or will be by a later acquisition.
        held = op.sequencer is None or op.sequencer == holder or op.sequencer > lock_generation
        written = op.generation is None or op.generation > generation
        match op.kind, op.outcome:
            case Kind.ACQUIRE, Outcome.OK:
                return op.sequencer is None or op.sequencer > lock_generation
            case Kind.RELEASE, Outcome.OK:
                return held
            case Kind.FENCED_WRITE, Outcome.OK:
                return held and written
            case Kind.LOCK_READ, Outcome.OK:
                return op.generation is None or op.generation >= generation
        return True

    def interchangeable(self, op: Op) -> Hashable | None:
        match op.kind:
            case Kind.ACQUIRE:
                return (op.kind,)  # whoever asked, the grant makes the next generation
            case Kind.RELEASE:
                return (op.kind, op.sequencer)
            case Kind.FENCED_WRITE if op.value == UNREAD:
                return (op.kind, op.sequencer)
        return None

    def step(self, state: LockState, op: Op) -> Iterator[LockState]:
        holder, lock_generation, value, generation = state
        match op.kind, op.outcome:
            case Kind.ACQUIRE, Outcome.OK:
                # Granted from a free lock, or from one whose holder lost it unseen.
                if op.sequencer == lock_generation + 1:
                    yield (op.sequencer, op.sequencer, value, generation)
            case Kind.ACQUIRE, Outcome.UNKNOWN:
                granted = lock_generation + 1
                yield (granted, granted, value, generation)
            case Kind.RELEASE, Outcome.OK:
                if holder == op.sequencer:
                    yield (None, lock_generation, value, generation)
            case Kind.RELEASE, Outcome.UNKNOWN:
                if holder == op.sequencer:
                    yield (None, lock_generation, value, generation)
            case Kind.FENCED_WRITE, Outcome.OK:
                if holder == op.sequencer and op.generation in (None, generation + 1):
                    yield (holder, lock_generation, op.value, generation + 1)
            case Kind.FENCED_WRITE, Outcome.UNKNOWN:
                if holder == op.sequencer:
                    yield (holder, lock_generation, op.value, generation + 1)
            case Kind.LOCK_READ, Outcome.OK:
                if (op.value, op.generation) == (value, generation):
                    yield state
            case _:
                raise ValueError(f"a fenced lock has no {op.kind.value} ({op.describe()})")
