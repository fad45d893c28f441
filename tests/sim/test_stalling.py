"""A hostile cacher (issue 13's review): a session that caches files and KeepAlives without
ever acknowledging an invalidation holds each write to them up only until its lease ends."""

from __future__ import annotations

from attrs import evolve

from chubbypy.testing import SimCell, SimSettings
from chubbypy.testing._client import COUNTERS, REGISTERS
from chubbypy.testing._registers import path_of
from chubbypy.testing.sim_cli import run_seed
from tests.sim.conftest import explain

SETTINGS = SimSettings()


def test_the_stalling_cacher_is_expired_again_and_again_while_writes_go_on() -> None:
    """Every session of the staller is expired (it owes an acknowledgement, so its lease
    stops growing), and the register clients' writes to the files it caches are
    acknowledged all the while."""
    cell = SimCell(7, evolve(SETTINGS, registers=True))
    cell.start()
    master = cell.run_until_serving()
    staller = cell.stalling_cacher(tuple(path_of(k) for k in (*REGISTERS, *COUNTERS)))
    staller.start(master)
    before = sum(1 for op in cell.observer.operations() if op.acknowledged)
    cell.run(seconds=5 * SETTINGS.session_lease_seconds)
    after = sum(1 for op in cell.observer.operations() if op.acknowledged)
    assert staller.sessions_opened >= 3, "each of its sessions ends a lease after it is told"
    assert after - before > 20, "writes to the files it caches go on"
    result = cell.conclude()
    assert result.ok, explain(result)


def test_the_stalling_cacher_scenario_holds_no_write_longer_than_a_lease() -> None:
    """The stalling-cacher scenario (liveness bound: a session lease and a second from each
    operation's start) breaks no checker."""
    for seed in range(3):
        result = run_seed(seed, SETTINGS, "stalling-cacher")
        assert result.ok, explain(result, "stalling-cacher")
