"""Real replica processes on loopback for the integration tests: start, stop, kill, inspect.

Test support for STYLE §11 "integration/". A `LiveCell` writes a three-replica cell file,
with ports the kernel picks at run time, into a temporary directory; runs each replica as a
``python -m chubbypy.server serve`` child whose output goes to a log file beside it; reads
each replica's view of itself from its admin port (``/status``, ``/metrics``); and runs the
``chubbypy`` command against the cell file. Every wait polls with a deadline and, when the
deadline passes or a replica dies unexpectedly, fails with the tail of every replica's log.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final, TypeVar

import yaml
from attrs import frozen

from chubbypy.client.blocking import BlockingCell, connect
from chubbypy.config import load_config
from chubbypy.server._secrets import create_secrets

__all__ = [
    "OPEN_CELLS",
    "OPERATOR",
    "REPLICA_IDS",
    "CliResult",
    "LiveCell",
    "Measure",
    "ReplicaExited",
    "assert_state_matches",
    "child_environment",
    "chubbypy_command",
    "flood_size",
    "free_ports",
    "poll",
    "tail",
]

_T = TypeVar("_T")

REPLICA_IDS: Final = ("r1", "r2", "r3")
START_SECONDS: Final = 15.0
"""From starting the replicas to one of them serving: an election among fresh processes."""
STOP_SECONDS: Final = 10.0
"""A graceful stop's budget before the replica is killed (as `chubbypy cell` allows)."""
POLL_SECONDS: Final = 0.02
LOG_LINES: Final = 30
PORT_ATTEMPTS: Final = 3
"""Fresh ports to try when a replica could not listen: another process (another test, the
benchmark running beside us) may take a port between our choosing it and the replica's bind."""
CLI_SECONDS: Final = 60.0

Measure = Callable[[str, float], None]
"""Records a duration in seconds under a name (the `measure` fixture)."""

FULL_FLOODS: Final = os.environ.get("CHUBBY_FLOODS", "") == "full"
"""`make floods` sets CHUBBY_FLOODS=full: the flood tests run at the sizes the issues
reproduced (100,001 pipelined acquires, 5,000 hello connections, ...); `make test` runs
them smaller, with the same checks, to stay within its time budget."""


def flood_size(small: int, full: int) -> int:
    """How big a flood is: `full` under `make floods`, else `small`."""
    return full if FULL_FLOODS else small


OPEN_CELLS: list[LiveCell] = []
"""The cells of this process not yet closed: the failure report shows their logs."""


class ReplicaExited(AssertionError):
    """A replica that should be running has exited."""


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


def chubbypy_command() -> list[str]:
    """The ``chubbypy`` console script of this environment (or its entry point via python)."""
    script = Path(sys.executable).with_name("chubbypy")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from chubbypy.cli import main; sys.exit(main())"]


def child_environment() -> dict[str, str]:
    """The environment for every child: unbuffered output, and no cell or credentials from
    the caller's."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for variable in ("CHUBBY_CELL", "CHUBBY_PRINCIPAL", "CHUBBY_TOKEN", "CHUBBY_TOKEN_FILE"):
        environment.pop(variable, None)
    environment.pop("CHUBBY_CA_FILE", None)
    return environment


def tail(path: Path, lines: int = LOG_LINES) -> str:
    """The last `lines` lines of a text file ("" if there is none)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def poll(
    condition: Callable[[], _T | None],
    what: str,
    timeout: float,
    explain: Callable[[], str] = lambda: "",
) -> _T:
    """The first truthy value `condition` returns, polling until `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}\n{explain()}")
        time.sleep(POLL_SECONDS)


@frozen
class ReplicaPorts:
    """Where one replica listens, all on 127.0.0.1."""

    peer: int
    client: int
    admin: int


@frozen
class CliResult:
    """One run of the ``chubbypy`` command."""

    code: int
    output: bytes
    """Standard output, as bytes (``cat`` prints contents as they are)."""
    stderr: str

    @property
    def stdout(self) -> str:
        return self.output.decode(errors="replace")

    def json(self) -> dict[str, Any]:
        """Standard output as the one JSON object ``--json`` promises."""
        document = json.loads(self.stdout)
        assert isinstance(document, dict), self.stdout
        return document

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


OPERATOR: Final = "operator"
"""The principal every test cell has, its token in a file of the cell's own."""
OPERATOR_TOKEN_FILE: Final = "_secrets/operator.token"


class LiveCell:
    """Three replica processes of one cell, in `directory`; see the module docstring.

    `paxos` and `limits` are written into the cell file's sections of those names (the
    defaults of etc/cell.yaml otherwise); `auth` is merged into the ``auth:`` section, whose
    principals always include `OPERATOR` with a token file; `tls` is the ``tls:`` section
    (None: no TLS), and `client_kind` the kind of the client endpoints (``ssl`` for TLS).
    Like `chubbypy cell` on first start, `write_config` creates the cell's own keys,
    tokens and (with `tls`) certificates in its data directory: no test cell runs on a
    secret from the repository.
    """

    def __init__(
        self,
        directory: Path,
        *,
        paxos: Mapping[str, Any] | None = None,
        limits: Mapping[str, Any] | None = None,
        sessions: Mapping[str, Any] | None = None,
        auth: Mapping[str, Any] | None = None,
        tls: Mapping[str, Any] | None = None,
        client_kind: str = "tcp",
        name: str | None = None,
    ) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_path = directory / "cell.yaml"
        self.data_dir = directory / "data"
        # Unique per cell: a client that reached another test's replica is refused (WRONG_CELL)
        # instead of quietly using the wrong cell.
        self.name = name or f"it{secrets.token_hex(4)}"
        self.paxos = dict(paxos or {})
        self.limits = dict(limits or {})
        self.sessions = dict(sessions or {})
        self.auth = dict(auth or {})
        self.tls = None if tls is None else dict(tls)
        self.client_kind = client_kind
        self.ports: dict[str, ReplicaPorts] = {}
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._stopping: list[subprocess.Popen[bytes]] = []
        """Processes told to stop whose end the test awaits (`close` makes sure of it)."""
        self._clients: list[BlockingCell] = []

    # ------------------------------------------------------------------ the cell file

    def write_config(self) -> None:
        """A cell file for fresh ports (and the given paxos and limits settings)."""
        ports = free_ports(3 * len(REPLICA_IDS))
        self.ports = {
            rid: ReplicaPorts(*ports[3 * i : 3 * i + 3]) for i, rid in enumerate(REPLICA_IDS)
        }
        self._write_document(self.ports)

    def add_replica_config(self, rid: str) -> ReplicaPorts:
        """Give replica `rid` fresh ports and an entry in the cell file (which the new
        replica reads: its own endpoints, and the peers it dials first); its ports."""
        peer, client, admin = free_ports(3)
        self.ports[rid] = ReplicaPorts(peer, client, admin)
        self._write_document(self.ports)
        return self.ports[rid]

    def list_only(self, rids: Iterable[str]) -> None:
        """Rewrite the cell file to list only `rids` (an operator's file after replacing
        replicas: clients and the CLI find the cell through it)."""
        self._write_document({rid: self.ports[rid] for rid in rids})

    def _write_document(self, ports: Mapping[str, ReplicaPorts]) -> None:
        document: dict[str, Any] = {
            "cell": self.name,
            "replicas": [
                {
                    "id": rid,
                    "peer": f"tcp:{p.peer}:interface=127.0.0.1",
                    "client": f"{self.client_kind}:{p.client}:interface=127.0.0.1",
                    "admin": f"tcp:{p.admin}:interface=127.0.0.1",
                }
                for rid, p in ports.items()
            ],
            "data_dir": str(self.data_dir),
        }
        if self.paxos:
            document["paxos"] = self.paxos
        if self.limits:
            document["limits"] = self.limits
        if self.sessions:
            document["sessions"] = self.sessions
        principals = {OPERATOR: {"token_file": OPERATOR_TOKEN_FILE}}
        principals.update(self.auth.get("principals", {}))
        document["auth"] = {**self.auth, "principals": principals}
        if self.tls is not None:
            document["tls"] = self.tls
        self.config_path.write_text(yaml.safe_dump(document, sort_keys=False))
        create_secrets(load_config(self.config_path), auto_tls=self.tls is not None)

    @property
    def operator(self) -> tuple[str, str]:
        """The operator's principal and token (from the file the cell's replicas read)."""
        return OPERATOR, (self.data_dir / OPERATOR_TOKEN_FILE).read_text().strip()

    @property
    def ca_path(self) -> Path:
        """The cell's CA certificate (with `tls`)."""
        return self.data_dir / "_secrets" / "tls" / "ca.pem"

    def path(self, relative: str = "") -> str:
        """The full name of `relative` in this cell: ``/ls/<cell>/<relative>``."""
        return f"/ls/{self.name}/{relative}" if relative else f"/ls/{self.name}"

    # ------------------------------------------------------------------ processes

    def start(self) -> str:
        """Start a new cell (every replica with --bootstrap); its master, once all are ready."""
        OPEN_CELLS.append(self)
        for _ in range(PORT_ATTEMPTS):
            self.write_config()
            for rid in REPLICA_IDS:
                self.start_replica(rid, bootstrap=True)
            try:
                return self.wait_ready(START_SECONDS)
            except ReplicaExited:
                if "cannot listen" not in self.logs(lines=1000):
                    raise
            # Lost a race for a port: start over on new ports, from empty stores.
            self.close(forget=False)
            shutil.rmtree(self.data_dir, ignore_errors=True)
            for rid in REPLICA_IDS:
                self.log_path(rid).rename(self.directory / f"{rid}.port-race.log")
        raise AssertionError(f"no free ports in {PORT_ATTEMPTS} attempts\n{self.logs()}")

    def start_replica(self, rid: str, *, bootstrap: bool = False) -> None:
        """Start replica `rid` (again), appending its output to its log file."""
        assert rid not in self._processes, f"{rid} is running"
        command = [sys.executable, "-m", "chubbypy.server", "serve"]
        command += ["--config", str(self.config_path), "--replica", rid]
        if bootstrap:
            command.append("--bootstrap")
        with self.log_path(rid).open("ab") as log:
            log.write(f"=== test harness: {' '.join(command[1:])}\n".encode())
            log.flush()
            self._processes[rid] = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                env=child_environment(),
                start_new_session=True,
            )

    def stop_replica(self, rid: str, timeout: float = STOP_SECONDS) -> int | None:
        """SIGTERM (a graceful stop) and wait; its exit status, or None if it had to be killed."""
        process = self._processes.pop(rid)
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return None

    def stop_replica_async(self, rid: str) -> subprocess.Popen[bytes]:
        """SIGTERM (a graceful stop) without waiting; the process, to wait for."""
        process = self._processes.pop(rid)
        process.send_signal(signal.SIGTERM)
        self._stopping.append(process)
        return process

    def kill_replica(self, rid: str) -> None:
        """SIGKILL (kill -9): the replica stops at once, whatever it was doing."""
        process = self._processes.pop(rid)
        process.kill()
        process.wait()

    def pause_replica(self, rid: str) -> None:
        """SIGSTOP: the replica freezes (a long GC, a stalled machine) until resumed."""
        self._processes[rid].send_signal(signal.SIGSTOP)

    def resume_replica(self, rid: str) -> None:
        """SIGCONT a paused replica."""
        self._processes[rid].send_signal(signal.SIGCONT)

    def wipe_replica(self, rid: str) -> None:
        """Delete a stopped replica's data directory: a lost disk."""
        assert rid not in self._processes, f"{rid} is running"
        shutil.rmtree(self.data_dir / rid)

    @property
    def running(self) -> list[str]:
        """The replicas started and not stopped or killed by the test."""
        return sorted(self._processes)

    def check_alive(self) -> None:
        """`ReplicaExited` if a replica the test did not stop has exited."""
        for rid, process in self._processes.items():
            if process.poll() is not None:
                raise ReplicaExited(f"{rid} exited with status {process.returncode}\n{self.logs()}")

    def close(self, *, forget: bool = True) -> None:
        """Close the clients, SIGTERM every replica, and SIGKILL those still running after
        `STOP_SECONDS`."""
        for client in self._clients:
            client.close()
        self._clients.clear()
        processes = [*self._processes.values(), *self._stopping]
        self._processes, self._stopping = {}, []
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)  # a paused one must run to stop
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for process in processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if forget and self in OPEN_CELLS:
            OPEN_CELLS.remove(self)

    # ------------------------------------------------------------------ the admin port

    def status(self, rid: str) -> dict[str, Any] | None:
        """Replica `rid`'s ``/status`` document, or None if it does not answer."""
        body = self.admin_get(rid, "/status")
        try:
            return None if body is None else json.loads(body)
        except ValueError:
            return None  # another process's page on a port the replica left

    def statuses(self, replicas: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        """``/status`` of each replica that answers (of `replicas`, default the running ones)."""
        found = {}
        for rid in self.running if replicas is None else replicas:
            status = self.status(rid)
            if status is not None:
                found[rid] = status
        return found

    def readyz(self, rid: str) -> tuple[int, str]:
        """``/readyz``: its HTTP status and body (0 and "" if the replica does not answer)."""
        url = f"http://127.0.0.1:{self.ports[rid].admin}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=2.0) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()
        except (OSError, http.client.HTTPException):
            return 0, ""  # nothing listens, or another process has the port now

    def metric(self, rid: str, name: str) -> float:
        """The value of unlabelled metric `name` on replica `rid`'s ``/metrics`` page."""
        body = self.admin_get(rid, "/metrics")
        assert body is not None, f"{rid} does not answer\n{self.logs()}"
        match = re.search(rf"^{re.escape(name)} (\S+)$", body, re.MULTILINE)
        if match is None and f"# TYPE {name} counter\n" in body:
            # A counter never incremented has no sample line yet (see test_admin.py).
            return 0.0
        assert match is not None, f"no metric {name} on {rid}:\n{body}"
        return float(match.group(1))

    def admin_get(self, rid: str, page: str) -> str | None:
        """The body of admin page `page` of replica `rid`, or None if it does not answer."""
        url = f"http://127.0.0.1:{self.ports[rid].admin}{page}"
        try:
            with urllib.request.urlopen(url, timeout=2.0) as response:
                body: bytes = response.read()
                return body.decode()
        except (OSError, ValueError, http.client.HTTPException):
            # Not an admin page: nothing listens, or the port went to another process (a
            # killed replica's port, taken by another test's cell: seen as BadStatusLine).
            return None

    def serving(self, replicas: Iterable[str] | None = None) -> list[str]:
        """The replicas that say they serve (the master), of `replicas` (default: running)."""
        return [rid for rid, s in self.statuses(replicas).items() if s["serving"]]

    def master(self) -> str | None:
        """The one running replica that says it serves, or None (none, or two in passing)."""
        serving = self.serving()
        return serving[0] if len(serving) == 1 else None

    def wait_master(self, timeout: float = START_SECONDS) -> str:
        """The running replica that serves, once there is one."""
        return self.wait_for(self.master, "a replica serves", timeout)

    def wait_ready(self, timeout: float = START_SECONDS) -> str:
        """The master, once every running replica is ready (``/readyz``) and names it.

        Right after a start a replica may still campaign, or not yet have heard the new
        master's lease, for a moment; tests begin once that has settled.
        """

        def settled() -> str | None:
            master = self.master()
            if master is None or any(self.readyz(rid)[0] != 200 for rid in self.running):
                return None
            hints = {status["master_hint"] for status in self.statuses().values()}
            return master if hints == {master} else None

        return self.wait_for(settled, "every replica is ready and names one master", timeout)

    def wait_for(self, condition: Callable[[], _T | None], what: str, timeout: float) -> _T:
        """Poll `condition` until it returns something truthy; fail with the logs after
        `timeout` seconds, or at once if a replica dies."""

        def checked() -> _T | None:
            self.check_alive()
            return condition()

        return poll(checked, what, timeout, self.explain)

    def wait_caught_up(self, rid: str, timeout: float) -> dict[str, Any]:
        """`rid`'s status once it has applied everything the master has (the master's)."""

        def caught_up() -> dict[str, Any] | None:
            master = self.master()
            if master is None or master == rid:
                return None
            leader, follower = self.status(master), self.status(rid)
            if leader is None or follower is None:
                return None
            return leader if follower["applied_index"] >= leader["applied_index"] else None

        return self.wait_for(caught_up, f"{rid} applies what the master applied", timeout)

    # ------------------------------------------------------------------ clients

    def client(self, timeout_seconds: float = 15.0, **options: Any) -> BlockingCell:
        """A `BlockingCell` of this cell (from its file), closed with the cell; `options`
        are `Cell`'s (a principal and its token, say)."""
        client = connect(str(self.config_path), timeout_seconds=timeout_seconds, **options)
        self._clients.append(client)
        return client

    def cli(
        self,
        *args: str,
        cell: str | None = None,
        stdin: bytes = b"",
        as_operator: bool = False,
        environ: Mapping[str, str] | None = None,
    ) -> CliResult:
        """Run ``chubbypy --cell <this cell's file> ARGS``; `cell` replaces the --cell value,
        `as_operator` sets the operator's principal and token file, `environ` adds more."""
        command = [*chubbypy_command(), "--cell", cell or str(self.config_path), *args]
        environment = child_environment()
        if as_operator:
            environment["CHUBBY_PRINCIPAL"] = OPERATOR
            environment["CHUBBY_TOKEN_FILE"] = str(self.data_dir / OPERATOR_TOKEN_FILE)
        environment.update(environ or {})
        done = subprocess.run(
            command,
            input=stdin,
            capture_output=True,
            cwd=self.directory,
            env=environment,
            timeout=CLI_SECONDS,
            check=False,
        )
        return CliResult(done.returncode, done.stdout, done.stderr.decode(errors="replace"))

    # ------------------------------------------------------------------ logs

    def log_path(self, rid: str) -> Path:
        return self.directory / f"{rid}.log"

    def log(self, rid: str) -> str:
        return self.log_path(rid).read_text(errors="replace")

    def logs(self, lines: int = LOG_LINES) -> str:
        """The tail of every replica's log, each under its name."""
        return "\n".join(
            f"--- {rid}.log (last {lines} lines)\n{tail(self.log_path(rid), lines)}"
            for rid in REPLICA_IDS
        )

    def explain(self) -> str:
        """What every replica says about itself now, and the tail of its log."""
        statuses = self.statuses(REPLICA_IDS)
        summary = [
            f"{rid}: " + (json.dumps(statuses[rid]) if rid in statuses else "no answer")
            for rid in REPLICA_IDS
        ]
        return "\n".join(["--- /status", *summary, self.logs()])


def assert_state_matches(cell: LiveCell, rid: str, master: str, client: BlockingCell) -> None:
    """With the third replica stopped, `rid` must vote for a write to be chosen, and its state
    checksum (PML §6.2) must equal the master's."""
    third = next(r for r in cell.running if r not in (rid, master))
    assert cell.stop_replica(third) == 0, cell.logs()
    client.create(cell.path("needs-its-vote"), rid.encode())
    compared = cell.metric(master, "chubbypy_checksum_comparisons_total")
    cell.wait_for(
        lambda: cell.metric(master, "chubbypy_checksum_comparisons_total") >= compared + 2,
        f"the master compares {rid}'s state checksum twice",
        10,
    )
    status = cell.statuses()[master]
    assert status["divergence"] is None, status
    assert cell.metric(master, "chubbypy_checksum_mismatches_total") == 0
    assert cell.readyz(master)[0] == 200
    assert client.get_contents_and_stat(cell.path("needs-its-vote")).contents == rid.encode()
