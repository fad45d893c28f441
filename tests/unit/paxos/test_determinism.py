"""Determinism: the same inputs give the same Readys, down to every message and event."""

from __future__ import annotations

from chubbypy.paxos import Limits, Ready
from chubbypy.protocol import Accept, ReplicaId
from tests.unit.paxos.harness import (
    R1,
    R2,
    R3,
    Cell,
    DriftingCell,
    ScriptedChance,
    between,
    command,
    of,
)


def scripted_run() -> tuple[dict[ReplicaId, list[Ready]], list[object]]:
    """An election, commands, a lost Accept, a crash, a failover, a snapshot and a restart."""
    limits = Limits(log_retain_entries=1, proposals_inflight_max=4, catchup_entries_max=8)
    chances = {rid: (lambda: ScriptedChance([3, 1, 4, 1, 2])) for rid in (R1, R2, R3)}
    cell = Cell(limits=limits, chances=chances)
    cell.run(8)
    master = cell.master()
    client = cell.register(master)
    for sequence in range(1, 6):
        cell.propose(master, command(client, sequence, b"k=%d" % sequence))
    cell.take(of(Accept))
    cell.run(3)
    cell.snapshot(master)
    cell.crash(master)
    cell.run(30)
    cell.restart(master)
    cell.run(10, between((R1, R2)))
    cell.run(10)
    return dict(cell.readys), list(cell.history)


def test_same_script_gives_the_same_readys() -> None:
    """Running one scripted scenario twice yields equal Ready sequences on every replica."""
    first, second = scripted_run(), scripted_run()
    assert first == second
    readys, history = first
    assert sum(len(r) for r in readys.values()) > 40
    assert sum(type(event).__name__ == "BecameMaster" for _, event in history) == 2


def test_same_seed_gives_the_same_run() -> None:
    """The randomized lease run is a function of its seed."""
    runs = []
    for _ in range(2):
        sim = DriftingCell(7)
        sim.run(until=100)
        runs.append((dict(sim.cell.readys), sim.cell.history, sim.cell.chosen))
    assert runs[0] == runs[1]
    other = DriftingCell(8)
    other.run(until=100)
    assert other.cell.history != runs[0][1]
