"""A linearizability checker: Wing & Gong's search, with Lowe's memoisation (as Porcupine).

Pure: a history and a model in, a verdict out. A history is linearizable when every
operation can be given one instant between its invocation and its completion such that,
taken in the order of those instants, the operations are a run of the sequential model
that gives each completed operation the result it returned. An operation of unknown
outcome (a timeout) has no completion: it may take effect at any instant after its
invocation, or never. The search places it only where it takes effect, and is done when
every operation that did complete is placed: those left out took no effect.

Theory of operation (Wing & Gong 1993; Lowe 2017; Porcupine). The invocations and
completions are listed in time order. The search walks the list: at an invocation it tries
to linearize that operation next (the model accepts it from the current state); if it can,
the operation is lifted out of the list and the walk starts again from the head. Reaching
a completion whose operation is not yet linearized means a dead end: the last choice is
undone (the operation put back) and the walk goes on past it. The list empties exactly when
a linearization exists; backtracking past the first choice means none does. A cache of
(set of linearized operations, model state) pairs already explored cuts the search from
exponential to, in practice, near-linear (Lowe): the same pair always has the same future.

Five refinements keep it bounded on the histories of a fault run:

* **Partitions** (P-compositionality, Herlihy & Wing): a history is linearizable when the
  sub-history of each object is; each register and each lock is checked on its own.
* **Sets of states** (Porcupine's nondeterministic models): the model maps a set of
  possible states to the set of their successors, so an operation with several possible
  effects (an unknown outcome, a lock that may have been lost) is one step, not a branch.
* **Observers placed at once**: an operation that changes no state (a read, a refused
  compare-and-swap) is placed as soon as it fits, and the search tries no other place for
  it, when that loses nothing: when it accepts every state the object may be in (the
  linearization that places it later can drop it there, and its successors see no fewer
  states), or when it is a read that names a generation, which only rises (any
  linearization that places it later reaches that state unchanged, and can place it here
  instead). The search then chooses only among writes, whose generations pin them too.
* **Pending operations only where needed**: the search tries a pending operation only
  where no completed one fits, and only when the effect leaves the earliest completing
  operation not yet placed still possible (a write that pushes the generation past what
  that operation saw dooms everything after it).
* **Interchangeable pending operations**: operations of unknown outcome whose effects are
  identical (same kind, same arguments, and a written value no read ever returned, which
  is replaced by a placeholder) are linearized in their invocation order only. Swapping two
  of them in any linearization gives another, so nothing is lost, and the search counts how
  many took effect instead of choosing which.

The search is bounded by a budget of steps; past it the verdict is *undecided*, which is
not a pass. Returns say which operation could not be placed, and the states it met.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Final, Generic, Protocol, TypeVar

from attrs import frozen

from chubbypy.testing.faults._history import Op

__all__ = [
    "STEPS_MAX_DEFAULT",
    "Model",
    "Verdict",
    "check_operations",
]

S = TypeVar("S", bound=Hashable)

STEPS_MAX_DEFAULT: Final = 5_000_000
"""Search steps one partition may take before the verdict is undecided (about a minute
of one core in CPython; the fault suite's histories need a few thousand per partition)."""


class Model(Protocol[S]):
    """A sequential object, as the checker needs it."""

    def initial(self) -> S: ...

    def step(self, state: S, op: Op) -> Iterable[S]:
        """The states `op` may leave after `state`, given the result it returned (none: it
        cannot take place there). For an op of unknown outcome: the states it leaves if it
        takes effect there (that it may take none is the search's business)."""
        ...

    def possible(self, state: S, op: Op) -> bool:
        """Whether `op` (completed) could still take place after some operations from
        `state` (False only when it never could: a generation it names is past)."""
        ...

    def interchangeable(self, op: Op) -> Hashable | None:
        """For an op of unknown outcome prepared by `prepare`: a key equal for every op
        whose every effect is the same as this one's (None: not interchangeable)."""
        ...

    def observes(self, op: Op) -> bool:
        """Whether `op` never changes a state (it accepts a state or not)."""
        ...

    def settles(self, op: Op) -> bool:
        """Whether `op` observes, and accepts only states that no later state can equal (a
        read that names a generation, which only rises)."""
        ...

    def prepare(self, ops: Sequence[Op]) -> list[Op]:
        """The ops to check: those without effect dropped (a failed read), and the values
        of pending writes no read returned replaced by a placeholder."""
        ...


@frozen
class Verdict(Generic[S]):
    """The outcome of one partition's check."""

    key: str
    linearizable: bool | None
    """True, False, or None (undecided: the step budget ran out)."""
    operations: int
    pending: int
    steps: int
    seconds: float
    stuck: Op | None = None
    """When not linearizable: the operation that could not be placed after the longest
    linearizable prefix found."""
    prefix: tuple[Op, ...] = ()
    """That prefix, in linearization order."""
    states: tuple[S, ...] = ()
    """The possible states after that prefix."""

    def explain(self, lines_max: int = 12) -> str:
        """Why the partition is not linearizable, for a person."""
        if self.linearizable is not False or self.stuck is None:
            return ""
        shown = self.prefix[-lines_max:]
        text = [
            f"{self.key}: no linearization. The longest linearizable prefix has "
            f"{len(self.prefix)} operations; its last {len(shown)}:",
            *(f"    {op.describe()}" for op in shown),
            f"  then the object may be in: {', '.join(map(repr, self.states[:4]))}",
            f"  and this operation completes before it can be placed: {self.stuck.describe()}",
        ]
        return "\n".join(text)


_CALL: Final = 0
_RETURN: Final = 1


def check_operations(
    key: str,
    model: Model[S],
    ops: Sequence[Op],
    steps_max: int = STEPS_MAX_DEFAULT,
    clock: Callable[[], float] = time.perf_counter,
) -> Verdict[S]:
    """Whether `ops` (one object's operations) are linearizable with respect to `model`."""
    started = clock()
    prepared = model.prepare(ops)
    search = _Search(model, prepared, steps_max)
    verdict = search.run()
    pending = sum(op.pending for op in prepared)
    seconds = clock() - started
    if verdict is True:
        return Verdict(key, True, len(prepared), pending, search.steps, seconds)
    if verdict is None:
        return Verdict(key, None, len(prepared), pending, search.steps, seconds)
    return Verdict(
        key,
        False,
        len(prepared),
        pending,
        search.steps,
        seconds,
        stuck=search.stuck,
        prefix=search.deepest,
        states=tuple(search.deepest_states),
    )


class _Search(Generic[S]):
    """One run of the search over one partition; see the module docstring.

    The entries live in two doubly linked lists sharing the `_next` and `_prev` arrays:
    the invocations and completions of completed ops in time order, and the invocations
    of pending ops in time order. At each configuration the walk tries the completed ops
    before the first completion still listed, then the pending ops invoked before that
    completion; so a pending op is tried only where no completed op fits (where a
    generation jumps), not at every step.
    """

    def __init__(self, model: Model[S], ops: list[Op], steps_max: int) -> None:
        self._model = model
        self._ops = ops
        self._steps_max = steps_max
        self.steps = 0
        done = [i for i, op in enumerate(ops) if not op.pending]
        entries = sorted(
            [(ops[i].invoke_ns, _CALL, i) for i in done]
            + [(_completion(ops[i]), _RETURN, i) for i in done]
        )
        entries += sorted((op.invoke_ns, _CALL, i) for i, op in enumerate(ops) if op.pending)
        count = len(entries)
        self._time = [time_ns for time_ns, _, _ in entries]
        self._kind = [kind for _, kind, _ in entries]
        self._op = [i for _, _, i in entries]
        self._head = count
        self._pending_head = count + 1
        self._next = [-1] * (count + 2)
        self._prev = [-1] * (count + 2)
        self._chain(self._head, range(2 * len(done)))
        self._chain(self._pending_head, range(2 * len(done), count))
        self._return_of = [-1] * len(ops)
        for position, (_, kind, i) in enumerate(entries):
            if kind == _RETURN:
                self._return_of[i] = position
        # Interchangeable pending ops: linearized in invocation order only.
        self._class_of: list[Hashable | None] = []
        self._rank: list[int] = []
        members: dict[Hashable, int] = {}
        for op in ops:
            group = model.interchangeable(op) if op.pending else None
            self._class_of.append(group)
            self._rank.append(members.get(group, 0) if group is not None else 0)
            if group is not None:
                members[group] = members.get(group, 0) + 1
        self._placed: dict[Hashable, int] = dict.fromkeys(members, 0)
        self._settles = [model.settles(op) for op in ops]
        self._observes = [model.observes(op) for op in ops]
        self.stuck: Op | None = None
        self.deepest: tuple[Op, ...] = ()
        self.deepest_states: frozenset[S] = frozenset()

    def _chain(self, head: int, positions: range) -> None:
        previous = head
        for position in positions:
            self._next[previous], self._prev[position] = position, previous
            previous = position
        self._next[previous] = -1

    def run(self) -> bool | None:
        """True: linearizable; False: not; None: the budget ran out first."""
        state: frozenset[S] = frozenset([self._model.initial()])
        linearized = 0
        seen: set[tuple[int, frozenset[S]]] = set()
        # Each choice: its invocation entry, the states before it, whether it was forced
        # (placed at once, so no other choice is tried there), and the completion that
        # bounded the pending ops then (-1 for a completed op's choice).
        stack: list[tuple[int, frozenset[S], bool, int]] = []
        entry, bound = self._next[self._head], -1
        while self._next[self._head] != -1:
            self.steps += 1
            if self.steps > self._steps_max:
                return None
            if bound == -1 and self._kind[entry] == _RETURN:
                # No completed op fits before this completion: try the pending ops.
                entry, bound = self._next[self._pending_head], entry
                continue
            if bound != -1 and (entry == -1 or self._time[entry] > self._time[bound]):
                dead_end = bound
            else:
                i = self._op[entry]
                after = self._step(state, self._ops[i]) if self._eligible(i) else frozenset()
                if bound != -1:
                    # A pending op must leave the op of the bounding completion possible:
                    # else every configuration after it is dead.
                    waiting = self._ops[self._op[bound]]
                    after = frozenset(s for s in after if self._model.possible(s, waiting))
                forced = bool(after) and (
                    self._settles[i] or (self._observes[i] and after == state)
                )
                key = (linearized | (1 << i), after)
                if after and key not in seen:
                    seen.add(key)
                    stack.append((entry, state, forced, bound))
                    state, linearized = after, key[0]
                    self._lift(entry)
                    entry, bound = self._next[self._head], -1
                    continue
                if not forced:
                    entry = self._next[entry]
                    continue
                dead_end = entry  # placed at once before, and it led nowhere
            if self.stuck is None or len(stack) > len(self.deepest):
                self._remember(stack, state, self._ops[self._op[dead_end]])
            while True:
                if not stack:
                    return False
                entry, state, forced, bound = stack.pop()
                linearized &= ~(1 << self._op[entry])
                self._unlift(entry)
                if not forced:
                    break
            entry = self._next[entry]
        return True

    def _eligible(self, i: int) -> bool:
        group = self._class_of[i]
        return group is None or self._placed[group] == self._rank[i]

    def _step(self, states: frozenset[S], op: Op) -> frozenset[S]:
        return frozenset(after for state in states for after in self._model.step(state, op))

    def _lift(self, entry: int) -> None:
        """Take an op's invocation (and completion, if it has one) out of its list."""
        i = self._op[entry]
        for position in (entry, self._return_of[i]):
            if position == -1:
                continue
            self._next[self._prev[position]] = self._next[position]
            if self._next[position] != -1:
                self._prev[self._next[position]] = self._prev[position]
        group = self._class_of[i]
        if group is not None:
            self._placed[group] += 1

    def _unlift(self, entry: int) -> None:
        """Put them back, in the reverse order (their own links were left as they were)."""
        i = self._op[entry]
        for position in (self._return_of[i], entry):
            if position == -1:
                continue
            self._next[self._prev[position]] = position
            if self._next[position] != -1:
                self._prev[self._next[position]] = position
        group = self._class_of[i]
        if group is not None:
            self._placed[group] -= 1

    def _remember(
        self, stack: list[tuple[int, frozenset[S], bool, int]], state: frozenset[S], stuck: Op
    ) -> None:
        self.deepest = tuple(self._ops[self._op[entry]] for entry, _, _, _ in stack)
        self.deepest_states = state
        self.stuck = stuck


def _completion(op: Op) -> int:
    assert op.complete_ns is not None, op
    return op.complete_ns
