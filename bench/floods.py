"""What the master sustains under client floods (issue 13, item 5): an honest client's
writes per second before and during each flood, and the fail-overs each caused.

A 3-replica cell is started here (`tests.integration.harness.LiveCell`: ``python -m
chubbypy.server serve`` per replica on loopback, ports the kernel picks, data in a
temporary directory). One honest `BlockingCell` writes 100 bytes to its own file back to
back, in a thread, for the whole run; another thread polls every replica's ``/status``
(every 50 ms) and counts the masterships seen. Each flood comes from a process of its own
(`tests.integration.flooder`), aimed at the master's client port:

* ``tokens``: 100,000 Authenticate requests with a wrong token, over 10 connections;
* ``acquires``: 100,001 blocking AcquireLock calls of a held lock, pipelined on one
  connection;
* ``hello``: 15,000 connections that each say hello, held 5 s;
* ``slowloris``: 2,000 connections that send half a frame, held 8 s;
* ``fds``: 19,500 connections that say nothing, held 8 s (above the default connection
  limit; with no limit, the master's descriptors run out at RLIMIT_NOFILE).

Per flood: the honest writes per second in the 3 s before it and while it ran, the
longest honest write, whether any write failed, and the masterships (epochs) seen, of
which every one after the first is a fail-over. ``--limits key=value`` sets keys of the
cell file's ``limits:`` section (leave them out to run against a tree without them).

Run from the repository root: ``.venv/bin/python bench/floods.py [--floods tokens,hello]
[--json]``. Not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.harness import LiveCell  # noqa: E402

FLOODS = {
    "tokens": ["tokens", "100000", "10"],
    "acquires": ["acquires", "100001", "LOCK"],
    "hello": ["connections", "15000", "5", "--hello"],
    "slowloris": ["connections", "2000", "8", "--half"],
    "fds": ["connections", "19500", "8"],
}
QUIET_SECONDS = 3.0
POLL_SECONDS = 0.05


class Watch:
    """The honest writer and the replicas' watcher, in threads."""

    def __init__(self, cell: LiveCell) -> None:
        self.cell = cell
        self.stop = threading.Event()
        self.writes: list[tuple[float, float]] = []
        self.errors: list[tuple[float, str]] = []
        self.epochs: list[tuple[float, str, int]] = []
        self.unanswered: list[tuple[float, str]] = []

    def write(self) -> None:
        client = self.cell.client(timeout_seconds=30)
        path = self.cell.path("honest")
        client.create(path, b"0")
        n = 0
        while not self.stop.is_set():
            n += 1
            began = time.monotonic()
            try:
                client.set_contents(path, b"x" * 100)
            except Exception as error:  # counted, and the writer goes on
                self.errors.append((began, f"{type(error).__name__}: {error}"))
                continue
            self.writes.append((began, time.monotonic() - began))

    def poll(self) -> None:
        while not self.stop.is_set():
            for rid in self.cell.running:
                now = time.monotonic()
                status = self.cell.status(rid)
                if status is None:
                    self.unanswered.append((now, rid))
                elif status["serving"]:
                    self.epochs.append((now, rid, status["epoch"]))
            time.sleep(POLL_SECONDS)

    def window(self, since: float, until: float) -> dict[str, Any]:
        writes = [took for began, took in self.writes if since <= began < until]
        epochs = sorted({(e, r) for t, r, e in self.epochs if since <= t < until})
        return {
            "writes_per_second": round(len(writes) / max(until - since, 1e-9), 1),
            "longest_write_ms": round(1000 * max(writes, default=0.0), 1),
            "failed_writes": sum(1 for t, _ in self.errors if since <= t < until),
            "masters": [f"{rid}@{epoch}" for epoch, rid in epochs],
            "unanswered_status": sum(1 for t, _ in self.unanswered if since <= t < until),
        }


def flood(cell: LiveCell, master: str, name: str) -> dict[str, Any]:
    arguments = [a if a != "LOCK" else cell.path("flood-lock") for a in FLOODS[name]]
    command = [sys.executable, "-m", "tests.integration.flooder", arguments[0]]
    command += [str(cell.ports[master].client), cell.name, *arguments[1:]]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    if done.returncode != 0:
        return {"flooder_failed": done.stderr[-2000:]}
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--floods", default=",".join(FLOODS))
    parser.add_argument("--limits", nargs="*", default=[], help="key=value of limits:")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    limits = {k: int(v) for k, v in (item.split("=", 1) for item in args.limits)}
    with tempfile.TemporaryDirectory(prefix="chubbypy-floods-") as directory:
        cell = LiveCell(Path(directory), limits=limits or None)
        cell.start()
        watch = Watch(cell)
        threads = [threading.Thread(target=watch.write), threading.Thread(target=watch.poll)]
        for thread in threads:
            thread.start()
        results = {}
        try:
            time.sleep(QUIET_SECONDS)
            results["cell"] = {"masters_at_start": watch.window(0, time.monotonic())["masters"]}
            for name in args.floods.split(","):
                master = cell.wait_master(30)
                began = time.monotonic()
                report = flood(cell, master, name)
                ended = time.monotonic()
                time.sleep(QUIET_SECONDS)
                results[name] = {
                    "before": watch.window(began - QUIET_SECONDS, began),
                    "during": watch.window(began, ended),
                    "after": watch.window(ended, ended + QUIET_SECONDS),
                    "flood_seconds": round(ended - began, 1),
                    "flood": report,
                }
                if not args.json:
                    print(name, json.dumps(results[name], indent=1), flush=True)
        finally:
            watch.stop.set()
            for thread in threads:
                thread.join()
            cell.close()
        if args.json:
            print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
