"""A simulated operator who replaces replicas while the faults go on (issue 15, item 1).

Now and then it takes the next step of a replacement, as ``chubbypy member`` does: with a
learner in the membership, it promotes it (asking again while it is NOT_CAUGHT_UP) or, now
and then, removes it; with more voters than the cell started with, it removes one (the
master two times in five, so a removed master's hand-over is exercised); otherwise it starts
a new replica (an empty store, no bootstrap: it joins) and adds it as a learner. A removed
replica keeps running half the time (it must not disrupt the cell) and is stopped for good
otherwise. Every call goes to the master through the client library's own call core
(`chubbypy.client.core.MasterCall`), so the node's gates and answers are what run.

Its randomness comes from its own generator, seeded from the run's seed, so a run with
membership changes replays exactly and the rest of the run draws as it did before.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Protocol

from chubbypy.client.core import CallSettings
from chubbypy.paxos import Chance
from chubbypy.protocol import ReplicaId
from chubbypy.protocol.client import ServerReply
from chubbypy.protocol.errors import ChubbyError
from chubbypy.protocol.session import (
    AddLearner,
    ChangeMembership,
    ListMembers,
    MemberList,
    MembershipDone,
    MembershipStep,
    Promote,
    Remove,
    describe_step,
)
from chubbypy.testing._calls import ClientProcess
from chubbypy.testing._client import simulated_view
from chubbypy.testing._operator import operator_call
from chubbypy.testing._world import SECOND

STEP_INTERVAL_SECONDS = 1.5
"""The mean time between two steps (a replacement takes three, more with retries)."""
JOINED_MAX = 3
"""New replicas one run may start (ids after the cell's own)."""


class SimMembershipOperator:
    """One operator's client process changing the membership; see the module docstring."""

    def __init__(
        self,
        replicas: tuple[str, ...],
        process: ClientProcess,
        rng: random.Random,
        calls: CallSettings,
        chance: Chance,
        cell: MembershipWorld,
    ) -> None:
        self.name = process.name
        self._process = process
        self._rng = rng
        self._calls = calls
        self._chance = chance
        self._cell = cell
        self._view = simulated_view(replicas)
        self._seed_voters = len(replicas)
        self._joining: ReplicaId | None = None
        """A replica started to join whose addition is not yet chosen."""
        self.stop_at = 0
        self.changes = 0
        """Changes chosen at its asking (not counting retries answered `already`)."""

    def start(self, stop_at: int) -> None:
        self.stop_at = stop_at
        self._later()

    def reply_received(self, replica: str, reply: ServerReply) -> None:
        self._process.reply_received(replica, reply)

    def connection_lost(self, replica: str) -> None:
        self._process.connection_lost(replica)

    def _later(self) -> None:
        pause = self._rng.expovariate(1 / STEP_INTERVAL_SECONDS)
        self._process.after(int(pause * SECOND), self._step)

    def _step(self) -> None:
        if self._process.scheduler.now >= self.stop_at:
            return
        self._call(ListMembers(), self._listed)

    def _listed(self, result: object) -> None:
        if not isinstance(result, MemberList):
            self._later()
            return
        voters = [m.replica_id for m in result.members if m.voter]
        learners = [m.replica_id for m in result.members if not m.voter]
        if self._joining in voters or self._joining in learners:
            self._joining = None  # added (perhaps by an attempt whose answer was lost)
        master = next((m.replica_id for m in result.members if m.master), None)
        step: MembershipStep | None
        if learners:
            learner = learners[0]
            step = Promote(learner) if self._rng.random() < 0.85 else Remove(learner)
        elif len(voters) > self._seed_voters:
            others = [v for v in voters if v != master]
            victim = master if master and self._rng.random() < 0.4 else self._rng.choice(others)
            step = Remove(victim, force=self._rng.random() < 0.1)
        else:
            step = self._join()
        if step is None:
            self._later()
            return
        self._call(ChangeMembership(step, result.version), lambda r: self._changed(step, r))

    def _join(self) -> AddLearner | None:
        if self._joining is None:
            if self._cell.joined >= JOINED_MAX:
                return None
            self._joining = self._cell.join()
        name = self._joining
        return AddLearner(name, name, name)

    def _changed(self, step: MembershipStep, result: object) -> None:
        if isinstance(result, MembershipDone):
            self._cell.say(
                f"member operator: {describe_step(step)}: version {result.version} at "
                f"{result.index}" + (" (already)" if result.already else "")
            )
            if not result.already:
                self.changes += 1
            if isinstance(step, AddLearner):
                self._joining = None
            if isinstance(step, Remove):
                self._cell.removed(step.replica_id, linger=self._rng.random() < 0.5)
        elif isinstance(result, ChubbyError):
            self._cell.say(f"member operator: {describe_step(step)} refused: {result.code.name}")
        self._later()

    def _call(self, call: ListMembers | ChangeMembership, ended: Callable[[object], None]) -> None:
        operator_call(self._process, self._view, self._calls, self._chance, call, ended)


class MembershipWorld(Protocol):
    """What the operator may do to the simulated world besides calling the cell."""

    @property
    def joined(self) -> int:
        """Replicas started to join so far."""
        ...

    def join(self) -> ReplicaId:
        """Start a new replica on an empty store, without bootstrap; its name."""
        ...

    def removed(self, name: ReplicaId, *, linger: bool) -> None:
        """`name` was removed: leave it running (`linger`) or stop it for good."""
        ...

    def say(self, line: str) -> None:
        """Something happened (the trace, and the narrator)."""
        ...
