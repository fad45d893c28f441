"""One fault run: hosts, a cell, clients, the nemesis, then every checker; a summary.

Test support. `run` makes the hosts (network namespaces, or loopback addresses when they
cannot be made, saying so), writes a cell file for a cell of three or five replicas, one
per host, starts them (each with a test clock the nemesis can skew) and, with namespaces,
a delaying proxy per host; creates the registers' and locks' files; starts the client
processes on the clients' host; lets the nemesis inject faults for the run's length; heals
everything and waits for the cell to serve again; lets the clients run a little longer and
stops them; stops the cell; and judges the history. Whatever happens, every process it
started is stopped and every namespace removed.

A run that fails (a checker, a replica that exited by itself, a cell that did not recover,
a client process that died) keeps its directory and names it: the history files, the
nemesis log, each replica's, proxy's and client's log, the cell file and the replicas'
data. The seed replays the fault schedule (which faults, when, on which replica when it is
not the master); the processes' own timing is not replayed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import yaml
from attrs import frozen

from chubbypy.config import load_config
from chubbypy.testing.faults._check import Report, check_history
from chubbypy.testing.faults._history import LOCK_PREFIX, REGISTER_PREFIX, read_history
from chubbypy.testing.faults._linearizability import STEPS_MAX_DEFAULT
from chubbypy.testing.faults._nemesis import KINDS, LINK_KINDS, Nemesis, NemesisLog
from chubbypy.testing.faults._network import (
    PROXY_MARK,
    PROXY_PORT,
    Host,
    LinkFaults,
    LoopbackNetwork,
    NamespaceNetwork,
    Network,
    namespaces_problem,
    proxy_delays,
    remove_stale,
    write_delays,
)
from chubbypy.testing.faults._workload import path_of

__all__ = ["CELL", "FaultCell", "Settings", "run"]

CELL: Final = "faults"
PEER_PORT: Final = 7100
CLIENT_PORT: Final = 7200
ADMIN_PORT: Final = 7300
"""Fixed ports on each host's own address (below 32768, apart from the tests' ports)."""
CLIENT_HOSTS: Final = ("c1", "c2")
"""Two clients' hosts, so that one can be cut off while the other goes on (and takes the
locks the first one's sessions lose)."""
START_SECONDS: Final = 30.0
RECOVER_SECONDS: Final = 30.0
"""After the faults stop, how long the cell may take to serve again with every replica."""
SETTLE_SECONDS: Final = 3.0
"""How long the clients go on once the cell has recovered: their pending calls resolve."""
STOP_SECONDS: Final = 15.0
INITIAL: Final = "init"
SESSIONS: Final = {"lease_seconds": 3.0, "keepalive_answer_before_seconds": 1.0}
"""Short session leases, so that partitions end sessions (and lose locks) within a run."""


@frozen
class Settings:
    """What one run does."""

    seconds: float
    seed: int
    directory: Path
    replicas: int = 3
    registers: int = 4
    locks: int = 2
    register_threads: int = 4
    cached_threads: int = 2
    lock_threads: int = 2
    """Threads of each lock process (there are two, one on each clients' host)."""
    loopback: bool = False
    """Use loopback addresses even where namespaces could be made."""
    keep: bool = False
    """Keep the run's directory even when every check passes."""
    steps_max: int = STEPS_MAX_DEFAULT
    kinds: tuple[str, ...] = KINDS
    """The kinds of fault to inject (those that need namespaces are left out without)."""


def _python() -> list[str]:
    return [sys.executable, "-m", "chubbypy.testing.faults"]


def _child_environment() -> dict[str, str]:
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for variable in ("CHUBBY_CELL", "CHUBBY_PRINCIPAL", "CHUBBY_TOKEN", "CHUBBY_TOKEN_FILE"):
        environment.pop(variable, None)
    return environment


class FaultCell:
    """The replica processes of the run, one per host; the nemesis's `CellControl`."""

    def __init__(self, network: Network, directory: Path, replicas: Sequence[str]) -> None:
        self.network = network
        self.directory = directory
        self.replicas: Sequence[str] = list(replicas)
        self.client_hosts: Sequence[str] = CLIENT_HOSTS
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.config_path = directory / "cell.yaml"
        self.data_dir = directory / "data"
        self._clock_dir = directory / "clock"
        self._proxy_dir = directory / "proxy"
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._proxies: list[subprocess.Popen[bytes]] = []
        self.exits: list[str] = []
        """Replicas that exited without the nemesis asking (each a line saying how)."""
        self.clock_drift_max = 0.0
        self.master_lease_seconds = 0.0
        self._lock = threading.Lock()

    def host(self, name: str) -> Host:
        return self.network.hosts[name]

    # ------------------------------------------------------------------ set-up

    def write_config(self) -> None:
        """The cell file, and the cell's secrets (as `chubbypy cell` makes on first start)."""
        from chubbypy.server._secrets import create_secrets

        document: dict[str, Any] = {
            "cell": CELL,
            "replicas": [
                {
                    "id": rid,
                    "peer": f"tcp:{PEER_PORT}:interface={self.host(rid).address}",
                    "client": f"tcp:{CLIENT_PORT}:interface={self.host(rid).address}",
                    "admin": f"tcp:{ADMIN_PORT}:interface={self.host(rid).address}",
                }
                for rid in self.replicas
            ],
            "data_dir": str(self.data_dir),
            "sessions": SESSIONS,
            "auth": {"principals": {"operator": {"token_file": "_secrets/operator.token"}}},
        }
        self.config_path.write_text(yaml.safe_dump(document, sort_keys=False))
        config = load_config(self.config_path)
        create_secrets(config, auto_tls=False)
        self.clock_drift_max = config.paxos.clock_drift_max
        self.master_lease_seconds = config.paxos.master_lease_seconds
        self._clock_dir.mkdir(exist_ok=True)
        self._proxy_dir.mkdir(exist_ok=True)
        for rid in self.replicas:
            self.set_clock_rate(rid, 1.0)

    def start_proxies(self) -> None:
        """A delaying proxy on each host (namespaces only)."""
        for host in self.network.hosts.values():
            control = self._proxy_dir / f"{host.name}.json"
            write_delays(control, {})
            argv = [*_python(), "proxy", str(PROXY_PORT), str(control), hex(PROXY_MARK)]
            self._proxies.append(self._spawn(host, argv, self.directory / f"proxy-{host.name}.log"))

    def _spawn(
        self,
        host: Host,
        argv: Sequence[str],
        log_path: Path,
        environment: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        with log_path.open("ab") as log:
            return subprocess.Popen(
                self.network.wrap(host, argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                env=environment or _child_environment(),
                start_new_session=True,
            )

    # ------------------------------------------------------------------ replicas

    def start(self, replica: str, bootstrap: bool = False) -> None:
        with self._lock:
            assert replica not in self._processes, replica
            argv = [sys.executable, "-m", "chubbypy.server", "serve"]
            argv += ["--config", str(self.config_path), "--replica", replica]
            if bootstrap:
                argv.append("--bootstrap")
            environment = _child_environment()
            environment["CHUBBYPY_TEST_CLOCK_RATE_FILE"] = str(self._clock_dir / f"{replica}.rate")
            log_path = self.directory / f"{replica}.log"
            with log_path.open("ab") as log:
                log.write(f"=== fault suite: start {replica} at {time.monotonic_ns()}\n".encode())
            self._processes[replica] = self._spawn(self.host(replica), argv, log_path, environment)

    def kill(self, replica: str) -> None:
        with self._lock:
            process = self._processes.pop(replica)
        process.kill()
        process.wait()

    def stop(self, replica: str) -> None:
        with self._lock:
            process = self._processes.pop(replica)
        _stop(process, STOP_SECONDS)

    def pause(self, replica: str) -> None:
        self._processes[replica].send_signal(signal.SIGSTOP)

    def resume(self, replica: str) -> None:
        self._processes[replica].send_signal(signal.SIGCONT)

    def set_clock_rate(self, replica: str, rate: float) -> None:
        path = self._clock_dir / f"{replica}.rate"
        partial = path.with_suffix(".partial")
        partial.write_text(f"{rate!r}\n")
        partial.replace(path)

    @property
    def client_processes(self) -> list[str]:
        return sorted(self.workers)

    def pause_client(self, name: str) -> None:
        self.workers[name].send_signal(signal.SIGSTOP)

    def resume_client(self, name: str) -> None:
        self.workers[name].send_signal(signal.SIGCONT)

    def set_delays(self, faults: LinkFaults) -> None:
        if not self._proxies:
            assert not faults.delay_ms, "no proxies to delay with"
            return
        hosts = list(self.network.hosts.values())
        for host in hosts:
            write_delays(self._proxy_dir / f"{host.name}.json", proxy_delays(host, hosts, faults))

    def check_exits(self) -> None:
        """Note every replica that exited by itself since the last look (and forget it, so
        that the nemesis's later start of it is a start, not a second process)."""
        with self._lock:
            for replica, process in list(self._processes.items()):
                if process.poll() is not None:
                    del self._processes[replica]
                    self.exits.append(
                        f"{replica} exited by itself with status {process.returncode} "
                        f"at {time.monotonic_ns()} (see {replica}.log)"
                    )

    @property
    def running(self) -> list[str]:
        with self._lock:
            return sorted(self._processes)

    # ------------------------------------------------------------------ observing

    def _admin(self, replica: str, page: str) -> tuple[int, str]:
        url = f"http://{self.host(replica).address}:{ADMIN_PORT}{page}"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, ""
        except (OSError, ValueError):
            return 0, ""

    def status(self, replica: str) -> dict[str, Any] | None:
        code, body = self._admin(replica, "/status")
        if code != 200:
            return None
        document: dict[str, Any] = json.loads(body)
        return document

    def master(self) -> str | None:
        serving = []
        for replica in self.running:
            status = self.status(replica)
            if status is not None and status.get("serving"):
                serving.append(replica)
        return serving[0] if len(serving) == 1 else None

    def ready(self) -> str | None:
        """The master, when every replica runs, is ready and names it."""
        if self.running != sorted(self.replicas):
            return None
        master = self.master()
        if master is None:
            return None
        hints = set()
        for replica in self.replicas:
            if self._admin(replica, "/readyz")[0] != 200:
                return None
            status = self.status(replica)
            hints.add(None if status is None else status.get("master_hint"))
        return master if hints == {master} else None

    def wait_ready(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_exits()
            master = self.ready()
            if master is not None:
                return master
            time.sleep(0.1)
        return None

    # ------------------------------------------------------------------ the end

    def close(self) -> None:
        """Stop every replica (gracefully, then killed) and every proxy."""
        with self._lock:
            processes = list(self._processes.values())
            self._processes.clear()
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for process in processes:
            _wait_or_kill(process, deadline)
        for proxy in self._proxies:
            _stop(proxy, 5.0)
        self._proxies.clear()


def _stop(process: subprocess.Popen[bytes], seconds: float) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGCONT)
        process.send_signal(signal.SIGTERM)
    _wait_or_kill(process, time.monotonic() + seconds)


def _wait_or_kill(process: subprocess.Popen[bytes], deadline: float) -> None:
    try:
        process.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# ----------------------------------------------------------------------------- clients


def _create_files(cell: FaultCell, settings: Settings) -> dict[str, tuple[str, int]]:
    """Each register's and lock's file, with the same first contents; their initial states."""
    from chubbypy.client.blocking import connect
    from chubbypy.protocol.errors import NodeExists

    keys = [f"{REGISTER_PREFIX}r{i}" for i in range(settings.registers)]
    keys += [f"{LOCK_PREFIX}l{i}" for i in range(settings.locks)]
    initial = {}
    with connect(str(cell.config_path), timeout_seconds=START_SECONDS) as client:
        with contextlib.suppress(NodeExists):
            client.create(f"/ls/{CELL}/faults", directory=True)
        for key in keys:
            stat = client.create(path_of(CELL, key), INITIAL.encode())
            initial[key] = (INITIAL, stat.content_generation)
    return initial


WORKERS: Final = (
    ("register", "c1"),
    ("cached", "c2"),
    ("lock", "c1"),
    ("lock", "c2"),
)
"""Each client process: its workload and its host."""


def _start_workers(cell: FaultCell, settings: Settings) -> None:
    """The client processes, on the clients' hosts; `cell.workers` names them."""
    threads = {
        "register": settings.register_threads,
        "cached": settings.cached_threads,
        "lock": settings.lock_threads,
    }
    for number, (workload, host) in enumerate(WORKERS):
        if not threads[workload]:
            continue
        name = f"w{number}-{workload}"
        argv = [*_python(), "worker", "--name", name, "--workload", workload]
        argv += ["--threads", str(threads[workload]), "--cell-file", str(cell.config_path)]
        argv += ["--cell", CELL, "--registers", str(settings.registers)]
        argv += ["--locks", str(settings.locks), "--seed", str(settings.seed * 10 + number)]
        argv += ["--history", str(cell.directory / f"{name}.history.jsonl")]
        log_path = cell.directory / f"{name}.log"
        cell.workers[name] = cell._spawn(cell.host(host), argv, log_path)


# ----------------------------------------------------------------------------- the run


def _open_network(settings: Settings, names: list[str], say: Callable[[str], None]) -> Network:
    problem = "asked for (--loopback)" if settings.loopback else namespaces_problem()
    if problem is None:
        remove_stale(say)
        return NamespaceNetwork(names, (PEER_PORT, CLIENT_PORT), say)
    say(
        f"network namespaces unavailable ({problem}): running the loopback variant "
        "(kills, pauses, restarts, client pauses and clock skew; no partitions, drops or "
        "delays)"
    )
    return LoopbackNetwork(names)


def run(settings: Settings, say: Callable[[str], None]) -> int:
    """One fault run; its exit status (0: every check passed). See the module docstring."""
    directory = settings.directory
    if directory.exists() and any(directory.iterdir()):
        say(f"{directory} is not empty (a kept run?): name another directory, or remove it")
        return 2
    directory.mkdir(parents=True, exist_ok=True)
    replicas = [f"r{i + 1}" for i in range(settings.replicas)]
    network = _open_network(settings, [*replicas, *CLIENT_HOSTS], say)
    say(f"hosts: {network.describe()}")
    kinds = [k for k in settings.kinds if network.links_faulty or k not in LINK_KINDS]
    cell = FaultCell(network, directory, replicas)
    problems: list[str] = []
    injected: Counter[str] = Counter()
    started_ns = time.monotonic_ns()
    log = NemesisLog(directory / "nemesis.log", say, started_ns)
    stop = threading.Event()
    try:
        cell.write_config()
        if network.links_faulty:
            cell.start_proxies()
        for replica in replicas:
            cell.start(replica, bootstrap=True)
        master = cell.wait_ready(START_SECONDS)
        if master is None:
            problems.append(f"the cell did not start within {START_SECONDS:g} s")
            return _finish(settings, cell, problems, None, injected, say)
        log.event("cell ready", master=master)
        initial = _create_files(cell, settings)
        (directory / "initial.json").write_text(json.dumps(initial))
        _start_workers(cell, settings)
        monitor = threading.Thread(target=_monitor, args=(cell, stop), daemon=True)
        monitor.start()
        nemesis = Nemesis(
            seed=settings.seed, cell=cell, network=network, log=log, kinds=kinds, stop=stop
        )
        log.event("nemesis begins", seed=settings.seed, seconds=settings.seconds, kinds=kinds)
        nemesis.run(settings.seconds)
        injected = nemesis.injected
        recovered = cell.wait_ready(RECOVER_SECONDS)
        log.event("faults over", master=recovered)
        if recovered is None:
            _record_statuses(cell, directory / "statuses-unrecovered.json", say)
            _record_network(network, directory / "network-unrecovered.txt")
            problems.append(
                f"the cell did not serve again with every replica within {RECOVER_SECONDS:g} s "
                "of the faults' end"
            )
        else:
            time.sleep(SETTLE_SECONDS)
        stop.set()
        problems += _stop_workers(cell)
        cell.check_exits()
        problems += cell.exits
    finally:
        stop.set()
        for worker in cell.workers.values():
            _stop(worker, 1.0)
        cell.close()
        network.close()
        log.close()
    report = check_history(read_history(directory), settings.steps_max)
    return _finish(settings, cell, problems, report, injected, say)


def _record_statuses(cell: FaultCell, path: Path, say: Callable[[str], None]) -> None:
    """What each replica says of itself now, in `path` and in short."""
    statuses = {replica: cell.status(replica) for replica in cell.replicas}
    path.write_text(json.dumps(statuses, indent=2))
    for replica, status in statuses.items():
        if status is None:
            say(f"{replica}: no answer on its admin port")
            continue
        short = {key: status.get(key) for key in ("role", "serving", "master_hint", "epoch")}
        say(f"{replica}: {json.dumps(short)}")


def _record_network(network: Network, path: Path) -> None:
    """Each host's firewall rules and TCP connections now (namespaces only)."""
    if not isinstance(network, NamespaceNetwork):
        return
    parts = []
    for host in network.hosts.values():
        parts.append(f"=== {host.name} {host.address}\n{network.ruleset(host)}")
        parts.append(network.run(host, ["ss", "-tnoi"]))
    path.write_text("\n".join(parts))


def _monitor(cell: FaultCell, stop: threading.Event) -> None:
    """Notice replicas that exit by themselves while the nemesis runs."""
    while not stop.wait(0.5):
        cell.check_exits()


def _stop_workers(cell: FaultCell) -> list[str]:
    """Stop the client processes (each finishes its calls in progress); what went wrong."""
    problems = []
    for worker in cell.workers.values():
        worker.send_signal(signal.SIGCONT)
        worker.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    for name, worker in cell.workers.items():
        _wait_or_kill(worker, deadline)
        if worker.returncode != 0:
            problems.append(
                f"client process {name} exited with status {worker.returncode} (see {name}.log)"
            )
    return problems


def _finish(
    settings: Settings,
    cell: FaultCell,
    problems: list[str],
    report: Report | None,
    injected: Counter[str],
    say: Callable[[str], None],
) -> int:
    passed = not problems and report is not None and report.passed
    faults = ", ".join(f"{count} {kind}" for kind, count in sorted(injected.items()))
    lines = [
        f"seed {settings.seed}, {settings.seconds:g} s of faults on {len(cell.replicas)} replicas",
        f"faults injected: {sum(injected.values())} ({faults or 'none'})",
    ]
    if report is not None:
        lines += report.summary()
    lines += [f"problem: {problem}" for problem in problems]
    if report is not None and not report.passed:
        lines.append(report.explain())
    if passed:
        lines.append("result: every history linearizable, every lock exclusive and fenced")
    else:
        lines.append(
            f"result: FAILED; kept {settings.directory} (histories *.history.jsonl, "
            f"nemesis.log, replica logs r*.log); the fault schedule replays with "
            f"make faults SEED={settings.seed} SECONDS={settings.seconds:g}"
        )
    (settings.directory / "summary.txt").write_text("\n".join(lines) + "\n")
    for line in lines:
        say(line)
    if passed and not settings.keep:
        shutil.rmtree(settings.directory, ignore_errors=True)
    return 0 if passed else 1
