"""The Ready contract as the node runs it (STYLE §1): early messages, then one `Persist` at a
time, then, once durable, the messages, the applied entries and the answers."""

from __future__ import annotations

from collections.abc import Sequence

from chubbypy.node import Answer, EntryApplied, Persist, SendPeer
from chubbypy.paxos import Bug
from chubbypy.protocol import Accept, Accepted
from chubbypy.protocol.client import WriteReply
from chubbypy.protocol.namespace import Create
from tests.unit.node.harness import R1, R2, ROOT, Cell, to


def serving() -> Cell:
    cell = Cell()
    cell.elect(R1)
    return cell


def kinds(outputs: Sequence[object]) -> list[str]:
    return [type(o).__name__ for o in outputs]


def test_early_accepts_go_before_the_masters_persist() -> None:
    """A master's proposal sends its Accepts (the Ready's early messages) before its Persist."""
    cell = serving()
    client = cell.connect(R1)
    client_id = cell.register(client)
    cell.hold(R1)
    mark = cell.mark()
    client.write(client_id, 1, Create(f"{ROOT}/f"))
    outputs = cell.since(mark, R1)
    assert kinds(outputs) == ["SendPeer", "SendPeer", "Persist"]
    sent = [o.envelope for o in outputs if isinstance(o, SendPeer)]
    assert all(isinstance(e.message, Accept) for e in sent)
    assert cell.nodes[R1].writing


def test_a_followers_accepted_goes_out_only_once_its_persist_is_durable() -> None:
    """An acceptor's Accepted (a Ready's message) leaves only after `durable_written`."""
    cell = serving()
    client = cell.connect(R1)
    client_id = cell.register(client)
    client.write(client_id, 1, Create(f"{ROOT}/f"))
    cell.hold(R2)
    mark = cell.mark()
    cell.deliver(to(R2))
    assert kinds(cell.since(mark, R2)) == ["Persist"]
    assert cell.nodes[R2].writing
    cell.tick(R2, times=3)  # time passing does not release it either
    assert not [o for o in cell.since(mark, R2) if isinstance(o, SendPeer)]
    cell.durable(R2)
    sent = [o for o in cell.since(mark, R2) if isinstance(o, SendPeer)]
    assert [type(o.envelope.message) for o in sent] == [Accepted]
    assert not cell.nodes[R2].writing


def test_no_second_persist_while_one_is_out() -> None:
    """While a Persist is out, more work to write waits; the next Persist follows the durable."""
    cell = serving()
    client = cell.connect(R1)
    client_id = cell.register(client)
    client.write(client_id, 1, Create(f"{ROOT}/a"))
    cell.hold(R2)
    mark = cell.mark()
    cell.deliver(to(R2))
    client.write(client_id, 2, Create(f"{ROOT}/b"))
    cell.deliver(to(R2))  # a second Accept: more to write
    assert kinds(cell.since(mark, R2)).count("Persist") == 1
    cell.durable(R2)
    persists = [o for o in cell.since(mark, R2) if isinstance(o, Persist)]
    assert len(persists) == 2
    assert [e.index for p in persists for e in p.durable.entries] == [3, 4]
    cell.durable(R2)
    assert not cell.nodes[R2].writing


def test_committed_entries_are_applied_only_after_durable() -> None:
    """No EntryApplied (and no answer) while the Persist before it is out."""
    cell = serving()
    client = cell.connect(R1)
    client_id = cell.register(client)
    cell.hold(R1)
    request_id = client.write(client_id, 1, Create(f"{ROOT}/f"))
    applied: list[int] = []
    for _ in range(10):
        cell.settle()
        outputs = cell.outputs[R1]
        if R1 not in cell.writing:
            break
        last_persist = max(i for i, o in enumerate(outputs) if isinstance(o, Persist))
        assert not [o for o in outputs[last_persist:] if isinstance(o, EntryApplied | Answer)]
        cell.durable(R1)
        applied += [o.entry.index for o in outputs[last_persist:] if isinstance(o, EntryApplied)]
    assert applied == [3]
    reply = client.reply(request_id)
    assert isinstance(reply, WriteReply)
    assert reply.index == 3


def test_reply_before_persist_bug_sends_before_the_write() -> None:
    """With Bug.REPLY_BEFORE_PERSIST the node sends a Ready's messages before its Persist."""
    cell = Cell(bugs=frozenset({Bug.REPLY_BEFORE_PERSIST}), check_sends=False)
    cell.elect(R1)
    client = cell.connect(R1)
    client_id = cell.register(client)
    client.write(client_id, 1, Create(f"{ROOT}/f"))
    cell.hold(R2)
    mark = cell.mark()
    cell.deliver(to(R2))
    assert kinds(cell.since(mark, R2)) == ["SendPeer", "Persist"]
