"""Cell: finding the master, redirects, retries, exactly-once writes, deadlines and errors."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import CancelledError
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger

from chubbypy.client import Cell, CellClosed, OutcomeUnknown
from chubbypy.client._plain_cell import REREGISTRATIONS_MAX
from chubbypy.protocol.client import LocateMaster, ReadRequest, Register, StatusRequest
from chubbypy.protocol.errors import (
    ERROR_CLASSES,
    ErrorCode,
    GenerationMismatch,
    NodeExists,
    NoSuchNode,
    NotEmpty,
    Unavailable,
    WrongCell,
)
from chubbypy.protocol.namespace import (
    Absent,
    Contents,
    Create,
    Exists,
    SetContents,
    Stat,
)
from chubbypy.protocol.values import ReplicaId
from tests.unit.client.harness import (
    ROOT,
    FakeCell,
    FakeNetwork,
    result_of,
    sequences,
)

RETRIED = (ErrorCode.EPOCH_CHANGED, ErrorCode.BUSY, ErrorCode.UNAVAILABLE)


@pytest.fixture
def cell() -> FakeCell:
    return FakeCell()


@pytest.fixture
def network(cell: FakeCell) -> FakeNetwork:
    return FakeNetwork(cell)


def test_the_master_is_located_through_any_replica_and_serves_reads(
    cell: FakeCell, network: FakeNetwork
) -> None:
    """LocateMaster goes to every seed; reads then go to the master only."""
    cell.master = ReplicaId("r2")
    client = network.client()
    stat = network.settle(client.get_stat(ROOT))
    assert isinstance(stat, Stat)
    assert stat.is_directory
    assert all(isinstance(r.received[0], LocateMaster) for r in cell.replicas.values())
    assert [type(r) for r in cell["r2"].received] == [LocateMaster, ReadRequest]


def test_a_seed_spelled_as_host_port_and_its_server_endpoint_share_one_connection(
    cell: FakeCell, network: FakeNetwork
) -> None:
    """MasterLocation's server endpoint strings map to the seeds' connections."""
    client = network.client()
    network.settle(client.get_stat(ROOT))
    network.settle(client.get_stat(ROOT))
    assert sorted(network.dials) == sorted(r.address for r in cell.replicas.values())


def test_not_master_with_a_hint_redirects_at_once(cell: FakeCell, network: FakeNetwork) -> None:
    """After a fail-over, the old master's hint leads straight to the new one."""
    client = network.client()
    network.settle(client.get_stat(ROOT))
    cell.master = ReplicaId("r3")
    started = network.clock.seconds()
    network.settle(client.get_stat(ROOT))
    assert network.clock.seconds() - started < 0.05  # no pause, no relocation
    assert isinstance(cell["r3"].received[-1], ReadRequest)
    assert [type(r) for r in cell["r3"].received].count(LocateMaster) == 1


def test_hints_that_chase_each_other_are_followed_a_few_times_then_backed_off(
    cell: FakeCell, network: FakeNetwork
) -> None:
    """Two replicas naming each other as master cannot trap the client in a busy loop."""
    cell.master = None
    cell["r1"].believes, cell["r2"].believes = ReplicaId("r2"), ReplicaId("r1")
    cell["r3"].down = True
    client = network.client(timeout_seconds=2.0)
    with pytest.raises(Unavailable, match="NOT_MASTER"):
        network.settle(client.get_stat(ROOT))
    reads = sum(isinstance(r, ReadRequest) for x in ("r1", "r2") for r in cell[x].received)
    # The replicas answer, so the client polls: at most 1 + REDIRECTS_MAX reads per pause,
    # and pauses of at least half of poll_seconds (0.1 s by default) over the 2 s.
    assert 8 <= reads <= (1 + 3) * 2.0 / 0.05


def test_not_master_without_a_hint_locates_the_master_again(
    cell: FakeCell, network: FakeNetwork
) -> None:
    """A follower that knows no master makes the client ask the cell again."""
    client = network.client()
    network.settle(client.get_stat(ROOT))
    cell["r1"].hints = False
    cell.master = ReplicaId("r2")
    assert isinstance(network.settle(client.get_stat(ROOT)), Stat)
    assert isinstance(cell["r2"].received[-1], ReadRequest)


def test_a_write_retried_after_fail_over_keeps_its_client_id_and_sequence(
    cell: FakeCell, network: FakeNetwork
) -> None:
    """A write whose master died before replying is retried on the new one, applied once."""
    client = network.client()
    network.settle(client.create(f"{ROOT}/a", b"1"))
    cell["r1"].drop_replies = 1
    writing = client.set_contents(f"{ROOT}/a", b"2")
    network.flush()
    assert not writing.called
    network.crash(cell["r1"])
    cell.master = ReplicaId("r2")
    stat = network.settle(writing)
    # Both masters saw (client 1, sequence 2); the cell remembered the first result.
    assert stat.content_generation == 2
    assert sequences(cell.writes) == [("r1", 1, 1), ("r1", 1, 2), ("r2", 1, 2)]
    assert all(w.first_unacked == w.sequence for _, w in cell.writes)
    assert cell.applied_writes() == 2
    assert cell.namespace.nodes[f"{ROOT}/a"].contents == b"2"


def test_a_write_whose_reply_is_lost_is_retried_after_the_request_timeout(
    cell: FakeCell, network: FakeNetwork
) -> None:
    """A lost reply costs one request timeout; the retry returns the remembered result."""
    client = network.client(request_timeout_seconds=1.0)
    network.settle(client.create(f"{ROOT}/a"))
    cell["r1"].drop_replies = 1
    stat = network.settle(client.set_contents(f"{ROOT}/a", b"x"))
    assert stat.content_generation == 2
    assert sequences(cell.writes)[-2:] == [("r1", 1, 2), ("r1", 1, 2)]
    assert cell.applied_writes() == 2


@pytest.mark.parametrize("code", RETRIED, ids=lambda c: c.name)
def test_retryable_errors_are_retried_with_the_same_sequence(
    cell: FakeCell, network: FakeNetwork, code: ErrorCode
) -> None:
    """EPOCH_CHANGED, BUSY and UNAVAILABLE are retried, and the write keeps its sequence."""
    client = network.client()
    network.settle(client.create(f"{ROOT}/a"))
    cell["r1"].errors = [code, code]
    network.settle(client.set_contents(f"{ROOT}/a", b"x"))
    assert sequences(cell.writes) == [("r1", 1, 1)] + [("r1", 1, 2)] * 3


def test_an_evicted_client_registers_again_and_sends_its_write_again(
    cell: FakeCell, network: FakeNetwork
) -> None:
    """A write whose only attempt found the client evicted (UNKNOWN_CLIENT: not applied)
    is sent again under a new registration, counting from 1, and applied once; the caller
    never sees UNKNOWN_CLIENT, and the client's log says what happened."""
    client = network.client()
    events: list[dict[str, Any]] = []
    client.log = Logger(observer=events.append)
    network.settle(client.create(f"{ROOT}/a"))
    cell.forget_clients()
    stat = network.settle(client.set_contents(f"{ROOT}/a", b"x"))
    assert stat.content_generation == 2
    registers = [r for r in cell["r1"].received if isinstance(r, Register)]
    assert len(registers) == 2
    assert registers[0].nonce != registers[1].nonce
    assert [(w.client_id, w.sequence) for _, w in cell.writes] == [(1, 1), (1, 2), (2, 1)]
    assert cell.applied_writes() == 2
    (said,) = [e for e in events if "evicted" in e["log_format"]]
    assert said["client_id"] == 1
    assert "registering again and sending the write again" in str(said["log_format"])


def test_an_eviction_after_a_second_attempt_is_an_unknown_outcome(
    cell: FakeCell, network: FakeNetwork
) -> None:
    """A write whose first attempt was applied but unanswered, and whose retry found the
    client evicted, fails OutcomeUnknown (not UnknownClient) and is not sent again: it
    stays applied once. The next write registers anew."""
    client = network.client(request_timeout_seconds=0.5)
    network.settle(client.create(f"{ROOT}/a"))
    cell["r1"].drop_replies = 1
    cell.evict_before_writes = {3}
    with pytest.raises(OutcomeUnknown, match="applied once, or not at all"):
        network.settle(client.set_contents(f"{ROOT}/a", b"x"))
    assert cell.namespace.stat(f"{ROOT}/a").content_generation == 2  # applied, once
    assert isinstance(OutcomeUnknown("x"), Unavailable)
    network.settle(client.set_contents(f"{ROOT}/a", b"y"))
    assert len([r for r in cell["r1"].received if isinstance(r, Register)]) == 2
    assert cell.writes[-1][1].sequence == 1


def test_evictions_again_and_again_end_the_write_unapplied(
    cell: FakeCell, network: FakeNetwork
) -> None:
    """A client evicted at every attempt gives up after a bounded number of registrations,
    Unavailable saying the write was not applied."""
    client = network.client()
    network.settle(client.create(f"{ROOT}/a"))
    cell.evict_before_writes = set(range(2, 20))
    with pytest.raises(Unavailable, match="not applied"):
        network.settle(client.set_contents(f"{ROOT}/a", b"x"))
    assert cell.applied_writes() == 1
    registers = [r for r in cell["r1"].received if isinstance(r, Register)]
    assert len(registers) == 1 + REREGISTRATIONS_MAX  # then it gives up
    assert len(cell.writes) == 1 + REREGISTRATIONS_MAX + 1


def test_a_lost_registration_reply_is_retried_with_the_same_nonce(
    cell: FakeCell, network: FakeNetwork
) -> None:
    """A registration is retried with its nonce, so the cell registers the client once."""
    client = network.client(request_timeout_seconds=0.5)
    cell["r1"].drop_replies = 1
    network.settle(client.create(f"{ROOT}/a"))
    registers = [r for r in cell["r1"].received if isinstance(r, Register)]
    assert len(registers) == 2
    assert registers[0].nonce == registers[1].nonce
    assert len(cell.registrations) == 1


def test_concurrent_writes_go_one_at_a_time_in_call_order(
    cell: FakeCell, network: FakeNetwork
) -> None:
    """Writes are numbered in call order; each is sent after the previous one finished."""
    client = network.client()
    writing = [client.create(f"{ROOT}/{name}") for name in "abc"]
    for each in writing:
        network.settle(each)
    assert sequences(cell.writes) == [("r1", 1, 1), ("r1", 1, 2), ("r1", 1, 3)]
    assert [w.write.path for _, w in cell.writes] == [f"{ROOT}/a", f"{ROOT}/b", f"{ROOT}/c"]


def test_no_master_until_the_deadline_raises_unavailable(network: FakeNetwork) -> None:
    """An election that never ends fails the operation with Unavailable at the deadline."""
    network.cell.master = None
    client = network.client(timeout_seconds=3.0)
    started = network.clock.seconds()
    with pytest.raises(Unavailable, match=r"within 3 s; last problem: .*knows no master"):
        network.settle(client.get_stat(ROOT))
    assert 2.0 < network.clock.seconds() - started <= 3.0


def test_during_an_election_the_client_polls_and_sees_the_new_master_quickly(
    cell: FakeCell, network: FakeNetwork
) -> None:
    """While replicas answer but know no master, retries come at most `poll_seconds` apart."""
    cell.master = None
    client = network.client(timeout_seconds=30.0, poll_seconds=0.1)
    reading = client.get_stat(ROOT)
    network.clock.advance(0)
    for _ in range(300):  # three seconds of an election
        network.clock.advance(0.01)
        network.flush()
    asked = [r for r in cell["r2"].received if isinstance(r, LocateMaster)]
    assert len(asked) >= 30, "polled at least every 0.1 s"
    cell.master = ReplicaId("r2")
    started = network.clock.seconds()
    network.settle(reading)
    assert network.clock.seconds() - started <= 0.11


def test_every_replica_down_raises_unavailable_naming_the_problem(
    cell: FakeCell, network: FakeNetwork
) -> None:
    """With no replica reachable the client backs off and retries, then says Unavailable."""
    for replica in cell.replicas.values():
        replica.down = True
    client = network.client(timeout_seconds=2.0)
    with pytest.raises(Unavailable, match="cannot connect"):
        network.settle(client.get_stat(ROOT))
    attempts = len(network.dials) // 3
    assert 3 <= attempts <= 8  # exponential back-off, not a busy loop


def test_a_master_that_goes_down_is_replaced_after_back_off(
    cell: FakeCell, network: FakeNetwork
) -> None:
    """The client reconnects to the new master when the old one stops."""
    client = network.client()
    network.settle(client.create(f"{ROOT}/a"))
    network.crash(cell["r1"])
    cell.master = ReplicaId("r3")
    assert network.settle(client.get_stat(f"{ROOT}/a")).instance == 2


def test_a_silent_master_costs_request_timeouts_until_the_deadline(
    cell: FakeCell, network: FakeNetwork
) -> None:
    """A master that never answers makes every attempt time out, then Unavailable."""
    cell["r1"].silent = True
    client = network.client(timeout_seconds=5.0, request_timeout_seconds=1.0)
    with pytest.raises(Unavailable, match="no reply to request"):
        network.settle(client.get_stat(ROOT))


def test_a_hello_refused_for_the_wrong_cell_raises_at_once(
    cell: FakeCell, network: FakeNetwork
) -> None:
    """WRONG_CELL is a configuration mistake: raised without waiting for the deadline."""
    for replica in cell.replicas.values():
        replica.welcome_cell = "other"
    client = network.client()
    with pytest.raises(WrongCell, match="serves cell 'other'"):
        network.settle(client.get_stat(ROOT))
    assert network.clock.seconds() < 0.1


@pytest.mark.parametrize(
    "code", sorted(set(ErrorCode) - {ErrorCode.NOT_MASTER, *RETRIED}), ids=lambda c: c.name
)
def test_every_error_reply_raises_its_exception_class(
    cell: FakeCell, network: FakeNetwork, code: ErrorCode
) -> None:
    """An ErrorReply with any other code raises the ChubbyError subclass of that code."""
    client = network.client()
    cell["r1"].errors = [code]
    with pytest.raises(ERROR_CLASSES[code]) as raised:
        network.settle(client.get_stat(ROOT))
    assert type(raised.value) is ERROR_CLASSES[code]
    assert raised.value.code is code


@pytest.mark.parametrize(
    ("operation", "error"),
    [
        (lambda c: c.get_stat(f"{ROOT}/missing"), NoSuchNode),
        (lambda c: c.create(ROOT), NodeExists),
        (lambda c: c.set_contents(f"{ROOT}/f", b"", expected_generation=7), GenerationMismatch),
        (lambda c: c.delete(f"{ROOT}/d"), NotEmpty),
    ],
)
def test_failure_results_raise_their_exception_class(
    network: FakeNetwork, operation: object, error: type[Exception]
) -> None:
    """A namespace Failure in a reply raises the ChubbyError of its code."""
    client = network.client()
    network.settle(client.create(f"{ROOT}/f"))
    network.settle(client.create(f"{ROOT}/d", directory=True))
    network.settle(client.create(f"{ROOT}/d/x"))
    with pytest.raises(error):
        network.settle(operation(client))  # type: ignore[operator]


def test_list_dir_pages_through_every_child(cell: FakeCell, network: FakeNetwork) -> None:
    """list_dir asks again after the last name of each page until no more follow."""
    cell.namespace.page_entries_max = 2
    client = network.client()
    for name in "edcba":
        network.settle(client.create(f"{ROOT}/{name}"))
    entries = network.settle(client.list_dir(ROOT))
    assert [e.name for e in entries] == ["a", "b", "c", "d", "e"]
    reads = [r.read for r in cell["r1"].received if isinstance(r, ReadRequest)]
    assert [r.after for r in reads] == ["", "b", "d"]


def test_read_dir_returns_one_page(cell: FakeCell, network: FakeNetwork) -> None:
    """read_dir passes `after` and `limit` through and reports whether more follow."""
    client = network.client()
    for name in "abc":
        network.settle(client.create(f"{ROOT}/{name}"))
    listing = network.settle(client.read_dir(ROOT, after="a", limit=1))
    assert [e.name for e in listing.entries] == ["b"]
    assert listing.more


def test_contents_round_trip_and_delete(network: FakeNetwork) -> None:
    """create, get_contents_and_stat, set_contents with CAS, and delete do what they say."""
    client = network.client()
    created = network.settle(client.create(f"{ROOT}/f", b"one"))
    updated = network.settle(
        client.set_contents(f"{ROOT}/f", b"two", expected_generation=created.content_generation)
    )
    contents = network.settle(client.get_contents_and_stat(f"{ROOT}/f"))
    assert contents == Contents(b"two", updated)
    assert network.settle(client.delete(f"{ROOT}/f", expected_instance=created.instance)) is None
    with pytest.raises(NoSuchNode):
        network.settle(client.get_stat(f"{ROOT}/f"))


def test_multi_op_applies_the_branch_its_guard_chooses(network: FakeNetwork) -> None:
    """multi_op returns which branch ran and each operation's result."""
    client = network.client()
    path = f"{ROOT}/f"
    upsert = ((Exists(path),), (SetContents(path, b"new"),), (Create(path, contents=b"new"),))
    first = network.settle(client.multi_op(*upsert))
    second = network.settle(client.multi_op(*upsert))
    assert (first.guard_held, second.guard_held) == (False, True)
    assert second.results[0].stat.content_generation == 2
    missing = network.settle(client.multi_op([Absent(path)], [], []))
    assert missing.tests == (False,)


def test_locate_master_names_the_master_and_the_members(
    cell: FakeCell, network: FakeNetwork
) -> None:
    """locate_master returns the MasterLocation of a replica that knows the master."""
    cell.master = ReplicaId("r2")
    location = network.settle(network.client().locate_master())
    assert location.master == "r2"
    assert [r.replica_id for r in location.replicas] == ["r1", "r2", "r3"]


def test_status_asks_every_replica_and_reports_the_unreachable(
    cell: FakeCell, network: FakeNetwork
) -> None:
    """status() has one report per member, in order; a down replica carries its problem."""
    cell["r2"].down = True
    reports = network.settle(network.client().status())
    assert [r.replica_id for r in reports] == ["r1", "r2", "r3"]
    assert [r.reachable for r in reports] == [True, False, True]
    assert reports[0].status is not None
    assert reports[0].status.role == "master"
    assert "cannot connect" in (reports[1].problem or "")
    assert all(isinstance(r.received[-1], StatusRequest) for r in (cell["r1"], cell["r3"]))


def test_status_of_one_replica_by_id(network: FakeNetwork) -> None:
    """status(replica) asks only that replica; an unknown one is a ValueError."""
    client = network.client()
    reports = network.settle(client.status("r3"))
    assert [r.replica_id for r in reports] == ["r3"]
    with pytest.raises(ValueError, match="no replica 'r9'"):
        network.settle(client.status("r9"))


def test_close_cancels_operations_and_refuses_new_ones(
    cell: FakeCell, network: FakeNetwork
) -> None:
    """close() cancels what is in progress, closes connections, and later calls fail."""
    client = network.client()
    network.settle(client.get_stat(ROOT))
    cell["r1"].silent = True
    pending = client.get_stat(ROOT)
    network.flush()
    closing = client.close()
    with pytest.raises(CancelledError):
        result_of(pending)
    network.flush()
    assert result_of(closing) is None
    with pytest.raises(CellClosed):
        result_of(client.get_stat(ROOT))


def test_the_default_dialer_connects_over_tcp_to_the_address() -> None:
    """Without a dialer the Cell connects with clientFromString on the given reactor."""
    reactor = MemoryReactorClock()
    client = Cell(reactor, ["tcp:7201:interface=127.0.0.1"], "test", name="me")
    client.get_stat(ROOT)
    assert [(host, port) for host, port, *_ in reactor.tcpClients] == [("127.0.0.1", 7201)]


def test_an_endpoint_twisted_cannot_parse_fails_like_an_unreachable_replica() -> None:
    """A client endpoint string Twisted refuses ends in Unavailable, naming the reason."""
    reactor = MemoryReactorClock()
    client = Cell(reactor, ["tcp:host=db1:port=http"], "test", timeout_seconds=1.0)
    failed = client.get_stat(ROOT)
    for _ in range(30):
        reactor.advance(0.1)
    with pytest.raises(Unavailable, match="cannot connect"):
        result_of(failed)


def test_bad_arguments_are_refused_at_construction() -> None:
    """Addresses, cell names and timeouts are checked when the Cell is made."""
    reactor = MemoryReactorClock()
    with pytest.raises(ValueError, match="not an address"):
        Cell(reactor, ["nowhere"], "test")
    with pytest.raises(ValueError, match="non-empty list"):
        Cell(reactor, [], "test")
    with pytest.raises(ValueError, match="cell name"):
        Cell(reactor, ["127.0.0.1:7201"], "")
    with pytest.raises(ValueError, match="positive"):
        Cell(reactor, ["127.0.0.1:7201"], "test", timeout_seconds=0)
