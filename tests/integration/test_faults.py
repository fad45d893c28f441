"""The fault suite on real processes: its hosts, its proxy, the clock hook, and a short run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chubbypy.testing.faults._network import (
    PROXY_MARK,
    PROXY_PORT,
    LinkFaults,
    NamespaceNetwork,
    namespaces_problem,
    proxy_delays,
    write_delays,
)
from tests.integration.harness import LiveCell, child_environment

NAMESPACES = namespaces_problem()
needs_namespaces = pytest.mark.skipif(
    NAMESPACES is not None, reason=f"network namespaces unavailable: {NAMESPACES}"
)
ECHO_PORT = 9100
"""The echo server's port, on its namespace's own address (apart from every other test)."""
SINK_PORT = 9101
"""A server that takes connections and never reads them."""

PROXY_COMMAND = (sys.executable, "-m", "chubbypy.testing.faults", "proxy")
SERVE_COMMAND = (sys.executable, "-m", "chubbypy.server", "serve")

ECHO = """
import socket
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("{address}", {port}))
server.listen()
print("listening", flush=True)
while True:
    connection, _ = server.accept()
    while data := connection.recv(100):
        connection.sendall(data)
    connection.close()
"""

SINK = """
import socket, time
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("{address}", {port}))
server.listen()
print("listening", flush=True)
kept = []
while True:
    kept.append(server.accept()[0])
"""

SEND_ONLY = """
import socket, sys, time
connection = socket.create_connection(("{address}", {port}), timeout=2)
connection.sendall(b"hello")
print("connected", flush=True)
sys.stdin.readline()
deadline = time.monotonic() + 5
while time.monotonic() < deadline:  # a peer connection: it sends, and never reads
    try:
        connection.sendall(b"x" * 100)
    except OSError as error:
        print("closed", type(error).__name__); break
    time.sleep(0.02)
else:
    print("still open")
"""

ROUND_TRIP = """
import socket, sys, time
try:
    connection = socket.create_connection(("{address}", {port}), timeout=2)
    started = time.monotonic()
    connection.sendall(b"ping")
    connection.settimeout(2)
    answer = connection.recv(100)
    print(answer.decode() or "closed", round(time.monotonic() - started, 3))
except OSError as error:
    print("unreachable", type(error).__name__)
"""


@pytest.fixture
def two_hosts(
    tmp_path: Path,
) -> Iterator[tuple[NamespaceNetwork, Path, subprocess.Popen[bytes]]]:
    """Hosts a and b in namespaces, an echo server and a sink on b, a's proxy running; the
    network, the proxy's control file and the sink's process. All removed after."""
    network = NamespaceNetwork(["a", "b"], [ECHO_PORT, SINK_PORT], print)
    control = tmp_path / "a.json"
    write_delays(control, {})
    a, b = network.hosts["a"], network.hosts["b"]
    echo = ECHO.format(address=b.address, port=ECHO_PORT)
    sink = SINK.format(address=b.address, port=SINK_PORT)
    processes = [
        subprocess.Popen(network.wrap(b, [sys.executable, "-c", echo]), stdout=subprocess.PIPE),
        subprocess.Popen(network.wrap(b, [sys.executable, "-c", sink]), stdout=subprocess.PIPE),
        subprocess.Popen(
            network.wrap(a, [*PROXY_COMMAND, str(PROXY_PORT), str(control), hex(PROXY_MARK)]),
            stdout=subprocess.PIPE,
        ),
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            assert process.stdout.readline()  # listening
        yield network, control, processes[1]
    finally:
        for process in processes:
            process.kill()
            process.wait()
        network.close()


def round_trip(network: NamespaceNetwork) -> str:
    """From a to b's echo server: 'ping <seconds>', or 'unreachable ...'."""
    script = ROUND_TRIP.format(address=network.hosts["b"].address, port=ECHO_PORT)
    done = subprocess.run(
        network.wrap(network.hosts["a"], [sys.executable, "-c", script]),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout.strip()


@needs_namespaces
def test_links_are_delayed_by_the_proxy_and_cut_by_the_firewall(
    two_hosts: tuple[NamespaceNetwork, Path, subprocess.Popen[bytes]],
) -> None:
    """Through a's proxy a round trip to b takes the delays of both directions; a cut link
    carries nothing; healed, it carries again."""
    network, control, _ = two_hosts
    hosts = list(network.hosts.values())
    word, seconds = round_trip(network).split()
    assert word == "ping"
    assert float(seconds) < 0.15
    delayed = LinkFaults(delay_ms={("a", "b"): 150, ("b", "a"): 100})
    write_delays(control, proxy_delays(network.hosts["a"], hosts, delayed))
    time.sleep(0.2)  # the proxy looks at its control file every 50 ms
    word, seconds = round_trip(network).split()
    assert word == "ping"
    assert 0.25 <= float(seconds) < 0.6
    network.apply(LinkFaults(cut=frozenset({("a", "b")})))
    assert round_trip(network).split()[0] in ("unreachable", "closed")
    network.apply(LinkFaults())
    write_delays(control, {})
    time.sleep(0.2)
    assert round_trip(network).split()[0] == "ping"


@needs_namespaces
def test_a_connection_reset_at_one_end_is_reset_at_the_other(
    two_hosts: tuple[NamespaceNetwork, Path, subprocess.Popen[bytes]],
) -> None:
    """A server killed while its client only sends: the proxy's writes to the dead end are
    reset, and it must reset the client's side too, not keep it open swallowing what the
    client sends (a replica would never learn that its peer restarted: it did not, once)."""
    network, _, sink = two_hosts
    script = SEND_ONLY.format(address=network.hosts["b"].address, port=SINK_PORT)
    client = subprocess.Popen(
        network.wrap(network.hosts["a"], [sys.executable, "-c", script]),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert client.stdout is not None
    assert client.stdin is not None
    assert client.stdout.readline().strip() == "connected"
    sink.kill()
    sink.wait()
    client.stdin.write("go\n")
    client.stdin.flush()
    assert client.stdout.readline().split()[0] == "closed"
    client.wait(10)


def test_a_replica_refuses_a_clock_rate_beyond_the_drift_bound(tmp_path: Path) -> None:
    """The test clock hook runs no replica on a clock the lease does not allow for: one line,
    exit 2, no store made."""
    cell = LiveCell(tmp_path / "cell")
    cell.write_config()
    rate = tmp_path / "rate"
    rate.write_text("1.02\n")
    environment = {**child_environment(), "CHUBBYPY_TEST_CLOCK_RATE_FILE": str(rate)}
    done = subprocess.run(
        [*SERVE_COMMAND, "--config", str(cell.config_path), "--replica", "r1", "--bootstrap"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done
    assert done.stderr.splitlines() == [
        f"chubbypy serve: CHUBBYPY_TEST_CLOCK_RATE_FILE: {rate}: a clock rate of 1.02 is "
        "outside 1 ± paxos.clock_drift_max (0.01): the master lease assumes no clock drifts "
        "further"
    ]
    assert not (cell.data_dir / "r1").exists()


RUN_SECONDS = 42
RUN_SEED = 25
RUN_KINDS = ("partition-bridge", "partition-clients", "drop", "delay", "pause-client", "skew")
"""One round of these kinds fits in RUN_SECONDS with this seed, each once, the last begun
seconds before the end: the partitions, drops, delays and client pauses no other test
makes (skew cuts the master off too). `make faults` adds the other partitions, and kills,
pauses and restarts of replicas (which the fail-over tests make as well)."""
LOOPBACK_KINDS = ("pause-client", "skew")


def test_a_short_fault_run_finds_every_history_linearizable(tmp_path: Path) -> None:
    """`make faults` in small: a run over namespaces (or loopback where they cannot be made)
    injects its faults, and every checker passes on the history it records."""
    run = tmp_path / "run"
    kinds = RUN_KINDS if NAMESPACES is None else LOOPBACK_KINDS
    command = [sys.executable, "-m", "chubbypy.testing.faults", "run"]
    command += ["--seconds", str(RUN_SECONDS), "--seed", str(RUN_SEED), "--dir", str(run)]
    command += ["--kinds", ",".join(kinds)]
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as done:
        try:
            output, _ = done.communicate(timeout=RUN_SECONDS + 240)
        except subprocess.TimeoutExpired:
            done.terminate()  # the run cleans up its processes and namespaces on SIGTERM
            output, _ = done.communicate(timeout=60)
    assert done.returncode == 0, output
    assert "result: every history linearizable, every lock exclusive and fenced" in output
    assert "mutual exclusion: yes; fencing: yes" in output
    assert not run.exists(), "a run that passes leaves nothing behind"
    injected = output.split("faults injected:")[1].splitlines()[0]
    assert all(f" {kind}" in injected for kind in kinds), output
    if NAMESPACES is not None:
        assert "running the loopback variant" in output
