"""Replacing every replica of a serving cell, on real processes (issue 15, item 1).

A three-replica cell serves a writer and a lock holder throughout. Each replica in turn (a
follower, the other follower, then whichever is master by then) is replaced as an operator
would: the new one's entry goes into the cell file, it starts on an empty data directory
without --bootstrap, ``chubbypy member add`` makes it a learner, ``member promote --wait``
a voter once it has caught up, ``member remove`` takes the old one out, and the old one is
stopped (SIGTERM, exit 0). Nothing acknowledged is lost, the lock stays with its session
(and its sequencer valid), and the only mastership change is the one the master's own
removal makes.
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from typing import Any

from chubbypy.client.blocking import BlockingCell
from chubbypy.protocol.errors import ChubbyError
from tests.integration.harness import REPLICA_IDS, LiveCell, Measure

NEW_IDS = ("r4", "r5", "r6")
KEYS = 8


class Writer(threading.Thread):
    """Writes numbered values to a few files; records each acknowledged one and the
    longest gap between two acknowledgements."""

    def __init__(self, client: BlockingCell, cell: LiveCell) -> None:
        super().__init__(daemon=True)
        self.client, self.cell = client, cell
        self.acknowledged: dict[str, int] = {}
        self.stop = threading.Event()
        self.gap_max = 0.0
        self.errors: list[str] = []

    def run(self) -> None:
        last = time.monotonic()
        for n in itertools.count(1):
            if self.stop.is_set():
                return
            path = self.cell.path(f"k{n % KEYS}")
            try:
                self.client.set_contents(path, str(n).encode())
            except ChubbyError as error:
                self.errors.append(f"{error.code.name}: {error.message}")
                continue
            now = time.monotonic()
            self.gap_max = max(self.gap_max, now - last)
            last = now
            self.acknowledged[path] = n


def member_list(cell: LiveCell) -> dict[str, Any]:
    result = cell.cli("member", "list", "--json", as_operator=True)
    assert result.code == 0, result
    return result.json()


def test_every_replica_of_a_serving_cell_is_replaced_in_turn(
    tmp_path: Path, measure: Measure
) -> None:
    """Three replacements under load: each step exits 0; the learner is listed, then a
    voter; no acknowledged write is lost; the lock holder's sequencer stays valid; the epoch
    changes once (the master's removal); the new file lists r4-r6 and status is healthy."""
    cell = LiveCell(tmp_path / "cell")
    first_master = cell.start()
    principal, token = cell.operator
    setup = cell.client()
    for n in range(KEYS):
        setup.create(cell.path(f"k{n}"), b"0")
    holder = cell.client()
    held = holder.lock(cell.path("the-lock")).acquire()
    writer = Writer(cell.client(principal=principal, token=token), cell)
    writer.start()
    epochs = {cell.status(first_master)["epoch"]}  # type: ignore[index]
    order = [r for r in REPLICA_IDS if r != first_master] + [first_master]
    try:
        for old, new in zip(order, NEW_IDS, strict=True):
            ports = cell.add_replica_config(new)
            cell.start_replica(new)
            cell.wait_for(lambda new=new: cell.status(new), f"{new} answers", 15.0)
            added = cell.cli(
                "member", "add", new, "--peer", f"127.0.0.1:{ports.peer}",
                "--client", f"127.0.0.1:{ports.client}", "--json", as_operator=True,
            )  # fmt: skip
            assert added.code == 0, added
            listed = {m["replica_id"]: m for m in member_list(cell)["members"]}
            assert listed[new]["role"] == "learner"
            began = time.monotonic()
            promoted = cell.cli("member", "promote", new, "--wait", "30", as_operator=True)
            assert promoted.code == 0, promoted
            measure(f"{new} promoted after its addition", time.monotonic() - began)
            removed = cell.cli("member", "remove", old, "--json", as_operator=True)
            assert removed.code == 0, removed
            assert removed.json()["replica_id"] == old
            master = cell.wait_for(
                lambda old=old: next((r for r in cell.serving() if r != old), None),
                "a member serves",
                15.0,
            )
            epochs.add(cell.status(master)["epoch"])  # type: ignore[index]
            assert cell.stop_replica(old) == 0, cell.log(old)
        cell.list_only(NEW_IDS)
        cell.wait_for(lambda: len(writer.acknowledged) == KEYS, "every key written", 15.0)
        time.sleep(0.5)
    except BaseException:
        cell.close()
        raise
    finally:
        writer.stop.set()
        writer.join(30)
    try:
        check_replaced(cell, writer, held, epochs, measure)
    finally:
        cell.close()


def check_replaced(
    cell: LiveCell, writer: Writer, held: Any, epochs: set[int], measure: Measure
) -> None:
    """What must hold once r1-r3 are replaced (see the test's docstring)."""
    listed = member_list(cell)
    assert [(m["replica_id"], m["role"]) for m in listed["members"]] == [
        (rid, "voter") for rid in NEW_IDS
    ]
    assert listed["version"] == 1 + 3 * len(NEW_IDS)
    reader = cell.client()
    for path, value in writer.acknowledged.items():
        assert int(reader.get_contents_and_stat(path).contents) >= value, path
    assert not held.is_lost
    assert reader.check_sequencer(held.sequencer)
    assert len(epochs) == 2, epochs  # the first master's, and its successor's
    status = cell.cli("status", "--json")
    assert status.code == 0, status
    measure("longest pause between acknowledged writes, three replacements", writer.gap_max)
    held.release()
