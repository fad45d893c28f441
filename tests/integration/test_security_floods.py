"""Floods of a replica's client port on real processes (issue 13, item 5; the security
suite's flood cases): too many connections, pipelined blocking acquires, a hello flood,
slowloris connections and a wrong-token storm. Each is aimed at the master from a process
of its own (`tests.integration.flooder`) while an honest client writes on; each is
refused where it passes a limit, visibly (an error frame naming the key, a metric), and
no fail-over happens: every replica names the same master at the same epoch throughout.
The honest client's writes per second before and during each flood are printed.
`make test` runs each flood smaller than `make floods` (CHUBBY_FLOODS=full) does: the sizes
are `flood_size(small, full)`; the checks are the same."""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from attrs import define, field

from chubbypy.client.blocking import BlockingCell
from chubbypy.protocol.client import ErrorReply
from chubbypy.protocol.errors import PermissionDenied
from chubbypy.protocol.framing import encode_frame
from chubbypy.protocol.wire import decode_wire, encode_wire
from tests.integration.flooder import hello_frame
from tests.integration.harness import LiveCell, Measure, flood_size

ROOT = Path(__file__).resolve().parents[2]
POLL_SECONDS = 0.05
QUIET_SECONDS = 1.0
OPERATOR, OPERATOR_TOKEN = "operator", "operator token for the flood tests"
CONNECTIONS = flood_size(1_000, 2_000)
"""Sockets opened at once past a limit of 500 connections."""
ACQUIRES = flood_size(10_001, 100_001)
"""Blocking acquires pipelined on one connection (1,000 may wait)."""
HELLOS = flood_size(1_500, 5_000)
"""Connections that each say hello at once."""
WRONG_TOKENS = flood_size(20_000, 100_000)
"""Authenticate requests with a wrong token, over 10 connections."""


@define
class Watch:
    """An honest client writing back to back, and every replica's /status, polled."""

    cell: LiveCell
    client: BlockingCell
    path: str
    stop: threading.Event = field(factory=threading.Event)
    writes: list[float] = field(factory=list)
    """When each honest write was acknowledged (monotonic seconds)."""
    errors: list[BaseException] = field(factory=list)
    masters: set[tuple[str, int]] = field(factory=set)
    """(replica, epoch) of every replica seen serving."""
    hints: set[tuple[str, str | None]] = field(factory=set)
    """(replica, the master it names) at each poll."""
    unanswered: list[str] = field(factory=list)
    """The replica, at each poll it did not answer."""

    def write(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                self.client.set_contents(self.path, str(n).encode())
            except Exception as error:  # reported by the test; the thread must not die
                self.errors.append(error)
                return
            self.writes.append(time.monotonic())

    def poll(self) -> None:
        while not self.stop.is_set():
            for rid in self.cell.running:
                status = self.cell.status(rid)
                if status is None:
                    self.unanswered.append(rid)
                    continue
                if status["serving"]:
                    self.masters.add((rid, status["epoch"]))
                self.hints.add((rid, status["master_hint"]))
            time.sleep(POLL_SECONDS)

    def rate(self, since: float, until: float) -> float:
        return sum(1 for t in self.writes if since <= t < until) / max(until - since, 1e-9)


@contextlib.contextmanager
def honest_writes(
    cell: LiveCell,
    measure: Measure,
    name: str,
    restarted: frozenset[str] = frozenset(),
    **client_options: Any,
) -> Iterator[Callable[[], None]]:
    """An honest client writes (and every replica is watched) for the block, which calls
    the function it is given when its flood begins. Afterwards: the writes all
    succeeded, went on during the flood, and no replica changed master or epoch (a
    replica in `restarted`, restarted by the block, may also have known no master while
    it started)."""
    master = cell.wait_master()
    client = cell.client(**client_options)
    path = cell.path("honest-" + name.replace(" ", "-"))
    client.create(path, b"0")
    watch = Watch(cell, client, path)
    threads = [threading.Thread(target=watch.write), threading.Thread(target=watch.poll)]
    for thread in threads:
        thread.start()
    flood_began: list[float] = []
    try:
        time.sleep(QUIET_SECONDS)
        yield lambda: flood_began.append(time.monotonic())
    finally:
        ended = time.monotonic()
        time.sleep(QUIET_SECONDS)
        watch.stop.set()
        for thread in threads:
            thread.join()
    began = flood_began[0]
    before, during = watch.rate(began - QUIET_SECONDS, began), watch.rate(began, ended)
    print(f"\n{name}: honest writes {before:.0f}/s before, {during:.0f}/s during the flood")
    acknowledged = [began, *(t for t in watch.writes if began <= t < ended), ended]
    measure(f"{name}: flood lasted", ended - began)
    measure(f"{name}: longest wait for an honest write during the flood",
            max(b - a for a, b in itertools.pairwise(acknowledged)))  # fmt: skip
    assert watch.errors == [], watch.errors
    assert client.get_contents_and_stat(path).contents == str(len(watch.writes)).encode()
    # Writes went on: one was acknowledged during the flood, or (a flood refused within a
    # write's round trip is over before one can finish) within a second of its start.
    window_end = max(ended, began + QUIET_SECONDS)
    assert any(began <= t < window_end for t in watch.writes), "no honest write went on"
    epoch = cell.status(master)["epoch"]  # type: ignore[index]
    assert watch.masters == {(master, epoch)}, f"fail-over: {sorted(watch.masters)}"
    hints = {hint for rid, hint in watch.hints if hint is not None or rid not in restarted}
    assert hints == {master}, watch.hints
    unanswered = set(watch.unanswered) - restarted
    assert not unanswered, f"a replica's admin port did not answer: {sorted(unanswered)}"


def flood(cell: LiveCell, master: str, *arguments: str) -> dict[str, Any]:
    """Run one flood of `tests.integration.flooder` at the master; its report."""
    command = [sys.executable, "-m", "tests.integration.flooder", arguments[0]]
    command += [str(cell.ports[master].client), cell.name, *arguments[1:]]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=120, cwd=ROOT, check=True
    )
    report: dict[str, Any] = json.loads(done.stdout)
    print(json.dumps(report))
    return report


def counter(cell: LiveCell, rid: str, series: str) -> float:
    """One series (name and labels, as rendered) of a replica's /metrics; 0 if absent."""
    body = cell.admin_get(rid, "/metrics") or ""
    for line in body.splitlines():
        name, _, value = line.rpartition(" ")
        if name == series:
            return float(value)
    return 0.0


def test_connections_past_the_limit_are_refused_and_peers_and_admin_go_on(
    make_cell: Callable[..., LiveCell], measure: Measure
) -> None:
    """With client_connections_max 500, CONNECTIONS sockets opened at once (held 3 s, less
    than the hello time-out): the replica never holds more than 500 (the honest client's
    among them), and each other socket it accepts gets a BUSY frame naming the key and is
    closed; the admin port and the peers keep serving (no fail-over), and the honest
    client writes on. (A socket the kernel completed with a SYN cookie while the backlog
    was full may never reach the replica at all: it gets nothing, and costs nothing.)"""
    cell = make_cell(limits={"client_connections_max": 500})
    master = cell.wait_master()
    held: list[float] = []
    stop = threading.Event()

    def watch_connections() -> None:
        while not stop.is_set():
            held.append(cell.metric(master, "chubbypy_client_connections"))
            time.sleep(POLL_SECONDS)

    with honest_writes(cell, measure, "fd flood") as began:
        watcher = threading.Thread(target=watch_connections)
        watcher.start()
        began()
        report = flood(cell, master, "connections", str(CONNECTIONS), "3")
        stop.set()
        watcher.join()
    assert report["connected"] == CONNECTIONS
    assert set(report["first_message"]) <= {"nothing", "BUSY"}, report
    refused = report["first_message"].get("BUSY", 0)
    assert refused >= (CONNECTIONS - 500) // 2, report
    assert "limits.client_connections_max" in report["error_text"]
    assert report["closed_by_replica"] == refused
    assert cell.metric(master, "chubbypy_client_connections_refused_total") >= refused
    assert cell.metric(master, "chubbypy_client_connections_max") == 500
    print(f"fd flood: the replica held at most {max(held):.0f} client connections")
    assert 400 <= max(held) <= 500, max(held)


def test_pipelined_blocking_acquires_are_bounded_per_session(
    make_cell: Callable[..., LiveCell], measure: Measure
) -> None:
    """ACQUIRES blocking acquires of a held lock, pipelined on one connection: the replica
    reads them as it handles them (back-pressure), at most calls_waiting_per_session_max
    (1,000) wait and every other is refused RESOURCE_EXHAUSTED naming the key, while the
    master keeps its lease and the honest client writes on. (Sessions' leases are a minute
    here: the flooding session sends no KeepAlive while its calls are answered.)"""
    cell = make_cell(sessions={"lease_seconds": 60.0})
    master = cell.wait_master()
    with honest_writes(cell, measure, "pipelined acquires") as began:
        began()
        report = flood(cell, master, "acquires", str(ACQUIRES), cell.path("flood-lock"))
    assert report["sent"] == ACQUIRES
    assert report["replies"].get("RESOURCE_EXHAUSTED", 0) == ACQUIRES - 1_000, report
    assert "limits.calls_waiting_per_session_max" in report["message"]
    assert counter(cell, master, 'chubbypy_client_reads_paused_total{reason="requests"}') > 0
    assert counter(cell, master, "chubbypy_client_turns_full_total") > 0
    measure(f"pipelined acquires: all {ACQUIRES:,} sent and answered", report["seconds"])


def test_a_hello_flood_is_served_in_turns_without_a_fail_over(
    make_cell: Callable[..., LiveCell], measure: Measure
) -> None:
    """HELLOS connections that each say hello at once (held 5 s) are welcomed, a bounded
    number per turn of the event loop, while the master keeps its lease (no fail-over) and the
    honest client writes on; the turns' durations are on /metrics."""
    cell = make_cell()
    master = cell.wait_master()
    with honest_writes(cell, measure, "hello flood") as began:
        began()
        report = flood(cell, master, "connections", str(HELLOS), "5", "--hello")
    assert report["connected"] == HELLOS
    # Every hello the replica read was welcomed; on a loaded machine a few sockets may not
    # have been accepted yet when the flooder lets go (the backlog is small).
    assert set(report["first_message"]) <= {"Welcome", "nothing"}, report
    assert report["first_message"]["Welcome"] >= HELLOS * 9 // 10, report
    turns = counter(cell, master, "chubbypy_reactor_turn_seconds_count")
    slow = turns - counter(cell, master, 'chubbypy_reactor_turn_seconds_bucket{le="0.2"}')
    print(f"hello flood: {turns:.0f} turns, {slow:.0f} longer than 0.2 s")
    assert turns > 0


def _raw(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def _closing_frame(sock: socket.socket) -> tuple[ErrorReply | None, bool]:
    """The error frame the replica sent before closing (None if none), and whether it
    closed the connection."""
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        received += chunk
    closed = True
    if len(received) < 4:
        return None, closed
    (length,) = struct.unpack(">I", received[:4])
    message = decode_wire(received[4 : 4 + length])
    return (message if isinstance(message, ErrorReply) else None), closed


def test_slowloris_connections_are_timed_out(
    make_cell: Callable[..., LiveCell], measure: Measure
) -> None:
    """A socket that never says hello, 200 that send half a hello, and a greeted one that
    sends half a request are each closed within a few seconds with an error frame naming
    the key (hello_timeout_seconds, frame_timeout_seconds: 1 s here); the time-outs are on
    /metrics, and the honest client writes on."""
    cell = make_cell(limits={"hello_timeout_seconds": 1.0, "frame_timeout_seconds": 1.0})
    master = cell.wait_master()
    port = cell.ports[master].client
    with honest_writes(cell, measure, "slowloris") as began:
        began()
        silent = _raw(port)
        halves = [_raw(port) for _ in range(200)]
        hello = hello_frame(cell.name)
        for sock in halves:
            sock.sendall(hello[: len(hello) // 2])
        greeted = _raw(port)
        greeted.sendall(hello)
        assert len(greeted.recv(65536)) > 4  # its Welcome
        request = encode_frame(encode_wire(ErrorReply(1, 40, "x" * 100, None)))
        greeted.sendall(request[:20])
        started = time.monotonic()
        outcomes = [_closing_frame(sock) for sock in [silent, *halves, greeted]]
        took = time.monotonic() - started
    for sock in [silent, *halves, greeted]:
        sock.close()
    assert all(closed for _, closed in outcomes)
    hello_closed = [frame for frame, _ in outcomes[:-1]]
    assert all(f is not None and "limits.hello_timeout_seconds" in f.message for f in hello_closed)
    frame_closed = outcomes[-1][0]
    assert frame_closed is not None
    assert "limits.frame_timeout_seconds" in frame_closed.message
    assert took < 5.0
    assert counter(cell, master, 'chubbypy_client_timeouts_total{kind="hello"}') == 201
    assert counter(cell, master, 'chubbypy_client_timeouts_total{kind="frame"}') == 1
    measure("slowloris: all 202 closed within", took)


def test_a_wrong_token_storm_is_limited_and_logged_in_a_few_lines(
    make_cell: Callable[..., LiveCell], measure: Measure
) -> None:
    """WRONG_TOKENS wrong-token Authenticate requests on 10 connections: each connection is
    closed after 3 failures (answered, naming the key), the host is then refused even the
    right token for the principal the storm claimed (its budget: 5 failures a minute here)
    while another principal from the same host is admitted, the log holds a few lines for
    it all, and the honest operator, authenticated before, writes on. (That the host is let
    in again once its budget refills is shown by the node's unit tests.)"""
    auth = {"principals": {OPERATOR: OPERATOR_TOKEN, "builder": "the builder's own token"}}
    limits = {"auth_failures_per_address_max": 5, "auth_failures_window_seconds": 60.0}
    cell = make_cell(auth=auth, limits=limits)
    master = cell.wait_master()
    lines_before = len(cell.log(master).splitlines())
    with honest_writes(
        cell, measure, "wrong-token storm", principal=OPERATOR, token=OPERATOR_TOKEN
    ) as began:
        began()
        report = flood(cell, master, "tokens", str(WRONG_TOKENS), "10")
        refused_meanwhile = _authenticate(cell)
        builder_meanwhile = _authenticate(cell, "builder", "the builder's own token")
    assert report["closed_by_replica"] == 10
    assert sum(report["replies"].values()) == 30, report
    assert set(report["replies"]) == {"PERMISSION_DENIED"}
    assert any("limits.auth_failures_per_connection_max" in m for m in report["messages"])
    assert isinstance(refused_meanwhile, PermissionDenied), refused_meanwhile
    assert builder_meanwhile is None, builder_meanwhile
    assert "too many failed authentications" in str(refused_meanwhile)
    new_lines = cell.log(master).splitlines()[lines_before:]
    authentication_lines = [line for line in new_lines if "authentication" in line]
    assert len(authentication_lines) <= 20, authentication_lines
    assert counter(cell, master, 'chubbypy_authentications_total{outcome="refused"}') == 5
    # 25 of the storm's, and the new operator connection's (once or more: it may retry).
    assert counter(cell, master, 'chubbypy_authentications_total{outcome="rate_limited"}') >= 26


def _authenticate(
    cell: LiveCell, principal: str = OPERATOR, token: str = OPERATOR_TOKEN
) -> Exception | None:
    """A new client's connection as `principal`: None if it was admitted, else its error."""
    try:
        client = cell.client(principal=principal, token=token, timeout_seconds=5)
        client.get_stat(cell.path(""))
    except Exception as error:  # the refusal is the result
        return error
    return None


def test_the_idle_time_out_spares_sessions_and_plain_clients_dial_again(
    make_cell: Callable[..., LiveCell], measure: Measure
) -> None:
    """With idle_timeout_seconds 1 (and 6 s session leases): a client holding a lock
    through its session keeps it for 6 s, the KeepAlive it always has in progress keeping
    its connection from being idle; a plain client idle for 3 s has its connection closed
    (counted on /metrics) and its next write simply dials again."""
    cell = make_cell(
        limits={"idle_timeout_seconds": 1.0},
        sessions={"lease_seconds": 6.0, "keepalive_answer_before_seconds": 2.0},
    )
    master = cell.wait_master()
    holder = cell.client()
    handle = holder.open(cell.path("held"), create=True)
    handle.acquire()
    plain = cell.client()
    plain.create(cell.path("plain"), b"0")
    time.sleep(6.0)
    assert counter(cell, master, 'chubbypy_client_timeouts_total{kind="idle"}') >= 1
    assert holder.state is not None
    assert holder.state.name == "CONNECTED", holder.state
    assert handle.get_sequencer()  # still holds the lock: its session never lapsed
    plain.set_contents(cell.path("plain"), b"1")
    assert plain.get_contents_and_stat(cell.path("plain")).contents == b"1"


def _squat(port: int, stop: threading.Event, opened: list[int], per_second: float) -> None:
    """Open silent connections to `port` at about `per_second` until `stop` (each left to
    the replica to close); count them in `opened`."""
    held: list[socket.socket] = []
    while not stop.is_set():
        with contextlib.suppress(OSError):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            held.append(sock)
            opened.append(1)
        time.sleep(1 / per_second)
        if len(held) > 300:  # the replica closed these long ago; free our descriptors
            for sock in held[:100]:
                sock.close()
            del held[:100]
    for sock in held:
        sock.close()


def test_squatters_on_the_peer_ports_cannot_keep_a_restarted_member_out(
    make_cell: Callable[..., LiveCell], measure: Measure
) -> None:
    """Silent connections opened to every replica's peer port throughout (about 150 a
    second each, from the members' own address) while a follower is killed and restarted:
    the restarted follower proves itself through them and catches up, the master keeps its
    lease (no fail-over), and the squatters are closed unproven (by the hello time-out or to
    make room for newer ones), counted on /metrics."""
    cell = make_cell(limits={"hello_timeout_seconds": 1.0})
    master = cell.wait_master()
    follower = next(rid for rid in cell.running if rid != master)
    stop, opened = threading.Event(), list[int]()
    squatters = [
        threading.Thread(target=_squat, args=(cell.ports[rid].peer, stop, opened, 150.0))
        for rid in cell.running
    ]
    with honest_writes(cell, measure, "peer port squatters", frozenset({follower})) as began:
        for thread in squatters:
            thread.start()
        began()
        time.sleep(1.5)
        cell.kill_replica(follower)
        time.sleep(0.5)
        restarted = time.monotonic()
        cell.start_replica(follower)
        cell.wait_caught_up(follower, timeout=20.0)
        measure(
            "peer port squatters: the restarted follower caught up in", time.monotonic() - restarted
        )
        stop.set()
        for thread in squatters:
            thread.join()
    closed = sum(
        cell.metric(rid, "chubbypy_peer_handshakes_timed_out_total")
        + cell.metric(rid, "chubbypy_peer_handshakes_evicted_total")
        for rid in cell.running
    )
    print(f"peer port squatters: {len(opened)} opened, {closed:.0f} closed unproven")
    assert len(opened) > 300
    assert closed >= len(opened) // 2
    assert all(cell.metric(rid, "chubbypy_peer_connections_unproven") <= 64 for rid in cell.running)


def test_the_admin_port_bounds_connections_and_request_bodies(
    make_cell: Callable[..., LiveCell],
) -> None:
    """With admin_connections_max 20 and 12 per address: of 15 connections from one
    address 12 are served and 3 answered 503 naming the per-address key; of 15 more from
    another, 8 are served and 7 answered 503 naming admin_connections_max; a request head
    dribbled in is answered 408 at admin_request_head_seconds, a long request line 414; a
    POST declaring 1 GB, and a chunked one past 16 KiB, are answered 413 before the
    replica stores them; /status still answers, and names no server."""
    cell = make_cell(
        limits={
            "admin_connections_max": 20,
            "admin_connections_per_address_max": 12,
            "admin_request_head_seconds": 1.0,
        }
    )
    master = cell.wait_master()
    port = cell.ports[master].admin
    held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(15)]
    held += [
        socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.0.0.2", 0))
        for _ in range(15)
    ]
    answers = []
    for sock in held:
        sock.settimeout(0.5)
        try:
            answers.append(sock.recv(4096))
        except TimeoutError:
            answers.append(b"")
    first, second = answers[:15], answers[15:]
    assert [bool(a) for a in first] == [False] * 12 + [True] * 3, first
    assert all(b"limits.admin_connections_per_address_max (12)" in a for a in first[12:])
    assert [bool(a) for a in second] == [False] * 8 + [True] * 7, second
    assert all(b"limits.admin_connections_max (20)" in a for a in second[8:])
    assert all(a.startswith(b"HTTP/1.1 503") for a in first[12:] + second[8:])
    for sock in held:
        sock.close()
    cell.wait_for(lambda: cell.status(master), "the admin port serves again", 5.0)
    assert cell.metric(master, "chubbypy_admin_connections_refused_total") == 7
    assert cell.metric(master, "chubbypy_admin_connections_per_address_refused_total") == 3
    slow = socket.create_connection(("127.0.0.1", port), timeout=5)
    slow.sendall(b"GET /status HTTP/1.1\r\nhost: x\r\n")
    with contextlib.suppress(OSError):
        for _ in range(3):
            time.sleep(0.4)  # a header line at a time, each well within the idle time-out
            slow.sendall(b"x-slow: 1\r\n")
    assert slow.recv(4096).startswith(b"HTTP/1.1 408")
    slow.close()
    long = socket.create_connection(("127.0.0.1", port), timeout=5)
    long.sendall(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n")
    answered = long.recv(4096)
    long.close()
    assert answered.startswith(b"HTTP/1.1 414"), answered
    assert b"limits.admin_request_head_bytes_max (8192)" in answered
    assert cell.metric(master, "chubbypy_admin_request_heads_too_slow_total") == 1
    assert cell.metric(master, "chubbypy_admin_request_heads_too_large_total") == 1
    declared = socket.create_connection(("127.0.0.1", port), timeout=5)
    declared.sendall(b"POST /status HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000000\r\n\r\n")
    assert declared.recv(4096).startswith(b"HTTP/1.1 413")
    chunked = socket.create_connection(("127.0.0.1", port), timeout=5)
    chunked.sendall(b"POST /status HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
    with contextlib.suppress(OSError):  # the replica closes mid-body
        for _ in range(64):
            chunked.sendall(b"400\r\n" + b"x" * 1024 + b"\r\n")
    assert chunked.recv(4096).startswith(b"HTTP/1.1 413")
    declared.close()
    chunked.close()
    assert cell.metric(master, "chubbypy_admin_requests_too_large_total") == 2
    assert cell.status(master) is not None
    plain = socket.create_connection(("127.0.0.1", port), timeout=5)
    plain.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    head = plain.recv(4096).split(b"\r\n\r\n")[0].lower()
    plain.close()
    assert head.startswith(b"http/1.1 200")
    assert b"\r\nserver:" not in head
