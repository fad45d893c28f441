"""A registration flood on real processes (issue 12: 12,000 Register in 3 s from one
connection made the master lose its lease three times and evicted every honest client):
past its limit the connection is refused, an honest client's writes go on, the master
keeps its lease. The figures are printed (`measure`), never asserted beyond the checks."""

from __future__ import annotations

import contextlib
import itertools
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from attrs import define, field

from chubbypy.client.blocking import BlockingCell
from tests.integration.harness import LiveCell, Measure, flood_size

FLOOD = flood_size(5_000, 20_000)
"""Registrations sent at once on one connection (`make floods`: 20,000)."""
LIMIT = 64
"""limits.registrations_per_connection_max, the default."""
WATCH_SECONDS = 0.02
ROOT = Path(__file__).resolve().parents[2]


@define
class Watch:
    """What a background thread saw while the flood went on."""

    stop: threading.Event = field(factory=threading.Event)
    writes: list[tuple[float, float]] = field(factory=list)
    """(when it started, how long it took) of each honest write, in monotonic seconds."""
    write_errors: list[BaseException] = field(factory=list)
    statuses: list[tuple[float, dict[str, Any] | None]] = field(factory=list)
    """The master's /status at each poll (None: it did not answer)."""

    def honest_writes(self, client: BlockingCell, path: str) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            started = time.monotonic()
            try:
                client.set_contents(path, str(n).encode())
            except Exception as error:  # the test reports it; a thread must not die silently
                self.write_errors.append(error)
                return
            self.writes.append((started, time.monotonic() - started))

    def master_status(self, cell: LiveCell, master: str) -> None:
        while not self.stop.is_set():
            self.statuses.append((time.monotonic(), cell.status(master)))
            time.sleep(WATCH_SECONDS)

    @contextlib.contextmanager
    def running(
        self, cell: LiveCell, master: str, client: BlockingCell, path: str
    ) -> Iterator[None]:
        """The honest writer and the master's watcher run in threads for the block."""
        threads = [
            threading.Thread(target=self.honest_writes, args=(client, path)),
            threading.Thread(target=self.master_status, args=(cell, master)),
        ]
        for thread in threads:
            thread.start()
        try:
            yield
        finally:
            self.stop.set()
            for thread in threads:
                thread.join()

    def latencies_ms(self, since: float, until: float) -> list[float]:
        return sorted(1000 * took for started, took in self.writes if since <= started < until)


def _flood(cell: LiveCell, master: str) -> dict[str, Any]:
    """FLOOD registrations sent at once on one connection, from a process of its own (its
    decoding of the replies must not take the honest client's CPU in this one): what
    came back, as `wire_client.flood` reports it."""
    port = str(cell.ports[master].client)
    command = [sys.executable, "-m", "tests.integration.wire_client", "flood", port, cell.name]
    done = subprocess.run(
        [*command, str(FLOOD)], capture_output=True, text=True, timeout=120, cwd=ROOT, check=True
    )
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def _summary(latencies: list[float]) -> str:
    if not latencies:
        return "no writes"
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    return (
        f"{len(latencies)} writes, p50 {statistics.median(latencies):.1f} ms, p99 {p99:.1f} ms, "
        f"max {latencies[-1]:.1f} ms"
    )


def test_a_registration_flood_is_refused_while_an_honest_client_writes_on(
    cell: LiveCell, measure: Measure
) -> None:
    """FLOOD registrations at once on one connection: 64 registered, the rest refused
    RESOURCE_EXHAUSTED naming the key; meanwhile an honest client's writes all succeed,
    and the master keeps its lease and epoch at every poll (latencies are printed)."""
    honest, path = cell.client(), cell.path("honest")
    honest.create(path, b"0")
    master = cell.wait_master()
    epoch = cell.status(master)["epoch"]  # type: ignore[index]
    watch = Watch()
    with watch.running(cell, master, honest, path):
        time.sleep(1.0)
        flood_began = time.monotonic()
        report = _flood(cell, master)
        flood_ended = time.monotonic()
        time.sleep(1.0)
    assert report["replies"] == {"Registered": LIMIT, "ErrorReply": FLOOD - LIMIT}, report
    assert report["codes"] == ["RESOURCE_EXHAUSTED"]
    assert f"limits.registrations_per_connection_max ({LIMIT})" in report["message"]
    assert watch.write_errors == []
    assert honest.get_contents_and_stat(path).contents == str(len(watch.writes)).encode()
    seen = [status for _, status in watch.statuses]
    assert all(s is not None and s["lease_valid"] and s["epoch"] == epoch for s in seen), [
        s for s in seen if s is None or not s["lease_valid"] or s["epoch"] != epoch
    ]
    assert cell.master() == master
    _report(measure, watch, report, flood_began, flood_ended)


def _report(
    measure: Measure, watch: Watch, report: dict[str, Any], began: float, ended: float
) -> None:
    """Print and record how the flood went: the honest writes' latencies before, during
    and after it, and how long the master was seen holding its lease."""
    held = watch.statuses[-1][0] - watch.statuses[0][0]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(watch.statuses)]
    before, during = watch.latencies_ms(began - 1.0, began), watch.latencies_ms(began, ended)
    print(f"\nhonest writes before the flood: {_summary(before)}")
    print(f"honest writes during the flood: {_summary(during)}")
    print(f"honest writes after the flood:  {_summary(watch.latencies_ms(ended, ended + 1.0))}")
    print(f"the master held its lease at all {len(watch.statuses)} polls over {held:.1f} s")
    measure(f"{FLOOD} registrations on one connection, all answered", report["seconds"])
    measure("master held its lease and epoch (polled throughout)", held)
    measure("longest gap between two answered /status polls of the master", max(gaps))
    measure("honest write p50 before the flood", statistics.median(before) / 1000)
    measure("honest write p50 during the flood", statistics.median(during or [0.0]) / 1000)
    measure("honest write max during the flood", max(during or [0.0]) / 1000)
