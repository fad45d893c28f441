"""The peers-first reactor: client descriptors are served after every other ready one, at
most `client_events_per_turn` per turn, each in its turn. On socket pairs and one turn
of the reactor at a time (`doPoll(0)`: nothing waits)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from twisted.internet.abstract import FileDescriptor

from chubbypy.server._reactor import PeersFirstReactor


class Reader(FileDescriptor):
    """A readable end of a socket pair that records, in `log`, each time it is read."""

    def __init__(self, reactor: PeersFirstReactor, name: str, log: list[str]) -> None:
        super().__init__(reactor)  # type: ignore[no-untyped-call]
        self.name = name
        self.log = log
        self.ours, self.theirs = socket.socketpair()
        self.ours.setblocking(False)

    def fileno(self) -> int:
        return self.ours.fileno()

    def doRead(self) -> None:
        self.ours.recv(65536)
        self.log.append(self.name)

    def send(self) -> None:
        self.theirs.send(b"x")

    def close(self) -> None:
        self.reactor.removeReader(self)  # type: ignore[attr-defined]
        self.ours.close()
        self.theirs.close()


@pytest.fixture
def reactor() -> Iterator[PeersFirstReactor]:
    reactor = PeersFirstReactor()
    yield reactor
    reactor.removeAll()
    reactor._poller.close()
    reactor._client_poller.close()
    reactor.waker.connectionLost(None)  # type: ignore[no-untyped-call]


def readers(reactor: PeersFirstReactor, names: list[str], log: list[str]) -> list[Reader]:
    made = [Reader(reactor, name, log) for name in names]
    for reader in made:
        reactor.addReader(reader)
    return made


def test_clients_are_read_after_peers_and_at_most_a_budget_per_turn(
    reactor: PeersFirstReactor,
) -> None:
    """With 10 ready clients, a budget of 4 and a ready peer, one turn reads the peer first,
    then 4 clients; the next turns read the other clients, 4 at most each."""
    log: list[str] = []
    reactor.client_events_per_turn = 4
    clients = readers(reactor, [f"c{n}" for n in range(10)], log)
    for client in clients:
        reactor.demote(client)
    (peer,) = readers(reactor, ["peer"], log)
    for reader in [*clients, peer]:
        reader.send()
    reactor.doPoll(0)
    assert log[0] == "peer"
    assert len(log) == 5
    reactor.doPoll(0)
    reactor.doPoll(0)
    assert sorted(log[1:]) == sorted(c.name for c in clients)
    assert reactor.client_events_deferred == 2
    assert reactor.turn_seconds.count == 3
    for reader in [*clients, peer]:
        reader.close()


def test_a_peer_that_becomes_ready_is_read_in_the_next_turn_whatever_clients_wait(
    reactor: PeersFirstReactor,
) -> None:
    """A peer's message that arrives while 50 clients wait is read in the next turn, not
    after the clients (which a single epoll set would hand out first)."""
    log: list[str] = []
    reactor.client_events_per_turn = 2
    clients = readers(reactor, [f"c{n}" for n in range(50)], log)
    for client in clients:
        reactor.demote(client)
        client.send()
    (peer,) = readers(reactor, ["peer"], log)
    reactor.doPoll(0)
    peer.send()
    reactor.doPoll(0)
    assert log[2] == "peer"
    for reader in [*clients, peer]:
        reader.close()


def test_a_demoted_descriptor_stays_a_client_when_paused_and_resumed(
    reactor: PeersFirstReactor,
) -> None:
    """Reading stopped and started again (back-pressure) keeps it in the client set."""
    log: list[str] = []
    reactor.client_events_per_turn = 1
    first, second = readers(reactor, ["c1", "c2"], log)
    reactor.demote(first)
    reactor.demote(second)
    reactor.removeReader(first)
    reactor.addReader(first)
    (peer,) = readers(reactor, ["peer"], log)
    for reader in (first, second, peer):
        reader.send()
    reactor.doPoll(0)
    assert log[0] == "peer"
    assert len(log) == 2
    for reader in (first, second, peer):
        reader.close()


def test_a_descriptor_demoted_before_it_is_added_goes_to_the_client_set(
    reactor: PeersFirstReactor,
) -> None:
    """`demote` before `addReader` puts the descriptor in the client set when it is added."""
    log: list[str] = []
    reactor.client_events_per_turn = 1
    early = Reader(reactor, "early", log)
    reactor.demote(early)
    reactor.addReader(early)
    (peer,) = readers(reactor, ["peer"], log)
    early.send()
    peer.send()
    reactor.doPoll(0)
    assert log == ["peer", "early"]
    for reader in (early, peer):
        reader.close()
