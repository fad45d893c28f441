"""Behaviour of a whole cell under one fault at a time, driven through the simulator's DSL."""

from __future__ import annotations

from attrs import evolve

from chubbypy.paxos import Role
from chubbypy.testing import SimCell, SimSettings
from chubbypy.testing._world import SECOND

SETTINGS = SimSettings()


def _cell(seed: int, **changes: object) -> tuple[SimCell, list[str]]:
    lines: list[str] = []
    cell = SimCell(seed, evolve(SETTINGS, **changes), narrate=lines.append)  # type: ignore[arg-type]
    cell.start()
    return cell, lines


def test_a_fresh_cell_elects_one_master_quickly() -> None:
    """A fresh cell has one master serving under a lease within two lease periods."""
    cell, _ = _cell(1)
    cell.run(seconds=2 * SETTINGS.lease_seconds)
    assert cell.master() is not None
    assert len(cell.serving()) == 1


def test_isolated_master_is_replaced_and_loses_nothing() -> None:
    """An isolated master steps down, the majority elects another, acknowledged writes survive."""
    cell, lines = _cell(2)
    old = cell.run_until_serving()
    cell.run(seconds=1)
    cell.partition([old], [n for n in cell.names if n != old])
    new = cell.run_until_serving(excluding=[old], seconds=3 * SETTINGS.lease_seconds)
    assert cell.nodes[old].core.status().role is not Role.MASTER
    assert cell.nodes[new].core.epoch > 0
    assert any(f"{old}: steps down" in line for line in lines)
    result = cell.conclude()
    assert result.ok, result.violations


def test_a_minority_never_elects_a_master() -> None:
    """A replica alone on its side of a partition campaigns but never serves."""
    cell, _ = _cell(3)
    master = cell.run_until_serving()
    alone = next(n for n in cell.names if n != master)
    cell.partition([alone], [n for n in cell.names if n != alone])
    for _ in range(100):
        cell.run(seconds=0.05)
        assert not cell.nodes[alone].core.serving
    assert cell.conclude().ok


def test_a_long_absent_replica_catches_up_from_a_snapshot() -> None:
    """A replica down while the others truncate their logs is brought back by a snapshot."""
    cell, lines = _cell(4)
    master = cell.run_until_serving()
    absent = next(n for n in cell.names if n != master)
    cell.crash(absent)
    cell.run(seconds=3)
    cell.restart(absent)
    cell.run(seconds=2)
    assert any(f"{absent}: installed a snapshot" in line for line in lines)
    result = cell.conclude()
    assert result.ok, result.violations


def test_a_whole_cell_crash_loses_no_acknowledged_write() -> None:
    """Every replica crashes at once, losing unsynced writes; acknowledged writes survive."""
    cell, _ = _cell(5)
    cell.run(seconds=2)
    for name in cell.names:
        cell.crash(name)
    cell.run(seconds=0.5)
    for name in cell.names:
        cell.restart(name)
    result = cell.conclude()
    assert result.ok, result.violations
    assert result.acknowledged > 100


def test_a_stalled_master_never_serves_a_stale_read() -> None:
    """A master stalled past its lease wakes, finds its lease over, and steps down."""
    cell, lines = _cell(6)
    master = cell.run_until_serving()
    cell.pause(master, 3 * SETTINGS.lease_seconds)
    cell.run(seconds=4 * SETTINGS.lease_seconds)
    assert any(f"{master}: lost the master lease" in line for line in lines)
    result = cell.conclude()
    assert result.ok, result.violations


def test_a_rejoining_follower_does_not_depose_the_master() -> None:
    """A follower cut off long enough to raise its ballot rejoins; master and epoch stay."""
    cell, lines = _cell(7)
    master = cell.run_until_serving()
    epoch = cell.nodes[master].core.epoch
    follower = next(n for n in cell.names if n != master)
    cell.partition([follower], [n for n in cell.names if n != follower])
    cell.run(seconds=3 * SETTINGS.lease_seconds)
    assert any(f"{follower}: campaigns" in line for line in lines)
    cell.heal()
    cell.run(seconds=2)
    assert cell.master() == master
    assert cell.nodes[master].core.epoch == epoch
    assert cell.nodes[follower].core.status().promised.replica_id == master


def test_replicas_agree_on_checksums_while_running() -> None:
    """The master's periodic CHECKSUM entries give every replica the same checksum."""
    cell, _ = _cell(8)
    cell.run(seconds=5)
    assert cell.observer.checksums_compared() >= 3
    assert not cell.observer.failed


def test_five_replicas_survive_two_crashes() -> None:
    """A five-replica cell keeps serving with two replicas down."""
    cell, _ = _cell(9, replicas=5)
    master = cell.run_until_serving()
    down = [n for n in cell.names if n != master][:2]
    for name in down:
        cell.crash(name)
    before = cell.nodes[master].applier.applied_index
    cell.run(seconds=2)
    assert cell.nodes[master].applier.applied_index > before + 50
    assert cell.scheduler.now >= 2 * SECOND
    assert cell.conclude().ok
