"""A replica that lost its disk rebuilds from its peers, then votes, while the cell serves."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.integration.harness import LiveCell, Measure, assert_state_matches


def test_wiped_replica_rebuilds_then_votes_while_the_cell_serves(
    make_cell: Callable[..., LiveCell], measure: Measure
) -> None:
    """A follower restarted on a wiped disk learns the log, then votes with the same state."""
    cell = make_cell(paxos={"checksum_every_seconds": 1})
    client = cell.client()
    client.create(cell.path("kv"), directory=True)
    for i in range(30):
        client.create(cell.path(f"kv/{i}"), f"before {i}".encode())
    master = cell.wait_master()
    lost = next(rid for rid in cell.running if rid != master)
    assert cell.stop_replica(lost) == 0, cell.logs()
    cell.wipe_replica(lost)
    assert not (cell.data_dir / lost).exists()

    started_at = time.monotonic()
    cell.start_replica(lost)
    ready_first = cell.wait_for(lambda: answered(cell.readyz(lost)), f"{lost} answers", 15)
    first: dict[str, Any] = cell.wait_for(lambda: cell.status(lost), f"{lost}'s status", 5)
    if not first["voting"]:
        # It did not vote then, so it did not a moment before either: not ready, and why.
        assert ready_first[0] == 503, ready_first
        assert "rebuilding a lost disk" in ready_first[1], ready_first
    log = cell.log(lost)
    assert "--bootstrap was not given: rebuilding from its peers" in log, cell.logs()
    assert "(rebuilding: not voting yet)" in log, cell.logs()

    # The cell keeps serving while the replica rebuilds; new instances let it vote again.
    written = 30
    while not (cell.status(lost) or {}).get("voting"):
        client.create(cell.path(f"kv/{written}"), f"during {written}".encode())
        written += 1
        assert time.monotonic() - started_at < 20, f"{lost} never votes\n{cell.explain()}"
    voting = time.monotonic() - started_at
    for i in range(written, written + 10):
        client.create(cell.path(f"kv/{i}"), f"after {i}".encode())
    leader = cell.wait_caught_up(lost, timeout=15)
    measure("rebuild of a wiped replica (start to voting)", voting)
    print(f"first /status of {lost}: voting={first['voting']}; {written - 30} writes meanwhile")

    rebuilt = cell.statuses()[lost]
    assert rebuilt["voting"] is True, rebuilt
    assert rebuilt["applied_index"] >= leader["applied_index"], (rebuilt, leader)
    assert rebuilt["divergence"] is None, rebuilt
    assert cell.readyz(lost)[0] == 200
    assert_state_matches(cell, lost, cell.wait_master(), client)
    names = {entry.name for entry in client.list_dir(cell.path("kv"))}
    assert names == {f"{i}" for i in range(written + 10)}


def answered(readyz: tuple[int, str]) -> tuple[int, str] | None:
    """A ``/readyz`` answer, or None if the replica did not answer yet."""
    return readyz if readyz[0] else None
