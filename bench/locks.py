"""Locks and sessions on a real cell: acquire+release cycles, and idle sessions held.

What is measured, on a 3-replica cell started here (as in ``bench/cell.py``: ``python -m
chubbypy.server serve`` per replica on loopback, the defaults of etc/cell.yaml, SQLite in
WAL mode with ``synchronous=FULL``):

* **Lock cycles.** C clients (default 32), each its own `chubbypy.client.Cell` and
  `Session`, each with a handle on its own lock (``--mode separate``) or all on one lock
  (``--mode one``), loop for D seconds: ``acquire`` (blocking) then ``release``. Each
  cycle is two log writes (the grant and the release). Figures: cycles per second, p50 and
  p99 of a cycle, CPU seconds of the three replicas per cycle.
* **Handle writes** (``--modes writes``): each client writes 100 bytes to its own file
  through its handle (``set_contents``), a numbered session call (issue 12): the session's
  record keeps its answer. Figures as for lock cycles, one write per "cycle".
* **Cached reads** (``--reads``): one client, one session, reads one file back to back
  for D seconds with its cache on, then off: reads per second and p50/p99 of a read. Then
  the price of coherence: the p50/p99 of a plain client's write to a file that ``--cachers``
  sessions (default 100) hold in their caches (each write waits for every one of them to
  acknowledge its invalidation), beside the same write with no cacher.
* **Idle sessions** (``--sessions N``): N sessions opened from one client process and kept
  alive by their KeepAlives for ``--idle-seconds``; the master's resident memory and CPU
  per session.

The clients run on one reactor in this process (the replicas are separate processes), so
the load process's CPU is reported separately. Run from the repository root:
``.venv/bin/python bench/locks.py [--clients 32] [--seconds 10] [--sessions 10000]``.
Not a test: it prints figures and asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater, react

from chubbypy.client import Cell, Session
from chubbypy.config import load_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cell import LocalCell, cpu_seconds, machine, machine_line, percentile


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def cycles(reactor: Any, local: LocalCell, args: argparse.Namespace, mode: str) -> None:
    config = load_config(local.config_path)
    cells = [Cell.from_config(reactor, config) for _ in range(args.clients)]
    sessions = await gatherResults([Session.open(c, reactor) for c in cells])
    paths = [f"/ls/{config.cell}/{mode}-{0 if mode == 'one' else i}" for i in range(args.clients)]
    handles = await gatherResults(
        [s.open_handle(p, create=True) for s, p in zip(sessions, paths, strict=True)]
    )
    latencies: list[float] = []
    stop = {"measuring": False, "done": False}

    async def loop(handle: Any) -> None:
        while not stop["done"]:
            started = time.monotonic()
            if mode == "writes":
                await handle.set_contents(b"x" * 100)
            else:
                await handle.acquire()
                await handle.release()
            if stop["measuring"]:
                latencies.append(time.monotonic() - started)

    running = [Deferred.fromCoroutine(loop(h)) for h in handles]
    await deferLater(reactor, args.warmup, lambda: None)
    master = local.wait_master()
    before_cpu, before_load = local.cpu_seconds(), time.process_time()
    before_index = (local.status(master) or {}).get("applied_index", 0)
    stop["measuring"] = True
    started = time.monotonic()
    await deferLater(reactor, args.seconds, lambda: None)
    elapsed = time.monotonic() - started
    stop["measuring"] = False
    after_cpu, after_load = local.cpu_seconds(), time.process_time()
    entries = (local.status(master) or {}).get("applied_index", 0) - before_index
    stop["done"] = True
    await gatherResults(running)
    count = len(latencies)
    ordered = sorted(latencies)
    server = sum(after_cpu[r] - before_cpu[r] for r in after_cpu)
    kind = "handles" if mode == "writes" else "locks"
    print(
        f"{kind} {mode:8}  clients {args.clients:3}  cycles {count:6}  "
        f"{count / elapsed:8,.0f}/s  p50 {percentile(ordered, 0.5) * 1000:7.2f} ms  "
        f"p99 {percentile(ordered, 0.99) * 1000:7.2f} ms  "
        f"server {server / max(count, 1) * 1e6:6.0f} µs/cycle  "
        f"load {(after_load - before_load) / max(count, 1) * 1e6:6.0f} µs/cycle  "
        f"log entries {entries / max(count, 1):.2f}/cycle (master {master})",
        flush=True,
    )
    await gatherResults([s.close() for s in sessions])
    await gatherResults([c.close() for c in cells])


async def cached_reads(reactor: Any, local: LocalCell, args: argparse.Namespace) -> None:
    config = load_config(local.config_path)
    cell = Cell.from_config(reactor, config)
    path = f"/ls/{config.cell}/cached"
    await cell.create(path, b"x" * 100)
    for cache in (True, False):
        session = await Session.open(cell, reactor, cache=cache)
        await session.get_contents_and_stat(path)
        latencies: list[float] = []
        before_load = time.process_time()
        started = time.monotonic()
        while time.monotonic() - started < args.seconds:
            begun = time.monotonic()
            await session.get_contents_and_stat(path)
            latencies.append(time.monotonic() - begun)
        elapsed = time.monotonic() - started
        load = time.process_time() - before_load
        ordered = sorted(latencies)
        print(
            f"reads {'cached' if cache else 'uncached':8}  one client  reads {len(ordered):7}  "
            f"{len(ordered) / elapsed:9,.0f}/s  p50 {percentile(ordered, 0.5) * 1e6:7.1f} µs  "
            f"p99 {percentile(ordered, 0.99) * 1e6:7.1f} µs  "
            f"client CPU {load / len(ordered) * 1e6:5.1f} µs/read",
            flush=True,
        )
        await session.close()
    for cachers in (0, args.cachers):
        readers = [await Session.open(cell, reactor) for _ in range(cachers)]
        writes: list[float] = []
        for round_ in range(50):
            await gatherResults([r.get_contents_and_stat(path) for r in readers])
            begun = time.monotonic()
            await cell.set_contents(path, str(round_).encode())
            writes.append(time.monotonic() - begun)
        ordered = sorted(writes)
        p50, p99 = percentile(ordered, 0.5) * 1000, percentile(ordered, 0.99) * 1000
        print(
            f"write to a file cached by {cachers:4} sessions: p50 {p50:6.2f} ms  p99 {p99:6.2f} ms",
            flush=True,
        )
        await gatherResults([r.close() for r in readers])
    await cell.close()


async def idle_sessions(reactor: Any, local: LocalCell, args: argparse.Namespace) -> None:
    config = load_config(local.config_path)
    cell = Cell.from_config(reactor, config, timeout_seconds=120.0)
    master = local.wait_master()
    pid = local.pid(master)
    rss_before = rss_mb(pid)
    opening = time.monotonic()
    sessions: list[Session] = []
    for start in range(0, args.sessions, 500):
        batch = range(start, min(start + 500, args.sessions))
        sessions += await gatherResults([Session.open(cell, reactor) for _ in batch])
    opened = time.monotonic() - opening
    cpu_before = cpu_seconds(pid)
    await deferLater(reactor, args.idle_seconds, lambda: None)
    cpu = cpu_seconds(pid) - cpu_before
    rss_after = rss_mb(pid)
    alive = sum(1 for s in sessions if s.state.value == "connected")
    print(
        f"idle sessions {args.sessions:6}: opened in {opened:.1f} s, {alive} connected after "
        f"{args.idle_seconds:g} s; master RSS {rss_before:.0f} -> {rss_after:.0f} MiB "
        f"({(rss_after - rss_before) * 1024 / args.sessions:.1f} KiB/session), master CPU "
        f"{cpu / args.idle_seconds * 100:.1f}% of a core "
        f"({cpu / args.idle_seconds / args.sessions * 1e6:.1f} µs/s per session)",
        flush=True,
    )
    await cell.close()


async def main(reactor: Any, args: argparse.Namespace) -> None:
    print(machine_line(machine()), flush=True)
    directory = Path(tempfile.mkdtemp(prefix="chubbypy-locks-"))
    # The idle sessions all come from one client, over one connection: past the default
    # limits on what one connection and one principal may hold.
    many = max(20_000, args.sessions)
    limits = {"sessions_per_connection_max": many, "sessions_per_principal_max": many}
    local = LocalCell(directory, limits if args.sessions else None)
    try:
        local.start()
        for mode in args.modes:
            await cycles(reactor, local, args, mode)
        if args.reads:
            await cached_reads(reactor, local, args)
        if args.sessions:
            await idle_sessions(reactor, local, args)
    finally:
        local.close()
        shutil.rmtree(directory, ignore_errors=True)


def parser() -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add = parse.add_argument
    add("--clients", type=int, default=32, help="clients, each with a session (32)")
    add("--seconds", type=float, default=10.0, help="measured seconds per mode (10)")
    add("--warmup", type=float, default=1.0, help="unmeasured seconds first (1)")
    add(
        "--modes",
        nargs="*",
        default=["separate", "one"],
        choices=("separate", "one", "writes"),
        help="separate locks, one lock, handle writes (separate one)",
    )
    add("--reads", action="store_true", help="measure cached reads and coherent writes")
    add("--cachers", type=int, default=100, help="sessions caching the written file (100)")
    add("--sessions", type=int, default=0, help="idle sessions to hold (0: skip)")
    add("--idle-seconds", type=float, default=20.0, help="how long to hold them (20)")
    return parse


if __name__ == "__main__":
    arguments = parser().parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    react(lambda reactor: Deferred.fromCoroutine(main(reactor, arguments)))
