"""Sessions and locks in the simulated cell: lock clients with drifting clocks, KeepAlives,
pauses longer than their lease, fenced writes and cached reads, under every fault, judged
by the mutual exclusion, session safety, fencing and cache coherence checkers."""

from __future__ import annotations

import os
import random

import pytest
from attrs import evolve

from chubbypy.client.core import ClientBug
from chubbypy.testing import SimSettings
from chubbypy.testing._cell import SimCell
from chubbypy.testing._lock_client import LockBug
from chubbypy.testing.sim_cli import run_seed
from tests.sim.conftest import explain

CHUNK = 10
FIXED = [(3, start) for start in range(2000, 2040, CHUNK)] + [(5, 2000)]
"""50 fixed seeds with lock clients: 40 on three replicas, 10 on five (``make sweep``
runs thousands of fresh seeds of the whole cell, locks included)."""
FRESH_START = int(os.environ.get("CHUBBYPY_SIM_START", random.SystemRandom().randrange(10**9)))


def _locks(replicas: int = 3) -> SimSettings:
    return evolve(SimSettings(), replicas=replicas, locks=True)


@pytest.mark.parametrize(("replicas", "start"), FIXED)
def test_fixed_seeds_with_locks(replicas: int, start: int) -> None:
    """Random faults and client pauses over fixed seeds break no checker, and the workload
    really holds locks, writes under them, and expires sessions."""
    grants = fenced = expiries = reads = hits = 0
    for seed in range(start, start + CHUNK):
        cell = SimCell(seed, _locks(replicas))
        result = cell.run_scenario()
        assert result.ok, explain(result, "random", " --locks")
        grants += cell.lock_observer.grants_believed
        fenced += cell.lock_observer.fenced_writes
        expiries += cell.lock_observer.expiries
        reads += cell.lock_observer.reads_checked
        hits += cell.lock_observer.cache_hits
    assert grants > 50
    assert fenced > 50
    assert expiries > 0
    assert reads > 100
    assert hits > 10, "reads are served from the clients' caches too"


@pytest.mark.parametrize("start", [3000, 3010])
def test_fixed_seeds_of_the_whole_cell(start: int) -> None:
    """Register clients and lock clients in one cell (chubbypy-sim's default workload):
    clients' writes pass the cache gate too, and every checker holds."""
    settings = evolve(SimSettings(), locks=True, registers=True)
    for seed in range(start, start + CHUNK):
        cell = SimCell(seed, settings)
        result = cell.run_scenario()
        assert result.ok, explain(result, "random", "")
        assert result.acknowledged > 100
        assert cell.lock_observer.grants_believed > 0


def test_fresh_seeds_with_locks() -> None:
    """Lock clients over seeds never run before break no checker."""
    start = FRESH_START + 2 * 10**9
    print(f"fresh lock seeds from {start} (CHUBBYPY_SIM_START={FRESH_START})")
    for seed in range(start, start + CHUNK):
        result = run_seed(seed, _locks())
        assert result.ok, explain(result, "random", " --locks")


def test_an_isolated_master_stops_extending_sessions() -> None:
    """The isolated-master scenario (a master cut off from its peers, not its clients)
    breaks no checker."""
    for seed in range(CHUNK):
        result = run_seed(seed, _locks(), "isolated-master")
        assert result.ok, explain(result, "isolated-master", " --locks")


def test_a_lock_run_replays_exactly() -> None:
    """The same seed gives the same trace with lock clients too."""
    first, second = run_seed(2001, _locks()), run_seed(2001, _locks())
    assert first.trace_hash == second.trace_hash


@pytest.mark.parametrize(
    ("bug", "start", "bound", "checkers"),
    [
        (LockBug.HOLDER_IGNORES_JEOPARDY, 0, 60, {"mutual exclusion"}),
        (ClientBug.LEASE_FROM_ANSWER, 0, 40, {"session safety", "mutual exclusion"}),
        (ClientBug.CACHE_IGNORES_INVALIDATION, 0, 20, {"cache coherence"}),
        (ClientBug.CALLS_UNNUMBERED, 0, 20, {"at most once"}),
    ],
    ids=lambda value: value.value if isinstance(value, LockBug | ClientBug) else "",
)
def test_a_deliberate_lock_bug_is_caught(
    bug: LockBug | ClientBug, start: int, bound: int, checkers: set[str]
) -> None:
    """A program that believes past its session's lease, a client library that counts its
    lease from a retry, one that keeps what it was told to drop, or one whose retries are
    carried out again (unnumbered calls), is reported within
    `bound` seeds (the checkers can fail)."""
    if isinstance(bug, LockBug):
        settings = evolve(_locks(), lock_bugs=frozenset([bug]))
    else:
        settings = evolve(_locks(), client_bugs=frozenset([bug]))
    for seed in range(start, start + bound):
        result = run_seed(seed, settings)
        if not result.ok:
            assert {v.checker for v in result.violations} & checkers
            return
    pytest.fail(f"{bug.value}: no violation in {bound} seeds")
