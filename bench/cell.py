"""A real cell's throughput, latency and fail-over: three replica processes on loopback.

What is measured, on a 3-replica cell started here (``python -m chubbypy.server serve`` per
replica, ``--bootstrap``, ports the kernel picks, data in a temporary directory; the default
paxos settings of etc/cell.yaml, so SQLite in WAL mode with ``synchronous=FULL``):

* **Throughput and latency.** A closed loop of C logical clients (default 32), each its own
  `chubbypy.client.Cell` (its own connections, registration and exactly-once numbering) with
  one operation outstanding, for D seconds after a short unmeasured warm-up. ``writes``:
  `set_contents` of 100 bytes on the client's own file (created first), acknowledged once
  chosen (durable on a majority) and applied by the master. ``reads``:
  `get_contents_and_stat` of that file, answered by the master from memory under its lease
  (linearizable). Per mode: operations per second, p50 and p99 latency, and CPU seconds per
  operation of the three replica processes (utime+stime from /proc/<pid>/stat, before and
  after) and of the load process; also each process's share of a core, how busy the whole
  machine was (other processes included), and each replica's persists from ``/metrics``.
  The clients share one reactor in a child process (``--client-processes P`` spreads them
  over P), so this orchestrating process, which only starts, stops and watches, is in
  neither figure.
* **Fail-over.** One client writes sequentially (`set_contents`), given only the address
  of a replica that is not the master. After ``--kill-after`` seconds the master gets
  SIGKILL; the figure is the longest gap between two acknowledged writes. The replica is
  restarted (without ``--bootstrap``) and caught up before the next run. Then the same with
  SIGTERM: a graceful stop, in which the master resigns and names a successor.
* **Comparison** (``--vs etcd``, ``--vs zookeeper``): the same workloads against a local
  3-member etcd cluster (Debian's etcd-server; its HTTP/JSON gateway, ``/v3/kv/put`` and
  linearizable ``/v3/kv/range``, one keep-alive connection per logical client) or ZooKeeper
  ensemble (Debian's zookeeper; kazoo's ``set``/``get``, one session per load process),
  every client on the leader, from the same kind of Twisted load process.

Run from the repository root: ``.venv/bin/python bench/cell.py [--clients 32] [--seconds 10]
[--mode writes|reads|both] [--failover 5] [--vs etcd] [--json] [--py-spy DIR]``.
Not a test: it prints figures and asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import io
import json
import math
import os
import platform
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any, ClassVar, Final, Protocol, TypeVar

import yaml
from attrs import frozen

_T = TypeVar("_T")

REPLICA_IDS: Final = ("r1", "r2", "r3")
VALUE_BYTES: Final = 100
START_SECONDS: Final = 30.0
"""From starting the replicas to one serving; generous, as another job may share the CPUs."""
STOP_SECONDS: Final = 10.0
POLL_SECONDS: Final = 0.01
WORKER_READY_SECONDS: Final = 60.0
"""For a load process to connect, register and prepare its files."""
WORKER_DRAIN_SECONDS: Final = 30.0
"""After its measured time, for a load process to finish its operations and report."""
PORT_ATTEMPTS: Final = 3
CLIENT_TIMEOUT_SECONDS: Final = 10.0
"""Each client operation's deadline (`Cell`'s default)."""
PY_SPY_TOP: Final = 25
COUNTERS: Final = (
    "chubbypy_fsync_seconds_sum",
    "chubbypy_fsync_seconds_count",
    "chubbypy_batch_commands_sum",
    "chubbypy_batch_commands_count",
)
"""Counters of /metrics read before and after each run: persists (transactions with their
fsync) and their time, log entries applied and the commands in them."""


# ============================================================================ the machine


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, object]:
    return {
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
    }


def machine_line(info: dict[str, object]) -> str:
    return "machine: {platform}; {python}; {cpu}; cpu_count={cpu_count}".format(**info)


def cpu_seconds(pid: int) -> float:
    """utime + stime of process `pid` (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # After the command name: state is field 3 of proc(5), utime 14 and stime 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> tuple[float, float]:
    """Busy and total CPU seconds of the whole machine (every CPU) since boot, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(f) for f in stat.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is already in user).
    idle = fields[3] + fields[4]
    total = sum(fields[:8])
    tick = os.sysconf("SC_CLK_TCK")
    return (total - idle) / tick, total / tick


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports that were free a moment ago (the kernel's choice)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def poll(condition: Callable[[], _T | None], what: str, timeout: float) -> _T:
    """The first truthy value of `condition`, polled until `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise RuntimeError(f"not within {timeout:g} s: {what}")
        time.sleep(POLL_SECONDS)


def http_json(url: str, body: dict[str, Any] | None = None, timeout: float = 2.0) -> Any:
    """GET `url` (POST `body` as JSON if given) and decode the JSON answer; None on failure."""
    data = None if body is None else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(url, data=data, timeout=timeout) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


# ============================================================================ a chubbypy cell


class Servers(Protocol):
    """The server processes of a system under test, as `run_load` observes them."""

    def cpu_seconds(self) -> dict[str, float]:
        """Each running server process's CPU seconds so far."""
        ...

    def counters(self) -> dict[str, dict[str, float]]:
        """Each server's cumulative counters worth a difference over a run (may be empty)."""
        ...


class LocalCell:
    """Three chubbypy replica processes on loopback, with their files in `directory`."""

    def __init__(self, directory: Path, limits: dict[str, int] | None = None) -> None:
        self.directory = directory
        self.limits = limits
        """The cell file's ``limits:`` section, if not the defaults."""
        self.name = f"bench{os.getpid() % 100000}"
        self.config_path = directory / "cell.yaml"
        self.data_dir = directory / "data"
        self.ports: dict[str, tuple[int, int, int]] = {}
        """Each replica's peer, client and admin port."""
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def client_address(self, rid: str) -> str:
        return f"tcp:host=127.0.0.1:port={self.ports[rid][1]}"

    def write_config(self) -> None:
        ports = free_ports(3 * len(REPLICA_IDS))
        self.ports = {rid: tuple(ports[3 * i : 3 * i + 3]) for i, rid in enumerate(REPLICA_IDS)}  # type: ignore[misc]
        document: dict[str, object] = {
            "cell": self.name,
            "replicas": [
                {
                    "id": rid,
                    "peer": f"tcp:{peer}:interface=127.0.0.1",
                    "client": f"tcp:{client}:interface=127.0.0.1",
                    "admin": f"tcp:{admin}:interface=127.0.0.1",
                }
                for rid, (peer, client, admin) in self.ports.items()
            ],
            "data_dir": str(self.data_dir),
        }
        if self.limits:
            document["limits"] = self.limits
        self.config_path.write_text(yaml.safe_dump(document, sort_keys=False))
        # The cell's own handle and peer keys, as `chubbypy cell` makes them on first start.
        from chubbypy.config import load_config
        from chubbypy.server._secrets import create_secrets

        create_secrets(load_config(self.config_path))

    def start(self) -> str:
        """Start a new cell, every replica with --bootstrap; the replica that serves first."""
        for _ in range(PORT_ATTEMPTS):
            self.write_config()
            for rid in REPLICA_IDS:
                self.start_replica(rid, bootstrap=True)
            try:
                return self.wait_master()
            except RuntimeError:
                if "cannot listen" not in self.logs():
                    raise
            # Another process took one of the ports between our choosing it and the bind.
            self.close()
            shutil.rmtree(self.data_dir, ignore_errors=True)
        raise RuntimeError(f"no free ports in {PORT_ATTEMPTS} attempts")

    def start_replica(self, rid: str, *, bootstrap: bool = False) -> None:
        command = [sys.executable, "-m", "chubbypy.server", "serve"]
        command += ["--config", str(self.config_path), "--replica", rid]
        if bootstrap:
            command.append("--bootstrap")
        with (self.directory / f"{rid}.log").open("ab") as log:
            self.processes[rid] = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )

    def kill(self, rid: str) -> None:
        """SIGKILL: the replica stops at once, whatever it was doing."""
        process = self.processes.pop(rid)
        process.kill()
        process.wait()

    def terminate(self, rid: str) -> subprocess.Popen[bytes]:
        """SIGTERM (a graceful stop) without waiting; the process."""
        process = self.processes.pop(rid)
        process.send_signal(signal.SIGTERM)
        return process

    def pid(self, rid: str) -> int:
        return self.processes[rid].pid

    def cpu_seconds(self) -> dict[str, float]:
        return {rid: cpu_seconds(process.pid) for rid, process in self.processes.items()}

    def status(self, rid: str) -> dict[str, Any] | None:
        status = http_json(f"http://127.0.0.1:{self.ports[rid][2]}/status")
        return status if isinstance(status, dict) else None

    def metrics(self, rid: str) -> str:
        url = f"http://127.0.0.1:{self.ports[rid][2]}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=2.0) as response:
                return str(response.read().decode())
        except OSError:
            return ""

    def counters(self) -> dict[str, dict[str, float]]:
        """Each replica's persist (one transaction and fsync per Ready) and batch histograms'
        sums and counts, from ``/metrics``."""
        found = {}
        for rid in self.processes:
            text = self.metrics(rid)
            found[rid] = {
                name: float(value)
                for name, value in (line.split(" ", 1) for line in text.splitlines())
                if name in COUNTERS
            }
        return found

    def master(self, among: Sequence[str] | None = None) -> str | None:
        """The one running replica (of `among`) that says it serves, or None."""
        self.check_alive()
        candidates = self.processes if among is None else among
        serving = [r for r in candidates if (s := self.status(r)) is not None and s["serving"]]
        return serving[0] if len(serving) == 1 else None

    def wait_master(
        self, timeout: float = START_SECONDS, among: Sequence[str] | None = None
    ) -> str:
        return poll(lambda: self.master(among), "a replica serves", timeout)

    def wait_caught_up(self, rid: str, timeout: float = START_SECONDS) -> None:
        """Until `rid` has applied what the master had applied when this was called."""
        master = self.wait_master(timeout)
        target = (self.status(master) or {}).get("applied_index", 0)

        def caught_up() -> bool:
            self.check_alive()
            status = self.status(rid)
            return status is not None and status["applied_index"] >= target

        poll(caught_up, f"{rid} catches up to index {target}", timeout)

    def check_alive(self) -> None:
        for rid, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{rid} exited with status {process.returncode}\n{self.logs()}")

    def logs(self, lines: int = 20) -> str:
        parts = []
        for rid in REPLICA_IDS:
            path = self.directory / f"{rid}.log"
            text = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"--- {rid}.log\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(parts)

    def close(self) -> None:
        """SIGTERM every replica; SIGKILL those still running after `STOP_SECONDS`."""
        processes, self.processes = self.processes, {}
        stop_all(list(processes.values()))


def stop_all(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ============================================================================ an etcd cluster


class EtcdCluster:
    """Three etcd members on loopback (the Debian package's /usr/bin/etcd), for comparison."""

    def __init__(self, directory: Path, executable: str) -> None:
        self.directory = directory
        self.executable = executable
        self.ports: dict[str, tuple[int, int]] = {}
        """Each member's peer and client port."""
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> str:
        """Start the cluster; the client URL of its leader."""
        for _ in range(PORT_ATTEMPTS):
            ports = free_ports(2 * len(REPLICA_IDS))
            self.ports = {
                rid: (ports[2 * i], ports[2 * i + 1]) for i, rid in enumerate(REPLICA_IDS)
            }
            for rid in REPLICA_IDS:
                self._start_member(rid)
            try:
                return poll(self.leader_url, "an etcd leader", START_SECONDS)
            except RuntimeError:
                if all(p.poll() is None for p in self.processes.values()):
                    raise
            self.close()
            shutil.rmtree(self.directory / "data", ignore_errors=True)
        raise RuntimeError(f"etcd did not start in {PORT_ATTEMPTS} attempts")

    def _start_member(self, rid: str) -> None:
        peer, client = self.ports[rid]
        cluster = ",".join(f"{r}=http://127.0.0.1:{p}" for r, (p, _) in self.ports.items())
        command = [
            self.executable,
            f"--name={rid}",
            f"--data-dir={self.directory / 'data' / rid}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--listen-client-urls=http://127.0.0.1:{client}",
            f"--advertise-client-urls=http://127.0.0.1:{client}",
            f"--initial-cluster={cluster}",
            "--initial-cluster-state=new",
            f"--initial-cluster-token=bench{os.getpid()}",
            "--log-level=warn",
            "--logger=zap",
        ]
        with (self.directory / f"etcd-{rid}.log").open("ab") as log:
            self.processes[rid] = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                start_new_session=True,
            )

    def address(self, rid: str) -> str:
        """Member `rid`'s client URL."""
        return f"http://127.0.0.1:{self.ports[rid][1]}"

    def leader_url(self) -> str | None:
        for rid in self.processes:
            status = http_json(self.address(rid) + "/v3/maintenance/status", {})
            if not status or "leader" not in status:
                continue
            if status["leader"] == status["header"]["member_id"]:
                return self.address(rid)
        return None

    def cpu_seconds(self) -> dict[str, float]:
        return {rid: cpu_seconds(process.pid) for rid, process in self.processes.items()}

    def counters(self) -> dict[str, dict[str, float]]:
        return {}

    def close(self) -> None:
        processes, self.processes = self.processes, {}
        stop_all(list(processes.values()))


# ============================================================================ a ZooKeeper ensemble


class ZooKeeperEnsemble:
    """Three ZooKeeper servers on loopback (the Debian package's jar), for comparison."""

    JAR: Final = "/usr/share/java/zookeeper.jar"

    def __init__(self, directory: Path, java: str) -> None:
        self.directory = directory
        self.java = java
        self.ports: dict[str, tuple[int, int, int]] = {}
        """Each server's client, quorum and election port."""
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> str:
        """Start the ensemble; the leader's client address (host:port)."""
        for _ in range(PORT_ATTEMPTS):
            ports = free_ports(3 * len(REPLICA_IDS))
            self.ports = {
                rid: (ports[3 * i], ports[3 * i + 1], ports[3 * i + 2])
                for i, rid in enumerate(REPLICA_IDS)
            }
            for number, rid in enumerate(REPLICA_IDS, 1):
                self._start_server(number, rid)
            try:
                return poll(self.leader_address, "a ZooKeeper leader", START_SECONDS)
            except RuntimeError:
                if all(p.poll() is None for p in self.processes.values()):
                    raise
            self.close()
            shutil.rmtree(self.directory / "data", ignore_errors=True)
        raise RuntimeError(f"ZooKeeper did not start in {PORT_ATTEMPTS} attempts")

    def _start_server(self, number: int, rid: str) -> None:
        data = self.directory / "data" / rid
        data.mkdir(parents=True, exist_ok=True)
        (data / "myid").write_text(f"{number}\n")
        servers = [
            f"server.{n}=127.0.0.1:{self.ports[r][1]}:{self.ports[r][2]}"
            for n, r in enumerate(REPLICA_IDS, 1)
        ]
        settings = [
            "tickTime=2000",
            "initLimit=10",
            "syncLimit=5",
            f"dataDir={data}",
            f"clientPort={self.ports[rid][0]}",
            "clientPortAddress=127.0.0.1",
            "maxClientCnxns=0",
            "admin.enableServer=false",
            "4lw.commands.whitelist=srvr",
            *servers,
        ]
        config = self.directory / f"zoo-{rid}.cfg"
        config.write_text("\n".join(settings) + "\n")
        command = [self.java, "-Xmx512m", "-cp", self.JAR]
        command += ["org.apache.zookeeper.server.quorum.QuorumPeerMain", str(config)]
        with (self.directory / f"zk-{rid}.log").open("ab") as log:
            self.processes[rid] = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                start_new_session=True,
            )

    def address(self, rid: str) -> str:
        return f"127.0.0.1:{self.ports[rid][0]}"

    def leader_address(self) -> str | None:
        for rid in self.processes:
            if "Mode: leader" in four_letter_word(self.ports[rid][0], b"srvr"):
                return self.address(rid)
        return None

    def cpu_seconds(self) -> dict[str, float]:
        return {rid: cpu_seconds(process.pid) for rid, process in self.processes.items()}

    def counters(self) -> dict[str, dict[str, float]]:
        return {}

    def close(self) -> None:
        processes, self.processes = self.processes, {}
        stop_all(list(processes.values()))


def four_letter_word(port: int, word: bytes) -> str:
    """ZooKeeper's answer to a four-letter command on `port` ("" if it does not answer)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
            sock.sendall(word)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except OSError:
        return ""
    return b"".join(chunks).decode(errors="replace")


# ============================================================================ load processes


class LoadProcess:
    """A child running `load_main`: it prepares, says "ready", starts on "go", reports JSON."""

    def __init__(self, spec: dict[str, Any], log: Path) -> None:
        self.spec = spec
        with log.open("ab") as errors:
            self.process = subprocess.Popen(
                [sys.executable, __file__, "--load-worker", json.dumps(spec)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )
        self._buffer = b""

    def read_line(self, timeout: float) -> str:
        """The child's next line of output; `RuntimeError` if none within `timeout`."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        descriptor = self.process.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            readable, _, _ = select.select([descriptor], [], [], max(0.0, remaining))
            chunk = os.read(descriptor, 1 << 20) if readable else b""
            if not chunk:
                status = self.process.poll()
                if readable or remaining <= 0 or status is not None:
                    raise RuntimeError(f"load process: no line within {timeout:g} s ({status})")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def wait_ready(self) -> None:
        line = self.read_line(WORKER_READY_SECONDS)
        if line != "ready":
            raise RuntimeError(f"load process said {line!r} instead of ready")

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"go\n")
        self.process.stdin.flush()

    def result(self, timeout: float) -> dict[str, Any]:
        document = json.loads(self.read_line(timeout))
        self.process.wait(STOP_SECONDS)
        assert isinstance(document, dict)
        return document

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@frozen
class ModeResult:
    """One workload's figures."""

    system: str
    mode: str
    clients: int
    client_processes: int
    seconds: float
    """From "go" to the last acknowledged operation."""
    operations: int
    errors: dict[str, int]
    latencies_ms: Sequence[float]
    """Every operation's latency, ascending."""
    server_cpu: dict[str, float]
    """Each server process's CPU seconds over the run, the master's (leader's) first."""
    client_cpu: float
    """CPU seconds of the load process(es) over the measured time."""
    wall_seconds: float
    """From just before "go" to every load process's report: the window of the CPU figures."""
    machine_busy: float
    """Busy CPU seconds of the whole machine (every process) over the run."""
    counters: dict[str, dict[str, float]]
    """Each server's counter differences over the run (`LocalCell.counters`)."""
    profiles: tuple[Path, ...] = ()
    """py-spy's recordings of the run (``--py-spy``)."""

    @property
    def ops_per_second(self) -> float:
        return self.operations / self.seconds

    def cpu_us_per_op(self, seconds: float) -> float:
        return 1e6 * seconds / self.operations if self.operations else float("nan")

    def as_dict(self) -> dict[str, Any]:
        latencies = self.latencies_ms
        return {
            "system": self.system,
            "mode": self.mode,
            "clients": self.clients,
            "client_processes": self.client_processes,
            "seconds": self.seconds,
            "operations": self.operations,
            "errors": self.errors,
            "ops_per_second": self.ops_per_second,
            "p50_ms": percentile(latencies, 0.50),
            "p99_ms": percentile(latencies, 0.99),
            "max_ms": latencies[-1] if latencies else float("nan"),
            "server_cpu_us_per_op": self.cpu_us_per_op(sum(self.server_cpu.values())),
            "client_cpu_us_per_op": self.cpu_us_per_op(self.client_cpu),
            "server_cpu_seconds": self.server_cpu,
            "client_cpu_seconds": self.client_cpu,
            "wall_seconds": self.wall_seconds,
            "machine_busy_cpu_seconds": self.machine_busy,
            "counters": self.counters,
        }


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of an ascending sequence."""
    if not ordered:
        return float("nan")
    rank = math.ceil(fraction * len(ordered))
    return ordered[max(0, min(len(ordered), rank) - 1)]


def split(total: int, parts: int) -> list[int]:
    """`total` as `parts` near-equal positive counts."""
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run_load(
    system: str,
    mode: str,
    target: dict[str, Any],
    servers: Servers,
    master: str,
    args: argparse.Namespace,
    directory: Path,
    py_spy: int | None = None,
) -> ModeResult:
    """Run one closed-loop workload from load processes; its figures.

    `target` says where the clients go (it is passed on to `load_main`); `master` names the
    server listed first. With `py_spy` (the master's pid) and ``--py-spy DIR``, py-spy records
    the master and the first load process into DIR during the run.
    """
    workers = []
    first = 0
    for index, count in enumerate(split(args.clients, args.client_processes)):
        spec = {**target, "mode": mode, "clients": count, "first": first}
        spec.update(seconds=args.seconds, warmup=args.warmup)
        spec["tag"] = f"p{index}"
        workers.append(LoadProcess(spec, directory / "load.log"))
        first += count
    recorders: list[subprocess.Popen[bytes]] = []
    profiles: tuple[Path, ...] = ()
    try:
        for worker in workers:
            worker.wait_ready()
        cpu, counters, busy = servers.cpu_seconds(), servers.counters(), machine_cpu_seconds()[0]
        started = time.monotonic()
        for worker in workers:
            worker.go()
        if py_spy is not None and args.py_spy is not None:
            pids = {"master": py_spy, "load": workers[0].process.pid}
            label = f"{system}-{mode}"
            recorders = start_py_spy(args.py_spy, label, pids, args.seconds)
            profiles = tuple(args.py_spy / f"{label}-{name}.txt" for name in pids)
        results = [w.result(args.seconds + WORKER_DRAIN_SECONDS) for w in workers]
        busy = machine_cpu_seconds()[0] - busy
        wall = time.monotonic() - started
        cpu = difference(servers.cpu_seconds(), cpu)
        counters = {
            rid: difference(c, counters.get(rid, {})) for rid, c in servers.counters().items()
        }
    finally:
        for worker in workers:
            worker.close()
        for recorder in recorders:
            recorder.wait()
    for result in results:
        if "failed" in result:
            raise RuntimeError(f"a load process failed: {result['failed']}")
    errors: collections.Counter[str] = collections.Counter()
    for result in results:
        errors.update(result["errors"])
    latencies = sorted(us / 1000 for result in results for us in result["latencies_us"])
    return ModeResult(
        system=system,
        mode=mode,
        clients=args.clients,
        client_processes=len(results),
        seconds=max(result["seconds"] for result in results),
        operations=len(latencies),
        errors=dict(errors),
        latencies_ms=latencies,
        server_cpu=dict(sorted(cpu.items(), key=lambda item: item[0] != master)),
        client_cpu=sum(result["cpu_seconds"] for result in results),
        wall_seconds=wall,
        machine_busy=busy,
        counters=counters,
        profiles=profiles,
    )


def difference(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {key: value - before.get(key, 0.0) for key, value in after.items()}


def start_py_spy(
    directory: Path, label: str, pids: dict[str, int], seconds: float
) -> list[subprocess.Popen[bytes]]:
    """py-spy record each of `pids` for most of the run, in raw (collapsed) form."""
    executable = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    duration = max(1, int(seconds) - 1)
    recorders = []
    for name, pid in pids.items():
        output = directory / f"{label}-{name}.txt"
        command = [executable, "record", "-p", str(pid), "-d", str(duration), "-r", "200"]
        command += ["--format", "raw", "-o", str(output), "--nonblocking", "--threads"]
        recorders.append(
            subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
    return recorders


def py_spy_summary(path: Path, top: int = PY_SPY_TOP) -> str:
    """Samples per thread, and the functions most often on top of the stack (self) with their
    share of samples anywhere in the stack (total). Idle samples are not recorded."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        thread, *rest = stack.split(";")
        frames = [_short_frame(frame) for frame in rest] or ["?"]
        samples += count
        threads[thread.partition(": ")[2] or thread] += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    if not samples:
        return f"{path.name}: no samples"
    shares = ", ".join(f"{name} {100 * n / samples:.0f}%" for name, n in threads.most_common())
    lines = [f"{path.name}: {samples} samples ({shares}); self% total% function"]
    for frame, count in own.most_common(top):
        lines.append(
            f"  {100 * count / samples:5.1f}% {100 * total[frame] / samples:5.1f}%  {frame}"
        )
    return "\n".join(lines)


def _short_frame(frame: str) -> str:
    """``function (path/to/module.py:line)`` as ``function (module.py)``."""
    name, _, where = frame.partition(" (")
    module = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({'/'.join(Path(module).parts[-2:])})"


# ============================================================================ fail-over


@frozen
class FailoverRun:
    """One kill (or graceful stop) of the master under a sequential writer."""

    how: str
    stopped: str
    """The master that was killed or stopped."""
    new_master: str
    seed: str
    """The replica whose address was the writer's only one."""
    first_write_ms: float
    """The writer's first write: through the seed to the master (locate, register, create)."""
    not_master_replies: int
    """NOT_MASTER replies the seed gave during the run (the client locates before writing)."""
    writes: int
    errors: dict[str, int]
    gap_seconds: float
    """The longest gap between two acknowledged writes."""
    gap_start_seconds: float
    """When that gap began (its last acknowledgement before), from the kill or SIGTERM."""
    serving_seconds: float
    """From the kill or SIGTERM to another replica saying it serves (polled every 10 ms)."""
    write_p50_ms: float
    """The writer's median write latency (the fail-over is one write among hundreds)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "how": self.how,
            "stopped": self.stopped,
            "new_master": self.new_master,
            "seed": self.seed,
            "first_write_ms": self.first_write_ms,
            "not_master_replies": self.not_master_replies,
            "writes": self.writes,
            "errors": self.errors,
            "gap_seconds": self.gap_seconds,
            "gap_start_seconds": self.gap_start_seconds,
            "gap_end_seconds": self.gap_start_seconds + self.gap_seconds,
            "serving_seconds": self.serving_seconds,
            "write_p50_ms": self.write_p50_ms,
        }


def not_master_errors(cell: LocalCell, rid: str) -> int:
    """The NOT_MASTER refusals replica `rid` has counted since it started."""
    for line in cell.metrics(rid).splitlines():
        if line.startswith("chubbypy_client_errors_total") and 'code="not_master"' in line:
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


def failover_run(cell: LocalCell, how: str, args: argparse.Namespace) -> FailoverRun:
    """One writer, one kill (how="kill") or SIGTERM (how="term") of the master after
    `args.kill_after` seconds; the replica is restarted and caught up afterwards."""
    master = cell.wait_master()
    seed = next(rid for rid in REPLICA_IDS if rid != master and rid in cell.processes)
    not_master_before = not_master_errors(cell, seed)
    spec = {
        "system": "chubbypy",
        "mode": "failover",
        "addresses": [cell.client_address(seed)],
        "cell": cell.name,
        "clients": 1,
        "first": 0,
        "tag": f"f{how}",
        "seconds": args.kill_after + args.after_kill,
        "backoff_max": args.backoff_max,
    }
    writer = LoadProcess(spec, cell.directory / "load.log")
    stopping = None
    try:
        writer.wait_ready()
        writer.go()
        time.sleep(args.kill_after)
        current = cell.wait_master()
        others = [rid for rid in cell.processes if rid != current]
        stopped_at = time.monotonic()
        if how == "kill":
            cell.kill(current)
        else:
            stopping = cell.terminate(current)
        new_master = cell.wait_master(START_SECONDS, among=others)
        serving = time.monotonic() - stopped_at
        result = writer.result(args.kill_after + args.after_kill + WORKER_DRAIN_SECONDS)
    finally:
        writer.close()
    if stopping is not None:
        stopping.wait(STOP_SECONDS)
    not_master = not_master_errors(cell, seed) - not_master_before
    cell.start_replica(current)
    cell.wait_caught_up(current)
    acks = result["acks"]
    gaps = [(b - a, a) for a, b in pairwise(acks)] or [(float("nan"), stopped_at)]
    gap, gap_start = max(gaps)
    return FailoverRun(
        how=how,
        stopped=current,
        new_master=new_master,
        seed=seed,
        first_write_ms=result["first_ms"],
        not_master_replies=not_master,
        writes=len(acks),
        errors=result["errors"],
        gap_seconds=gap,
        gap_start_seconds=gap_start - stopped_at,
        serving_seconds=serving,
        write_p50_ms=percentile(sorted(us / 1000 for us in result["latencies_us"]), 0.5),
    )


# ============================================================================ the load process


def load_main(spec: dict[str, Any]) -> None:
    """The child's side (``--load-worker SPEC``): run one workload on its own reactor."""
    from twisted.internet import reactor as installed
    from twisted.internet.defer import Deferred

    reactor: Any = installed

    def run() -> None:
        done = Deferred.fromCoroutine(_load(reactor, spec))

        def report(result: dict[str, Any]) -> None:
            sys.stdout.write(json.dumps(result) + "\n")
            sys.stdout.flush()

        def failed(failure: Any) -> None:
            sys.stderr.write(failure.getTraceback())
            sys.stdout.write(json.dumps({"failed": failure.getErrorMessage()}) + "\n")
            sys.stdout.flush()

        done.addCallbacks(report, failed)
        done.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(run)
    reactor.run(installSignalHandlers=False)


async def _load(reactor: Any, spec: dict[str, Any]) -> dict[str, Any]:
    from twisted.internet.defer import ensureDeferred, gatherResults
    from twisted.internet.threads import deferToThread

    clients = [_client(reactor, spec, spec["first"] + i) for i in range(spec["clients"])]
    await gatherResults([ensureDeferred(client.prepare()) for client in clients])
    if spec.get("warmup", 0) > 0:
        # Unmeasured: connections, caches and (for ZooKeeper) the JIT settle first.
        ends_at = time.monotonic() + spec["warmup"]
        discard: collections.Counter[str] = collections.Counter()
        await gatherResults([ensureDeferred(c.loop(ends_at, [], [], discard)) for c in clients])
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await deferToThread(sys.stdin.readline)
    cpu_started, started = time.process_time(), time.monotonic()
    ends_at = started + spec["seconds"]
    latencies: list[int] = []
    acks: list[float] = []
    errors: collections.Counter[str] = collections.Counter()
    loops = [ensureDeferred(c.loop(ends_at, latencies, acks, errors)) for c in clients]
    await gatherResults(loops)
    seconds = max(acks, default=time.monotonic()) - started
    cpu = time.process_time() - cpu_started
    await gatherResults([ensureDeferred(client.close()) for client in clients])
    return {
        "latencies_us": latencies,
        "acks": acks if spec["mode"] == "failover" else [],
        "errors": dict(errors),
        "seconds": seconds,
        "cpu_seconds": cpu,
        "first_ms": getattr(clients[0], "first_ms", float("nan")),
    }


def value_for(index: int) -> bytes:
    """Client `index`'s value: `VALUE_BYTES` bytes."""
    return ((b"%06d" % index) * (VALUE_BYTES // 6 + 1))[:VALUE_BYTES]


def _client(reactor: Any, spec: dict[str, Any], index: int) -> Any:
    if spec["system"] == "etcd":
        return EtcdClient(reactor, spec, index)
    if spec["system"] == "zookeeper":
        return ZooKeeperClient(reactor, spec, index)
    return ChubbyClient(reactor, spec, index)


class ChubbyClient:
    """One logical client: its own `Cell`, so its own registration and write numbering."""

    def __init__(self, reactor: Any, spec: dict[str, Any], index: int) -> None:
        from chubbypy.client import Cell

        options: dict[str, Any] = {"timeout_seconds": CLIENT_TIMEOUT_SECONDS}
        if spec.get("backoff_max") is not None:
            options["backoff_max_seconds"] = spec["backoff_max"]
        name = f"bench-{spec['tag']}-{index}"
        self._cell = Cell(reactor, spec["addresses"], spec["cell"], name=name, **options)
        self.first_ms = float("nan")
        """The first write's latency, in fail-over mode (through the seed to the master)."""
        self._mode = spec["mode"]
        self._path = f"/ls/{spec['cell']}/bench-{index}"
        self._value = value_for(index)

    async def prepare(self) -> None:
        """Create the file (it may exist from an earlier mode); a read warms the connection."""
        from chubbypy.protocol.errors import NodeExists

        if self._mode == "failover":
            return  # the first write is part of the measurement
        with contextlib.suppress(NodeExists):
            await self._cell.create(self._path, self._value)
        await self._cell.get_contents_and_stat(self._path)

    async def loop(
        self,
        ends_at: float,
        latencies: list[int],
        acks: list[float],
        errors: collections.Counter[str],
    ) -> None:
        from chubbypy.protocol.errors import NodeExists

        if self._mode == "failover":
            started = time.monotonic()
            with contextlib.suppress(NodeExists):
                await self._cell.create(self._path, self._value)
            acks.append(time.monotonic())
            self.first_ms = 1000 * (acks[-1] - started)
        operation = (
            self._cell.get_contents_and_stat
            if self._mode == "reads"
            else lambda path: self._cell.set_contents(path, self._value)
        )
        clock = time.monotonic
        while (started := clock()) < ends_at:
            try:
                await operation(self._path)
            except Exception as error:  # a benchmark counts failures instead of stopping
                errors[type(error).__name__] += 1
                continue
            done = clock()
            latencies.append(int((done - started) * 1e6))
            acks.append(done)

    async def close(self) -> None:
        await self._cell.close()


class EtcdClient:
    """One logical client of etcd's HTTP/JSON gateway, on its own persistent connection."""

    def __init__(self, reactor: Any, spec: dict[str, Any], index: int) -> None:
        from twisted.web.client import Agent, HTTPConnectionPool

        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = 1
        self._agent = Agent(reactor, pool=self._pool)
        self._url = spec["addresses"][0]
        self._mode = spec["mode"]
        key = base64.b64encode(f"/bench-{index}".encode()).decode()
        value = base64.b64encode(value_for(index)).decode()
        self._put = json.dumps({"key": key, "value": value}).encode()
        self._range = json.dumps({"key": key}).encode()

    async def _post(self, path: str, body: bytes) -> dict[str, Any]:
        from twisted.web.client import FileBodyProducer, readBody
        from twisted.web.http_headers import Headers

        response = await self._agent.request(
            b"POST",
            (self._url + path).encode(),
            Headers({b"content-type": [b"application/json"]}),
            FileBodyProducer(io.BytesIO(body)),
        )
        answer = await readBody(response)
        if response.code != 200:
            raise RuntimeError(f"etcd answered {response.code}: {answer[:200]!r}")
        document = json.loads(answer)
        assert isinstance(document, dict)
        return document

    async def prepare(self) -> None:
        await self._post("/v3/kv/put", self._put)
        await self._post("/v3/kv/range", self._range)

    async def loop(
        self,
        ends_at: float,
        latencies: list[int],
        acks: list[float],
        errors: collections.Counter[str],
    ) -> None:
        path, body = (
            ("/v3/kv/range", self._range) if self._mode == "reads" else ("/v3/kv/put", self._put)
        )
        clock = time.monotonic
        while (started := clock()) < ends_at:
            try:
                await self._post(path, body)
            except Exception as error:
                errors[type(error).__name__] += 1
                continue
            done = clock()
            latencies.append(int((done - started) * 1e6))
            acks.append(done)

    async def close(self) -> None:
        await self._pool.closeCachedConnections()


class ZooKeeperClient:
    """One logical client of ZooKeeper through kazoo. The logical clients of a load process
    share one ZooKeeper session (kazoo pipelines requests on its connection, as an
    application would); kazoo's threads hand each result to the reactor."""

    _shared: ClassVar[dict[str, Any]] = {}

    def __init__(self, reactor: Any, spec: dict[str, Any], index: int) -> None:
        self._reactor = reactor
        self._address = spec["addresses"][0]
        self._mode = spec["mode"]
        self._path = f"/bench-{index}"
        self._value = value_for(index)

    def _session(self) -> Any:
        from kazoo.client import KazooClient  # type: ignore[import-untyped]

        session = self._shared.get(self._address)
        if session is None:
            session = KazooClient(hosts=self._address, timeout=CLIENT_TIMEOUT_SECONDS)
            session.start(timeout=START_SECONDS)
            self._shared[self._address] = session
        return session

    def _await(self, pending: Any) -> Any:
        """A Deferred of a kazoo asynchronous result, fired on the reactor thread."""
        from twisted.internet.defer import Deferred

        done: Deferred[Any] = Deferred()

        def fire(result: Any) -> None:
            if result.successful():
                done.callback(result.value)
            else:
                done.errback(result.exception)

        pending.rawlink(lambda result: self._reactor.callFromThread(fire, result))
        return done

    async def prepare(self) -> None:
        from kazoo.exceptions import NodeExistsError  # type: ignore[import-untyped]

        session = self._session()
        with contextlib.suppress(NodeExistsError):
            await self._await(session.create_async(self._path, self._value))
        await self._await(session.get_async(self._path))

    async def loop(
        self,
        ends_at: float,
        latencies: list[int],
        acks: list[float],
        errors: collections.Counter[str],
    ) -> None:
        session = self._session()
        clock = time.monotonic
        while (started := clock()) < ends_at:
            if self._mode == "reads":
                pending = session.get_async(self._path)
            else:
                pending = session.set_async(self._path, self._value)
            try:
                await self._await(pending)
            except Exception as error:
                errors[type(error).__name__] += 1
                continue
            done = clock()
            latencies.append(int((done - started) * 1e6))
            acks.append(done)

    async def close(self) -> None:
        session = self._shared.pop(self._address, None)
        if session is not None:
            session.stop()
            session.close()


# ============================================================================ reports


THROUGHPUT_COLUMNS = (
    ("system", "system", "{}"),
    ("mode", "mode", "{}"),
    ("clients", "clients", "{}"),
    ("ops", "operations", "{}"),
    ("ops/s", "ops_per_second", "{:,.0f}"),
    ("p50 ms", "p50_ms", "{:.2f}"),
    ("p99 ms", "p99_ms", "{:.2f}"),
    ("max ms", "max_ms", "{:.1f}"),
    ("server µs/op", "server_cpu_us_per_op", "{:.0f}"),
    ("client µs/op", "client_cpu_us_per_op", "{:.0f}"),
    ("errors", "errors", "{}"),
)


def shown(form: str, value: object) -> str:
    """`value` in `form`; a dict of error counts as ``Name:count ...`` (0 if empty)."""
    if isinstance(value, dict):
        return " ".join(f"{name}:{count}" for name, count in value.items()) or "0"
    return form.format(value)


def table(columns: Sequence[tuple[str, str, str]], rows: Sequence[dict[str, Any]]) -> str:
    cells = [[title for title, _, _ in columns]]
    cells += [[shown(form, row[key]) for _, key, form in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in cells
    )


def detail_lines(result: ModeResult) -> str:
    """Where the CPU went (each process as a share of one core, over the run's wall time),
    and for chubbypy how often each replica persisted and how full its log entries were."""
    wall = result.wall_seconds
    role = " (master)" if result.system == "chubbypy" else " (leader)"
    shares = [
        f"{rid}{role if i == 0 else ''} {100 * cpu / wall:.0f}%"
        for i, (rid, cpu) in enumerate(result.server_cpu.items())
    ]
    shares.append(f"load {100 * result.client_cpu / wall:.0f}%")
    ours = sum(result.server_cpu.values()) + result.client_cpu
    capacity = wall * (os.cpu_count() or 1)
    lines = [
        f"  {result.system} {result.mode}: CPU, share of one core: {', '.join(shares)}; "
        f"machine {100 * result.machine_busy / capacity:.0f}% busy of {os.cpu_count()} CPUs, "
        f"other processes {100 * max(0.0, result.machine_busy - ours) / capacity:.0f}%"
    ]
    if any(c.get("chubbypy_batch_commands_count") for c in result.counters.values()):
        persists = []
        for rid in result.server_cpu:
            counts = result.counters.get(rid, {})
            count = counts.get("chubbypy_fsync_seconds_count", 0.0)
            mean_ms = 1000 * counts.get("chubbypy_fsync_seconds_sum", 0.0) / max(count, 1.0)
            persists.append(f"{rid} {count / wall:.0f}/s ({mean_ms:.1f} ms)")
        master = result.counters.get(next(iter(result.server_cpu)), {})
        entries = master.get("chubbypy_batch_commands_count", 0.0)
        commands = master.get("chubbypy_batch_commands_sum", 0.0) / max(entries, 1.0)
        lines.append(
            "  persists (one transaction + fsync each; rate, mean duration): "
            f"{', '.join(persists)}; "
            f"log entries applied {entries / wall:.0f}/s, {commands:.2f} commands each"
        )
    return "\n".join(lines)


FAILOVER_COLUMNS = (
    ("how", "how", "{}"),
    ("stopped", "stopped", "{}"),
    ("new", "new_master", "{}"),
    ("seed", "seed", "{}"),
    ("writes", "writes", "{}"),
    ("gap s", "gap_seconds", "{:.3f}"),
    ("gap from s", "gap_start_seconds", "{:+.3f}"),
    ("gap to s", "gap_end_seconds", "{:+.3f}"),
    ("serving s", "serving_seconds", "{:+.3f}"),
    ("write p50 ms", "write_p50_ms", "{:.2f}"),
    ("first ms", "first_write_ms", "{:.1f}"),
    ("NOT_MASTER", "not_master_replies", "{}"),
    ("errors", "errors", "{}"),
)


def emit(args: argparse.Namespace, document: dict[str, Any], text: str) -> None:
    if args.json:
        print(json.dumps(document), flush=True)
    else:
        print(text, flush=True)


# ============================================================================ main


def throughput(args: argparse.Namespace, cell: LocalCell, directory: Path) -> list[ModeResult]:
    modes = ["writes", "reads"] if args.mode == "both" else [args.mode]
    results = []
    for mode in modes:
        master = cell.wait_master()
        target = {
            "system": "chubbypy",
            "addresses": [cell.client_address(rid) for rid in REPLICA_IDS],
            "cell": cell.name,
        }
        pid = cell.pid(master)
        result = run_load("chubbypy", mode, target, cell, master, args, directory, pid)
        results.append(result)
        emit(args, {"benchmark": "cell", **result.as_dict()}, detail_lines(result))
    return results


def versus(args: argparse.Namespace, system: str, directory: Path) -> list[ModeResult]:
    """The same workloads against a local 3-member etcd cluster or ZooKeeper ensemble."""
    servers: EtcdCluster | ZooKeeperEnsemble
    if system == "etcd":
        executable = shutil.which("etcd")
        if executable is None:
            print("--vs etcd: no etcd (apt-get install etcd-server); skipped", file=sys.stderr)
            return []
        servers = EtcdCluster(directory / "etcd", executable)
    else:
        java = shutil.which("java")
        if java is None or not Path(ZooKeeperEnsemble.JAR).exists():
            print("--vs zookeeper: no ZooKeeper (apt-get install zookeeper)", file=sys.stderr)
            return []
        try:
            import kazoo  # type: ignore[import-untyped]  # noqa: F401
        except ImportError:
            print("--vs zookeeper: no kazoo (pip install kazoo); skipped", file=sys.stderr)
            return []
        servers = ZooKeeperEnsemble(directory / "zookeeper", java)
    servers.directory.mkdir()
    results = []
    try:
        leader_address = servers.start()
        leader = next(rid for rid in REPLICA_IDS if servers.address(rid) == leader_address)
        for mode in ["writes", "reads"] if args.mode == "both" else [args.mode]:
            target = {"system": system, "addresses": [leader_address]}
            result = run_load(system, mode, target, servers, leader, args, directory)
            results.append(result)
            emit(args, {"benchmark": "cell", **result.as_dict()}, detail_lines(result))
    finally:
        servers.close()
    return results


def failover(args: argparse.Namespace, cell: LocalCell) -> None:
    runs = []
    for how in ("kill", "term"):
        for _ in range(args.failover):
            run = failover_run(cell, how, args)
            runs.append(run)
            if args.json:
                print(json.dumps({"benchmark": "cell-failover", **run.as_dict()}), flush=True)
    if args.json:
        return
    print(table(FAILOVER_COLUMNS, [run.as_dict() for run in runs]))
    for how, name in (("kill", "kill -9"), ("term", "SIGTERM (graceful)")):
        gaps = [run.gap_seconds for run in runs if run.how == how]
        if gaps:
            shown = " ".join(f"{gap:.3f}" for gap in gaps)
            print(
                f"{name}: longest gap between acknowledged writes, s: {shown}; "
                f"median {statistics.median(gaps):.3f}"
            )


def settings_line(args: argparse.Namespace) -> str:
    return (
        "settings: 3 replicas, etc/cell.yaml paxos defaults (lease 0.6 s, tick 0.025 s,"
        " batch 64, window 32; SQLite WAL synchronous=FULL);"
        f" {args.clients} clients in {min(args.clients, args.client_processes)} load"
        f" process(es), {args.seconds:g} s per mode, {VALUE_BYTES}-byte values;"
        f" fail-over: {args.failover} runs of each kind, stop after {args.kill_after:g} s"
    )


def benchmark(args: argparse.Namespace) -> None:
    info = machine()
    if not args.json:
        print(machine_line(info))
        print(settings_line(args), flush=True)
    else:
        print(
            json.dumps(
                {"benchmark": "cell-machine", "machine": info, "settings": vars(args)}, default=str
            )
        )
    with temporary_directory(args.keep) as directory:
        results: list[ModeResult] = []
        if args.seconds > 0 or args.failover > 0:
            cell = LocalCell(directory / "cell")
            cell.directory.mkdir()
            try:
                master = cell.start()
                if not args.json:
                    print(f"cell {cell.name} in {directory}: {master} serves", flush=True)
                if args.seconds > 0:
                    results += throughput(args, cell, directory)
                if args.failover > 0:
                    failover(args, cell)
            finally:
                cell.close()
        for system in dict.fromkeys(args.vs) if args.seconds > 0 else ():
            results += versus(args, system, directory)
        if not args.json and results:
            print(table(THROUGHPUT_COLUMNS, [r.as_dict() for r in results]))
        for path in (path for result in results for path in result.profiles):
            if not args.json and path.exists():
                print(py_spy_summary(path))


@contextlib.contextmanager
def temporary_directory(keep: bool) -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="chubbypy-bench-"))
    try:
        yield directory
    finally:
        if keep:
            print(f"kept {directory}", file=sys.stderr)
        else:
            shutil.rmtree(directory, ignore_errors=True)


def parser() -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add = parse.add_argument
    add("--clients", type=int, default=32, help="concurrent logical clients (32)")
    add("--seconds", type=float, default=10.0, help="measured seconds per mode; 0 skips (10)")
    add("--mode", choices=("writes", "reads", "both"), default="both", help="workload (both)")
    add("--warmup", type=float, default=1.0, help="unmeasured seconds of load first (1)")
    add("--client-processes", type=int, default=1, help="load processes sharing the clients (1)")
    add("--failover", type=int, default=5, metavar="R", help="fail-over runs per kind; 0 skips (5)")
    add("--kill-after", type=float, default=2.0, help="seconds of writing before the kill (2)")
    add("--after-kill", type=float, default=3.0, help="seconds of writing after it (3)")
    add(
        "--backoff-max",
        type=float,
        metavar="SECONDS",
        help="the fail-over writer's Cell(backoff_max_seconds=...) (the client's default, 1)",
    )
    add(
        "--vs",
        action="append",
        default=[],
        choices=("etcd", "zookeeper"),
        help="also run against etcd or ZooKeeper",
    )
    add("--py-spy", type=Path, metavar="DIR", help="py-spy the master and load process into DIR")
    add("--json", action="store_true", help="one JSON object per figure, no tables")
    add("--keep", action="store_true", help="keep the temporary directory (logs, data)")
    add("--load-worker", help=argparse.SUPPRESS)
    return parse


def main(argv: Sequence[str] | None = None) -> None:
    parse = parser()
    args = parse.parse_args(argv)
    if args.load_worker is not None:
        load_main(json.loads(args.load_worker))
        return
    if args.clients < 1 or args.client_processes < 1 or args.seconds < 0 or args.failover < 0:
        parse.error("--clients and --client-processes must be at least 1; others non-negative")
    if args.py_spy is not None:
        args.py_spy.mkdir(parents=True, exist_ok=True)
    benchmark(args)


if __name__ == "__main__":
    main()
