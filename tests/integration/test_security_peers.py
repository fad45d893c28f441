"""Issue 13's attacks on the peer port and on the shipped secrets, against real processes:
each is refused with nothing changed, the master keeps its lease and the cell serves.

The attacker is a process on the same machine that knows only the repository: the wire
protocol, the shipped cell files, and every key or token the repository ever held.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from chubbypy.client._errors import ReplicaUnreachable
from chubbypy.client.blocking import connect
from chubbypy.node import handle_key_for
from chubbypy.paxos import membership_of_ids
from chubbypy.protocol import (
    Ballot,
    CatchUp,
    Command,
    Entry,
    Epoch,
    Heartbeat,
    LogIndex,
    ReplicaId,
    Value,
    ValueKind,
)
from chubbypy.protocol.client import (
    PROTOCOL_VERSION,
    ConnectionRole,
    ErrorReply,
    Hello,
    PeerChallenge,
    PeerChallengeReply,
    PeerFrame,
    PeerProof,
    SessionRequest,
    WireMessage,
)
from chubbypy.protocol.errors import ErrorCode, Unavailable
from chubbypy.protocol.framing import FrameDecoder, encode_frame
from chubbypy.protocol.namespace import SetContents
from chubbypy.protocol.namespace_codec import encode_write
from chubbypy.protocol.session import (
    CloseSession,
    HandleMode,
    HandleWrite,
    KeepAlive,
    ReleaseLock,
)
from chubbypy.protocol.values import CallNumber, ClientId, SessionId
from chubbypy.protocol.wire import decode_wire, encode_wire
from chubbypy.server._certificates import issue_replica_certificate, new_authority
from chubbypy.sessions import Handle, session_credential
from tests.integration.harness import (
    REPLICA_IDS,
    LiveCell,
    child_environment,
    poll,
)
from tests.integration.wire_client import WireClient

REPOSITORY_SECRETS = (
    "local cell: replace with a long random secret",  # the handle key etc/cell.yaml shipped
    "local operator token: replace me",  # the operator token it shipped
    "an integration test handle key",  # a handle key a test once wrote
)
"""Every secret the repository ever held: what an attacker who read it would try."""
REPLY_SECONDS = 5.0
FAST_CHECKSUMS = {"checksum_every_seconds": 0.5}


# ----------------------------------------------------------------------------- the attacker


class PeerAttacker:
    """A raw connection to a replica's peer port (TLS with `context`), that says what it is
    told and reads what comes back."""

    def __init__(self, port: int, context: ssl.SSLContext | None = None) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=REPLY_SECONDS)
        self.socket = raw if context is None else context.wrap_socket(raw, server_hostname="r1")
        self._decoder = FrameDecoder(1 << 24)
        self._pending: list[WireMessage] = []

    def send(self, *messages: WireMessage) -> None:
        self.socket.sendall(b"".join(encode_frame(encode_wire(m)) for m in messages))

    def receive(self) -> WireMessage | None:
        """The next message, or None once the replica closed the connection."""
        while not self._pending:
            try:
                data = self.socket.recv(1 << 16)
            except (ConnectionResetError, ssl.SSLError):
                return None
            if not data:
                return None
            self._pending += [decode_wire(body) for body in self._decoder.feed(data)]
        return self._pending.pop(0)

    def refused(self) -> ErrorReply:
        """The replica's refusal, after which it closes the connection."""
        refusal = self.receive()
        assert isinstance(refusal, ErrorReply), refusal
        assert self.receive() is None, "the connection stayed open after the refusal"
        return refusal

    def close(self) -> None:
        self.socket.close()


def forged_messages(cell: LiveCell, master: str, status: dict[str, Any]) -> list[WireMessage]:
    """Issue 13's two messages: a Heartbeat whose ballot outbids the master's (a forced
    fail-over), and a CatchUp carrying a SetContents as the master's own command."""
    ballot = Ballot(1 << 29, ReplicaId(master))  # in range: refused for who sends it
    index = LogIndex(status["chosen_index"] + 1)
    write = encode_write(SetContents(cell.path("target"), b"forged by the attacker"))
    value = Value(Epoch(status["epoch"]), ValueKind.COMMANDS, (Command(ClientId(1), 99, write),))
    return [
        PeerFrame(Heartbeat(ballot, LogIndex(status["chosen_index"]), 0, index)),
        PeerFrame(CatchUp((Entry(index, ballot, value),), index, membership_of_ids(REPLICA_IDS))),
    ]


def guessed_proof(
    key: str, claimed: str, listener: str, cell: str, nonces: tuple[bytes, bytes]
) -> bytes:
    """The connector's proof as the protocol defines it, under a key the attacker guessed."""
    fields = ["chubbypy peer proof v1", "connector", cell, claimed, listener, *nonces]
    return hmac.new(key.encode(), msgpack.packb(fields), hashlib.sha256).digest()


def assert_unharmed(cell: LiveCell, master: str, epoch: int, contents: bytes) -> None:
    """The same master at the same epoch (no fail-over), every replica's state the
    master's (checksums compared since), the target untouched, and the cell serving."""
    for rid, status in cell.statuses(REPLICA_IDS).items():
        assert (status["epoch"], status["master_hint"]) == (epoch, master), (rid, status)
    compared = cell.metric(master, "chubbypy_checksum_comparisons_total")
    cell.wait_for(
        lambda: cell.metric(master, "chubbypy_checksum_comparisons_total") >= compared + 4,
        "the master compares every replica's state checksum again",
        15,
    )
    assert cell.metric(master, "chubbypy_checksum_mismatches_total") == 0
    assert cell.statuses()[master]["divergence"] is None
    client = cell.client()
    assert client.get_contents_and_stat(cell.path("target")).contents == contents
    client.set_contents(cell.path("target"), b"still serving")
    assert cell.master() == master
    assert cell.statuses()[master]["epoch"] == epoch


# ----------------------------------------------------------------------------- peer key


def test_a_forged_peer_gets_nothing_applied_and_forces_no_fail_over(
    make_cell: Callable[..., LiveCell],
) -> None:
    """Forged Heartbeats and CatchUps sent to every replica's peer port, before a hello's
    proof, mid-handshake, and after a proof under each key the repository ever held, are
    refused PERMISSION_DENIED and the connection closed; nothing is applied, the master
    keeps its lease (same epoch), and the cell serves."""
    cell = make_cell(paxos=FAST_CHECKSUMS)
    master = cell.wait_ready()
    client = cell.client()
    client.create(cell.path("target"), b"original")
    status = cell.wait_caught_up(next(r for r in REPLICA_IDS if r != master), 10)
    forged = forged_messages(cell, master, status)
    for _ in range(10):  # the issue's "ten a second"
        for rid in REPLICA_IDS:
            claimed = master if rid != master else next(r for r in REPLICA_IDS if r != rid)
            hello = Hello(PROTOCOL_VERSION, cell.name, ConnectionRole.PEER, claimed)
            port = cell.ports[rid].peer
            blunt = PeerAttacker(port)
            blunt.send(hello, *forged)
            assert blunt.refused().code is ErrorCode.PERMISSION_DENIED
            midway = PeerAttacker(port)
            midway.send(hello, PeerChallenge(os.urandom(32)))
            assert isinstance(midway.receive(), PeerChallengeReply)
            midway.send(*forged)
            assert midway.refused().code is ErrorCode.PERMISSION_DENIED
            for key in REPOSITORY_SECRETS:
                guesser = PeerAttacker(port)
                ours = os.urandom(32)
                guesser.send(hello, PeerChallenge(ours))
                reply = guesser.receive()
                assert isinstance(reply, PeerChallengeReply), reply
                proof = guessed_proof(key, claimed, rid, cell.name, (ours, reply.nonce))
                guesser.send(PeerProof(proof), *forged)
                refusal = guesser.refused()
                assert refusal.code is ErrorCode.PERMISSION_DENIED
                assert "peer key" in refusal.message
        time.sleep(0.1)
    assert_unharmed(cell, master, status["epoch"], b"original")
    log = cell.log(master)
    assert "closing a peer connection from" in log
    assert log.count("closing a peer connection from") < 20, "refusals must be rate-limited"


class Squatter:
    """A process that took a stopped replica's peer port: it answers every hello and
    challenge with a nonce and a proof of its own making, and records what it is sent."""

    def __init__(self, port: int) -> None:
        self.received: list[WireMessage] = []
        self._listener = socket.create_server(("127.0.0.1", port))
        self._listener.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        decoder = FrameDecoder(1 << 24)
        connection.settimeout(0.5)
        with connection:
            while not self._stop.is_set():
                try:
                    data = connection.recv(1 << 16)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                for body in decoder.feed(data):
                    message = decode_wire(body)
                    self.received.append(message)
                    if isinstance(message, PeerChallenge):
                        reply = PeerChallengeReply(os.urandom(32), os.urandom(32))
                        connection.sendall(encode_frame(encode_wire(reply)))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._listener.close()


def test_a_process_squatting_on_a_peers_port_is_fed_nothing(cell: LiveCell) -> None:
    """With r3 stopped and its peer port taken by another process, the other replicas
    connect, find that its proof fails, and send it no proof and no Paxos message."""
    master = cell.wait_ready()
    victim = next(r for r in REPLICA_IDS if r != master)
    assert cell.stop_replica(victim) == 0
    squatter = Squatter(cell.ports[victim].peer)
    try:
        client = cell.client()
        for n in range(20):
            client.create(cell.path(f"while-squatted-{n}"), b"x")
        poll(lambda: len(squatter.received) >= 6, "the replicas try to connect", 10)
        time.sleep(1.0)
    finally:
        squatter.close()
    kinds = {type(message).__name__ for message in squatter.received}
    assert kinds == {"Hello", "PeerChallenge"}, kinds
    assert "not that replica; sending it nothing" in cell.log(master)
    cell.start_replica(victim)
    cell.wait_caught_up(victim, 15)


# ----------------------------------------------------------------------------- secrets


def serve(config: Path, replica: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``chubbypy serve`` for `replica` until it exits (it must refuse to start)."""
    command = [sys.executable, "-m", "chubbypy.server", "serve", "--config", str(config)]
    return subprocess.run(
        [*command, "--replica", replica, "--bootstrap"],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=child_environment(),
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("secret", "contents", "expected"),
    [
        ("peer.key", "local cell: replace with a long random secret\n", "placeholder"),
        ("handle.key", None, "no handle key:"),
        ("peer.key", None, "no peer key:"),
        ("operator.token", "replace me: a placeholder\n", "placeholder"),
    ],
)
def test_a_replica_with_a_placeholder_or_missing_key_refuses_in_one_line(
    tmp_path: Path, secret: str, contents: str | None, expected: str
) -> None:
    """serve exits 2 with one line on standard error naming the file; it never listens."""
    cell = LiveCell(tmp_path)
    cell.write_config()
    path = cell.data_dir / "_secrets" / secret
    if contents is None:
        path.unlink()
    else:
        path.write_text(contents)
    done = serve(cell.config_path, "r1", tmp_path)
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert expected in lines[0]
    assert str(path) in lines[0]
    assert done.stdout == ""
    assert not (cell.data_dir / "r1").exists() or not any((cell.data_dir / "r1").iterdir())


def test_the_shipped_cell_file_alone_starts_no_replica(tmp_path: Path) -> None:
    """etc/cell.yaml with no keys made for it: serve refuses (no handle key), in one line."""
    shipped = Path(__file__).resolve().parents[2] / "etc" / "cell.yaml"
    command = [sys.executable, "-m", "chubbypy.server", "serve", "--config", str(shipped)]
    done = subprocess.run(
        [*command, "--replica", "r1", "--data-dir", str(tmp_path / "var")],
        capture_output=True,
        text=True,
        env=child_environment(),
        timeout=30,
        check=False,
    )
    assert done.returncode == 2, done
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "no handle key:" in done.stderr
    assert "chubbypy cell" in done.stderr


def _request(attacker: WireClient, call: Any, number: CallNumber | None = None) -> Any:
    return attacker.call(lambda rid: SessionRequest(rid, call, number))


def test_credentials_forged_with_the_repositorys_keys_are_refused(cell: LiveCell) -> None:
    """With the operator's session id and handle fields (public: anonymous ListSessions and
    ReadDir gave them in issue 13), credentials and handles MACed under every key the
    repository held, or the cell-name key of old, write nothing, release no lock and close
    no session: each is refused (INVALID_HANDLE, PERMISSION_DENIED)."""
    operator = cell.client(principal=cell.operator[0], token=cell.operator[1])
    path = cell.path("operators-lock")
    operator.create(path, b"operator's")
    handle = operator.open(path, mode=HandleMode.READ | HandleMode.WRITE)
    handle.acquire()
    session_id = SessionId(operator.session().session_id)
    raw = msgpack.unpackb(handle.twisted._handle)
    fields = raw[:-1]
    master = cell.wait_master()
    attacker = WireClient(cell.ports[master].client, cell.name)
    keys = [handle_key_for(cell.name, secret) for secret in REPOSITORY_SECRETS]
    keys.append(handle_key_for(cell.name, None))
    for n, key in enumerate(keys):
        forged = Handle(
            SessionId(fields[1]), fields[2], fields[3], fields[4],
            HandleMode(fields[5]), fields[6], fields[7], fields[8],
        ).encode(key)  # fmt: skip
        credential = session_credential(session_id, key)
        number = CallNumber(1000 + n, 1000 + n)
        for call, numbered, code in (
            (HandleWrite(forged, SetContents(path, b"forged")), True, ErrorCode.INVALID_HANDLE),
            (ReleaseLock(forged), True, ErrorCode.INVALID_HANDLE),
            (KeepAlive(session_id, credential, 0), False, ErrorCode.PERMISSION_DENIED),
            (CloseSession(session_id, credential), True, ErrorCode.PERMISSION_DENIED),
        ):
            reply = _request(attacker, call, number if numbered else None)
            assert isinstance(reply, ErrorReply), (call, reply)
            assert reply.code is code, (call, reply)
    attacker.close()
    assert operator.get_contents_and_stat(path).contents == b"operator's"
    assert handle.get_sequencer()  # still held
    handle.set_contents(b"the operator writes on")
    assert operator.session().session_id == session_id
    handle.release()
    handle.close()


# ----------------------------------------------------------------------------- TLS


@pytest.fixture
def tls_cell(make_cell: Callable[..., LiveCell]) -> LiveCell:
    """A cell with certificates made by --auto-tls's code, serving clients over ssl:."""
    return make_cell(tls={}, client_kind="ssl")


def test_a_client_that_trusts_the_cells_ca_works_end_to_end(tls_cell: LiveCell) -> None:
    """Through the cell file (its tls.ca), a client writes, reads, opens and locks over TLS;
    so does the CLI, and with CHUBBY_CA_FILE given addresses only."""
    client = tls_cell.client(principal=tls_cell.operator[0], token=tls_cell.operator[1])
    client.create(tls_cell.path("over-tls"), b"secret contents")
    with client.open(tls_cell.path("over-tls")) as handle:
        assert handle.acquire()
        assert handle.get_contents_and_stat()[0] == b"secret contents"
    done = tls_cell.cli("cat", "over-tls", as_operator=True)
    assert (done.code, done.output) == (0, b"secret contents"), done
    master = tls_cell.wait_master()
    address = f"{tls_cell.name}@ssl:host=127.0.0.1:port={tls_cell.ports[master].client}"
    done = tls_cell.cli(
        "cat", "over-tls", cell=address, environ={"CHUBBY_CA_FILE": str(tls_cell.ca_path)}
    )
    assert (done.code, done.output) == (0, b"secret contents"), done


def test_a_client_that_does_not_trust_the_cells_ca_cannot_connect(
    tls_cell: LiveCell, tmp_path: Path
) -> None:
    """Another CA, the system's authorities, or plain TCP: no request gets through."""
    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_bytes(new_authority("other")[0])
    master = tls_cell.wait_master()
    address = f"ssl:host=127.0.0.1:port={tls_cell.ports[master].client}"
    untrusted = tls_cell.client(timeout_seconds=1.5, tls_ca=other_ca)
    with pytest.raises((Unavailable, ReplicaUnreachable)):
        untrusted.get_stat(tls_cell.path())
    system_trust = connect([address], tls_cell.name, timeout_seconds=1.5)
    try:
        with pytest.raises((Unavailable, ReplicaUnreachable)):
            system_trust.get_stat(tls_cell.path())
    finally:
        system_trust.close()
    done = tls_cell.cli(
        "ls",
        "--timeout",
        "1.5",
        cell=f"{tls_cell.name}@{address}",
        environ={"CHUBBY_CA_FILE": str(other_ca)},
    )
    assert done.code == 3, done
    with pytest.raises((ConnectionError, AssertionError, OSError)):
        WireClient(tls_cell.ports[master].client, tls_cell.name, timeout_seconds=2)
    assert tls_cell.client().get_stat(tls_cell.path()) is not None  # the cell serves


def _tls_context(cell: LiveCell, certificate: Path, key: Path, ca: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # the attacker does not care who it talks to
    context.load_verify_locations(ca)
    context.load_cert_chain(certificate, key)
    return context


def _first_answer(
    port: int, context: ssl.SSLContext | None, *messages: WireMessage
) -> WireMessage | None:
    """What a replica's peer port first answers `messages` with (None: nothing at all, the
    TLS handshake failed or the connection was closed)."""
    try:
        attacker = PeerAttacker(port, context)
        attacker.send(*messages)
        return attacker.receive()
    except (ssl.SSLError, OSError):
        return None


def test_a_peer_with_a_certificate_naming_another_replica_is_refused(
    tls_cell: LiveCell, tmp_path: Path
) -> None:
    """Holding r3's certificate, a process claiming to be r2 is refused; one with a
    certificate of its own CA naming r2 fails TLS; neither gets a message taken."""
    master = tls_cell.wait_ready()
    target = next(r for r in REPLICA_IDS if r != master)
    stolen = next(r for r in REPLICA_IDS if r not in (master, target))
    claimed = master
    secrets_dir = tls_cell.data_dir / "_secrets" / "tls"
    status = tls_cell.statuses()[master]
    forged = forged_messages(tls_cell, master, status)
    context = _tls_context(
        tls_cell, secrets_dir / f"{stolen}.pem", secrets_dir / f"{stolen}.key", tls_cell.ca_path
    )
    attacker = PeerAttacker(tls_cell.ports[target].peer, context)
    attacker.send(Hello(PROTOCOL_VERSION, tls_cell.name, ConnectionRole.PEER, claimed), *forged)
    refusal = attacker.refused()
    assert refusal.code is ErrorCode.PERMISSION_DENIED
    assert f"certificate names {stolen!r}" in refusal.message
    authority = new_authority(tls_cell.name)
    certificate, key = issue_replica_certificate(authority, claimed, [claimed])
    (tmp_path / "own.pem").write_bytes(certificate)
    (tmp_path / "own.key").write_bytes(key)
    context = _tls_context(tls_cell, tmp_path / "own.pem", tmp_path / "own.key", tls_cell.ca_path)
    hello = Hello(PROTOCOL_VERSION, tls_cell.name, ConnectionRole.PEER, claimed)
    assert _first_answer(tls_cell.ports[target].peer, context, hello, *forged) is None
    assert _first_answer(tls_cell.ports[target].peer, None, hello, *forged) is None
    client = tls_cell.client()
    client.create(tls_cell.path("after"), b"served")
    assert tls_cell.master() == master
    assert tls_cell.statuses()[master]["epoch"] == status["epoch"]
    assert "certificate names" in tls_cell.log(target)


def test_a_replicas_store_is_its_users_alone_and_an_old_readable_one_is_narrowed(
    make_cell: Callable[..., LiveCell],
) -> None:
    """Every replica's directory is 0700 and its SQLite files 0600 (the store holds every
    file's contents and clients' retry nonces); a replica restarted on a directory and
    store left 0755/0644 narrows them and says so in its log."""
    cell = make_cell()
    cell.wait_master()
    cell.client().create(cell.path("secret"), b"topsecret")
    for rid in cell.running:
        directory = cell.data_dir / rid
        assert directory.stat().st_mode & 0o777 == 0o700, rid
        stores = list(directory.glob("*.sqlite*"))
        assert stores, rid
        assert all(path.stat().st_mode & 0o777 == 0o600 for path in stores), rid
    victim = cell.running[0]
    cell.stop_replica(victim)
    (cell.data_dir / victim).chmod(0o755)
    for path in (cell.data_dir / victim).glob("*.sqlite*"):
        path.chmod(0o644)
    cell.start_replica(victim)
    cell.wait_for(lambda: "was readable by others" in cell.log(victim) or None, "the warning", 10.0)
    assert (cell.data_dir / victim).stat().st_mode & 0o777 == 0o700
    assert all(
        p.stat().st_mode & 0o777 == 0o600 for p in (cell.data_dir / victim).glob("*.sqlite*")
    )
