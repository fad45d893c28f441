"""Exactly-once session calls on a live cell (issue 12): handle writes, compare-and-swaps,
acquires and releases in flight when the master, or every replica, is killed with -9 are
each carried out once, and answered with their first answer."""

from __future__ import annotations

import threading
import time

from chubbypy.client.blocking import BlockingCell
from tests.integration.harness import REPLICA_IDS, LiveCell, Measure

WRITERS = 8
WRITES_EACH = 500
LOCKERS = 4
RESTARTS = 3
"""Whole-cell restarts under the lockers: each catches a release in flight about one time
in three (measured before the fix: a release answered LOCK_NOT_HELD in 1 run of 3)."""
CALL_TIMEOUT_SECONDS = 40.0
"""Long enough for any call to ride out a fail-over or a whole-cell restart: a call that
timed out would leave its outcome unknown, and the counts below could not be exact."""


class Worker(threading.Thread):
    """Runs `work` on its own client; keeps the first error."""

    def __init__(self, name: str, client: BlockingCell) -> None:
        super().__init__(name=name, daemon=True)
        self.client = client
        self.done = 0
        """Calls the cell acknowledged."""
        self.error: BaseException | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            self.work()
        except BaseException as error:
            self.error = error

    def work(self) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        self.join(120)
        assert not self.is_alive(), f"{self.name} did not finish"
        assert self.error is None, f"{self.name}: {self.error!r}"


class Writer(Worker):
    """Writes its own file through one handle: plain writes and compare-and-swaps in turn,
    each CAS naming the generation the previous answer gave."""

    def __init__(self, name: str, client: BlockingCell, path: str) -> None:
        super().__init__(name, client)
        self.path = path
        self.last = b""

    def work(self) -> None:
        handle = self.client.open(self.path, create=True)
        generation = handle.stat.content_generation
        for i in range(WRITES_EACH):
            value = f"{self.name} {i}".encode()
            # Only this writer writes the file: a CAS refused GENERATION_MISMATCH would mean
            # an earlier write was applied twice.
            expected = generation if i % 2 else None
            generation = handle.set_contents(value, expected).content_generation
            self.last = value
            self.done += 1


class Locker(Worker):
    """Takes the shared lock and lets it go, over and over, until told to stop."""

    def __init__(self, name: str, client: BlockingCell, path: str) -> None:
        super().__init__(name, client)
        self.path = path

    def work(self) -> None:
        handle = self.client.open(self.path, create=True)
        while not self.stopping.is_set():
            handle.acquire()
            handle.release()  # of the generation just acquired: LockNotHeld if refused
            self.done += 1


def test_handle_writes_across_a_kill_9_of_the_master_apply_once(
    cell: LiveCell, measure: Measure
) -> None:
    """8 clients x 500 handle writes and CASes, the master killed -9 midway: no call fails,
    and every file's generation is its creation plus its acknowledged writes."""
    cell.client().create(cell.path("eo"), directory=True)
    writers = [
        Writer(f"w{i}", cell.client(CALL_TIMEOUT_SECONDS), cell.path(f"eo/f{i}"))
        for i in range(WRITERS)
    ]
    for writer in writers:
        writer.start()
    total = WRITERS * WRITES_EACH
    cell.wait_for(lambda: sum(w.done for w in writers) >= total // 3, "a third written", 60)
    master = cell.wait_master()
    killed_at = time.monotonic()
    cell.kill_replica(master)
    new = cell.wait_master(timeout=15)
    measure(
        "kill -9 of the master to another serving, under 8 writers", time.monotonic() - killed_at
    )
    cell.start_replica(master)
    for writer in writers:
        writer.finish()
    assert new != master
    reader = cell.client()
    for writer in writers:
        contents = reader.get_contents_and_stat(writer.path)
        assert contents.stat.content_generation == 1 + WRITES_EACH, writer.name
        assert contents.contents == writer.last


def test_acquires_and_releases_across_a_kill_9_of_every_replica_apply_once(
    cell: LiveCell, measure: Measure
) -> None:
    """Clients take turns at one lock while every replica is killed -9 and restarted (three
    times): no
    release is answered LOCK_NOT_HELD (or fails at all), and the lock's generation counts
    exactly the acquisitions acknowledged."""
    path = cell.path("lock")
    lockers = [Locker(f"l{i}", cell.client(CALL_TIMEOUT_SECONDS), path) for i in range(LOCKERS)]
    for locker in lockers:
        locker.start()

    def hundred_more() -> None:
        target = sum(lk.done for lk in lockers) + 100
        cell.wait_for(lambda: sum(lk.done for lk in lockers) >= target, "100 lock cycles", 60)

    for restart in range(RESTARTS):
        hundred_more()
        for rid in cell.running:
            cell.kill_replica(rid)
        restarted_at = time.monotonic()
        for rid in REPLICA_IDS:
            cell.start_replica(rid)
        cell.wait_master()
        took = time.monotonic() - restarted_at
        measure(f"whole-cell restart {restart + 1} after kill -9, under 4 lock clients", took)
    hundred_more()
    for locker in lockers:
        locker.stopping.set()
    for locker in lockers:
        locker.finish()
    stat = cell.client().get_stat(path)
    assert stat.lock_generation == sum(lk.done for lk in lockers)
