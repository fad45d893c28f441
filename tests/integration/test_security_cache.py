"""Issue 13's review, against live three-replica cells: a cacher that never acknowledges
its invalidations, one session caching name after name, and a retried CreateSession or
Register replayed with a nonce read from a replica's store. Each attack, as the
reviewer's scripts (`/tmp/review13-attacks/cache_stall.py`, `cache_names.py`,
`steal_session.py`, `hijack_client.py`) made it, is shown bounded or refused while honest
clients carry on."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable

from chubbypy.client import Session
from chubbypy.client.blocking import BlockingCell, running_reactor
from chubbypy.protocol import NO_CLIENT
from chubbypy.protocol.client import ErrorReply, Register, Registered, SessionReply, SessionRequest
from chubbypy.protocol.codec import decode_value
from chubbypy.protocol.errors import ErrorCode
from chubbypy.protocol.namespace import OpenSession
from chubbypy.protocol.namespace_codec import decode_log_write
from chubbypy.protocol.session import (
    CreateSession,
    KeepAlive,
    LeaseExtended,
    NodeRead,
    ReadNode,
    SessionCreated,
)
from tests.integration.harness import LiveCell, Measure
from tests.integration.test_cache import session_of
from tests.integration.test_sessions import on_reactor
from tests.integration.wire_client import WireClient

LEASE_SECONDS = 3.0
SHORT_LEASES = {"lease_seconds": LEASE_SECONDS, "keepalive_answer_before_seconds": 1.0}
ALICE, ALICE_TOKEN = "alice", "alice's token for the cache suite"
AUTH = {"principals": {ALICE: ALICE_TOKEN}}


def attacker(cell: LiveCell) -> WireClient:
    """An anonymous connection to the master's client port, speaking the wire directly."""
    return WireClient(cell.ports[cell.wait_master()].client, cell.name)


def session_call(client: WireClient, call: object) -> object:
    """A session call's result, or the ErrorReply that refused it."""
    reply = client.call(lambda rid: SessionRequest(rid, call))  # type: ignore[arg-type]
    return reply.result if isinstance(reply, SessionReply) else reply


# ----------------------------------------------------------------------------- stalling


class Staller:
    """cache_stall.py: a session that caches `path`, then KeepAlives every 0.3 s without
    ever acknowledging an event, until the master refuses it."""

    def __init__(self, cell: LiveCell, path: str) -> None:
        self._client = attacker(cell)
        created = session_call(self._client, CreateSession("cache-staller", 4242))
        assert isinstance(created, SessionCreated), created
        self._session = (created.session_id, created.credential)
        read = session_call(self._client, ReadNode(*self._session, path, True))
        assert isinstance(read, NodeRead), read
        assert read.cached
        self.answers: list[LeaseExtended] = []
        self.refused: ErrorReply | None = None
        self._thread = threading.Thread(target=self._keep_alive, daemon=True)
        self._thread.start()

    def _keep_alive(self) -> None:
        while self.refused is None:
            answer = session_call(self._client, KeepAlive(*self._session, 0))
            if isinstance(answer, ErrorReply):
                self.refused = answer
                return
            assert isinstance(answer, LeaseExtended), answer
            self.answers.append(answer)
            time.sleep(0.3)

    def ended(self, timeout: float) -> ErrorReply:
        self._thread.join(timeout)
        assert self.refused is not None, "the staller's KeepAlives are still answered"
        self._client.close()
        return self.refused


def test_a_cacher_that_never_acknowledges_holds_a_write_up_a_lease_at_most(
    make_cell: Callable[..., LiveCell], measure: Measure
) -> None:
    """cache_stall.py against a cell with 3 s leases: an honest writer's write to the file
    the staller caches completes within a lease and a second (it waited for ever before:
    the staller's lease was renewed on each KeepAlive), the staller's session is then
    ended, and writes flow at once again; an honest session caching the same file, which
    acknowledges in its next KeepAlive, keeps its session and sees every write."""
    cell = make_cell(sessions=SHORT_LEASES)
    path = cell.path("stalled")
    writer = cell.client(timeout_seconds=4 * LEASE_SECONDS)
    writer.create(path, b"0")
    honest = session_of(cell)
    assert on_reactor(lambda: honest.get_contents_and_stat(path))[0] == b"0"
    staller = Staller(cell, path)
    time.sleep(0.5)
    started = time.monotonic()
    writer.set_contents(path, b"1")
    held = time.monotonic() - started
    measure("a write held by a cacher that never acknowledges", held)
    assert held <= LEASE_SECONDS + 1.0, f"held {held:.1f}s"
    refused = staller.ended(timeout=2 * LEASE_SECONDS)
    assert refused.code is ErrorCode.SESSION_EXPIRED
    invalidations = [a for a in staller.answers if a.events]
    assert invalidations, "the staller was told"
    assert max(a.lease_ms for a in invalidations) <= LEASE_SECONDS * 1000, "no longer lease"
    for n in range(2, 12):
        started = time.monotonic()
        writer.set_contents(path, str(n).encode())
        assert time.monotonic() - started < 1.0, "writes flow again"
        assert on_reactor(lambda: honest.get_contents_and_stat(path))[0] == str(n).encode()
    time.sleep(LEASE_SECONDS)  # the honest session lives on past a lease of invalidations
    assert on_reactor(lambda: honest.get_contents_and_stat(path))[0] == b"11"


# ----------------------------------------------------------------------------- names


def test_one_session_caches_at_most_its_limit_of_names(
    make_cell: Callable[..., LiveCell],
) -> None:
    """cache_names.py, scaled down: one anonymous session reads 600 distinct absent names
    of 800 bytes with caching on, pipelined, against a limit of 200: every read is
    answered, 200 are registered, the other 400 are counted on /metrics
    (chubbypy_cached_names_refused_total), the master keeps 200 names; an honest session
    still caches what it reads."""
    cell = make_cell(limits={"cached_names_per_session_max": 200})
    master = cell.wait_master()
    client = attacker(cell)
    created = session_call(client, CreateSession("cache-namer", 777))
    assert isinstance(created, SessionCreated), created
    session = (created.session_id, created.credential)
    prefix = cell.path("/".join(["d" * 200] * 4)) + "/"
    count = 600
    client.send(
        [
            lambda rid, n=n: SessionRequest(rid, ReadNode(*session, f"{prefix}n{n:08d}", True))  # type: ignore[misc]
            for n in range(count)
        ]
    )
    replies = [client.receive() for _ in range(count)]
    client.close()
    reads = [r.result for r in replies if isinstance(r, SessionReply)]
    assert len(reads) == count, "every read is answered"
    assert sum(1 for read in reads if isinstance(read, NodeRead) and read.cached) == 200
    assert cell.metric(master, "chubbypy_cached_names_refused_total") == 400
    assert cell.metric(master, "chubbypy_cached_names") == 200
    honest = session_of(cell)
    other = cell.path("honest")
    cell.client().create(other, b"x")
    for _ in range(2):
        assert on_reactor(lambda: honest.get_contents_and_stat(other))[0] == b"x"
    assert honest.cache.hits >= 1, "an honest session still caches"


# ----------------------------------------------------------------------------- nonces


def logged_nonces(cell: LiveCell, rid: str) -> tuple[list[int], list[tuple[str, int]]]:
    """What a reader of replica `rid`'s store (not its _secrets/) finds in the log:
    registration nonces, and (name, nonce) of each OpenSession, in log order."""
    store = cell.data_dir / rid / "replica.sqlite"
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    registrations, sessions = [], []
    for (blob,) in db.execute("select value from log_entries order by log_index"):
        for command in decode_value(blob).commands:
            if command.client_id == NO_CLIENT:
                registrations.append(command.sequence)
                continue
            try:
                write = decode_log_write(command.payload)
            except Exception:
                continue
            if isinstance(write, OpenSession):
                sessions.append((write.name, write.nonce))
    db.close()
    return registrations, sessions


def test_a_nonce_read_from_the_store_gets_no_one_else_s_session_or_client(
    make_cell: Callable[..., LiveCell],
) -> None:
    """steal_session.py and hijack_client.py: alice registers (a write) and opens a
    session; an anonymous attacker reads every nonce from a replica's store and replays
    each CreateSession and Register. Every replay is refused PERMISSION_DENIED (before,
    each answered with alice's id and credential); alice's session and writes carry on."""
    cell = make_cell(auth=AUTH)
    victim: BlockingCell = cell.client(principal=ALICE, token=ALICE_TOKEN)
    path = cell.path("alices")
    victim.create(path, b"1")
    session = on_reactor(lambda: Session.open(victim._cell, running_reactor()))  # type: ignore[arg-type]
    registrations, sessions = logged_nonces(cell, cell.wait_master())
    assert registrations, "alice's registration is in the log"
    assert sessions, "alice's OpenSession is in the log"
    thief = attacker(cell)
    for nonce in registrations:
        reply = thief.call(lambda rid, nonce=nonce: Register(rid, nonce))  # type: ignore[misc]
        assert not isinstance(reply, Registered), reply
        assert isinstance(reply, ErrorReply), reply
        assert reply.code is ErrorCode.PERMISSION_DENIED
    for name, nonce in sessions:
        refused = session_call(thief, CreateSession(name, nonce))
        assert isinstance(refused, ErrorReply), refused
        assert refused.code is ErrorCode.PERMISSION_DENIED
    thief.close()
    victim.set_contents(path, b"2")
    assert victim.get_contents_and_stat(path).contents == b"2"
    assert on_reactor(lambda: session.get_contents_and_stat(path))[0] == b"2"
