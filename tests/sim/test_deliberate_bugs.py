"""The checkers can fail: each deliberate bug is reported within a bounded number of seeds.

Paxos Made Live §6.3: leave known bugs in to check that the tests catch them. Bugs whose
damage needs several faults lined up are hunted with the scenario aimed at them; the others
with random faults.
"""

from __future__ import annotations

import pytest
from attrs import evolve

from chubbypy.node import NodeBug
from chubbypy.paxos import Bug
from chubbypy.testing import SimSettings
from chubbypy.testing.sim_cli import run_seed

CASES = [
    # bug, scenario, seeds to try, checkers that may report it
    (Bug.IGNORE_LEASE_END, "random", 10, {"lease safety", "linearizable reads"}),
    (Bug.NO_DEDUPLICATION, "random", 10, {"exactly once"}),
    (Bug.FORGET_ACCEPTED_VALUES, "random", 20, {"agreement", "durability", "liveness"}),
    (Bug.ACCEPTOR_IGNORES_LEASE, "bridge", 10, {"lease safety"}),
    (Bug.REPLY_BEFORE_PERSIST, "lost-ack", 10, {"agreement", "durability", "quorum"}),
    (Bug.SKIP_EPOCH_CHECK, "flapping-master", 10, {"session safety"}),
    (Bug.COUNT_LEARNER_IN_QUORUM, "random", 5, {"quorum", "agreement", "durability"}),
    (Bug.REMOVED_MASTER_STAYS, "random", 20, {"lease safety"}),
]  # fmt: skip

NODE_CASES = [
    # bugs of the replica node (not of the Paxos core), in the whole cell's workload
    (NodeBug.ANSWER_BEFORE_APPLIED, 5, {"durability", "linearizable reads"}),
    (NodeBug.ROUTE_TO_WRONG_REQUEST, 10, {"durability", "linearizable reads", "client answers"}),
    (NodeBug.OPERATOR_ENDS_AT_ONCE, 5, {"session safety", "mutual exclusion"}),
]

WHOLE_CELL = evolve(SimSettings(), locks=True, registers=True)


@pytest.mark.parametrize(
    ("bug", "bound", "checkers"), NODE_CASES, ids=[c[0].value for c in NODE_CASES]
)
def test_deliberate_node_bug_is_caught(bug: NodeBug, bound: int, checkers: set[str]) -> None:
    """A bug switched on in the replica node that the server and the simulator share is
    reported within `bound` seeds of the whole cell's workload."""
    settings = evolve(WHOLE_CELL, node_bugs=frozenset([bug]))
    for seed in range(bound):
        result = run_seed(seed, settings)
        if not result.ok:
            reported = {v.checker for v in result.violations}
            assert reported & checkers, f"seed {seed} reported {reported}, expected {checkers}"
            return
    pytest.fail(f"{bug.value}: no violation in {bound} seeds")


@pytest.mark.parametrize(
    ("bug", "scenario", "bound", "checkers"),
    CASES,
    ids=[
        Bug.SKIP_EPOCH_CHECK.value if isinstance(c, type(pytest.param())) else c[0].value
        for c in CASES
    ],
)
def test_deliberate_bug_is_caught(bug: Bug, scenario: str, bound: int, checkers: set[str]) -> None:
    """Switching on the bug makes the simulator report a violation within `bound` seeds."""
    settings = evolve(SimSettings(), bugs=frozenset([bug]))
    for seed in range(bound):
        result = run_seed(seed, settings, scenario)
        if not result.ok:
            reported = {v.checker for v in result.violations}
            assert reported & checkers, f"seed {seed} reported {reported}, expected {checkers}"
            return
    pytest.fail(f"{bug.value}: no violation in {bound} seeds of the {scenario} scenario")


def test_clock_drift_beyond_the_bound_breaks_leases() -> None:
    """Negative control: clocks drifting twenty times the allowed bound let two leases
    overlap (a master cut off while its clock runs slow and its peers' run fast), within
    40 seeds of the flapping-master scenario."""
    settings = evolve(SimSettings(), drift_factor=20.0)
    for seed in range(40):
        result = run_seed(seed, settings, "flapping-master")
        if any(v.checker == "lease safety" for v in result.violations):
            return
    pytest.fail("drift far beyond the bound never produced overlapping leases in 40 seeds")
