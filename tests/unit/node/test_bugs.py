"""The node's deliberate defects (`NodeBug`): each changes exactly the behaviour it names,
so that the simulator's checkers have something real to catch."""

from __future__ import annotations

import pytest

from chubbypy.node import NodeBug
from chubbypy.paxos import Outcome, OutcomeKind
from chubbypy.protocol import ClientId
from chubbypy.protocol.client import Registered, ServerReply, SessionReply, WriteReply
from chubbypy.protocol.errors import Failure
from chubbypy.protocol.namespace import (
    Create,
    GetContentsAndStat,
    SessionOpened,
    SetContents,
    Written,
)
from chubbypy.protocol.namespace_codec import decode_result
from chubbypy.protocol.session import CreateSession, SessionCreated
from tests.unit.node.harness import R1, ROOT, Cell, Connection


def serving(*bugs: NodeBug) -> Cell:
    cell = Cell(node_bugs=frozenset(bugs))
    cell.elect(R1)
    cell.run(2)
    return cell


def registered(cell: Cell) -> tuple[Connection, ClientId]:
    client = cell.connect(R1)
    return client, cell.register(client)


# ------------------------------------------------------------------- ANSWER_BEFORE_APPLIED


def test_answer_before_applied_answers_a_write_before_it_is_chosen() -> None:
    """ANSWER_BEFORE_APPLIED: a write is answered WriteReply as soon as it is proposed, with
    nothing chosen or applied (here, with the master cut off, it never will be)."""
    cell = serving(NodeBug.ANSWER_BEFORE_APPLIED)
    client, client_id = registered(cell)
    applied = len(cell.applied(R1))
    cell.isolate(R1)
    request_id = client.write(client_id, 1, Create(f"{ROOT}/f"))
    reply = client.reply(request_id)
    assert isinstance(reply, WriteReply)
    assert reply.result == Written(None)
    assert len(cell.applied(R1)) == applied
    cell.run(3)
    assert len(cell.applied(R1)) == applied
    assert isinstance(cell.nodes[R1].machine.read(GetContentsAndStat(f"{ROOT}/f")), Failure)


def test_answer_before_applied_claims_success_the_log_would_refuse() -> None:
    """ANSWER_BEFORE_APPLIED: a write the namespace refuses is claimed done, and the real
    outcome (a Failure) never reaches the client."""
    cell = serving(NodeBug.ANSWER_BEFORE_APPLIED)
    client, client_id = registered(cell)
    request_id = client.write(client_id, 1, SetContents(f"{ROOT}/missing", b"x"))
    cell.settle()
    (reply,) = [a for a in client.answers if a.request_id == request_id]
    assert isinstance(reply, WriteReply)
    assert reply.result == Written(None)
    (outcome,) = [
        result
        for applied in cell.applied(R1)
        for result in applied.results
        if isinstance(result, Outcome)
        and result.kind is OutcomeKind.APPLIED
        and result.client_id == client_id
    ]
    assert isinstance(decode_result(outcome.result), Failure)  # what the log really decided


def test_without_answer_before_applied_a_write_waits_for_its_entry() -> None:
    """The counterpart: without the bug, nothing is answered until the entry is applied."""
    cell = serving()
    client, client_id = registered(cell)
    request_id = client.write(client_id, 1, SetContents(f"{ROOT}/missing", b"x"))
    assert client.reply(request_id) is None
    cell.settle()
    reply = client.reply(request_id)
    assert isinstance(reply, WriteReply)
    assert isinstance(reply.result, Failure)


def test_answer_before_applied_spares_registrations_and_session_calls() -> None:
    """ANSWER_BEFORE_APPLIED concerns clients' writes only: a registration and a session call
    are still answered once applied."""
    cell = serving(NodeBug.ANSWER_BEFORE_APPLIED)
    client = cell.connect(R1)
    registration = client.register(3)
    created = client.call(CreateSession("me"))
    assert client.answers == []
    cell.settle()
    assert isinstance(client.reply(registration), Registered)
    assert isinstance(client.result(created), SessionCreated)


# ------------------------------------------------------------------ ROUTE_TO_WRONG_REQUEST


def interleaved(*bugs: NodeBug) -> tuple[ServerReply | None, ServerReply | None]:
    """A session call's command and then a client's write, both in flight at once: the
    answers to (the session call, the write)."""
    cell = serving(*bugs)
    writer, client_id = registered(cell)
    caller = cell.connect(R1)
    created = caller.call(CreateSession("me"))
    written = writer.write(client_id, 1, Create(f"{ROOT}/f"))
    cell.settle()
    return caller.reply(created), writer.reply(written)


def test_route_to_wrong_request_answers_a_write_with_anothers_outcome() -> None:
    """ROUTE_TO_WRONG_REQUEST: the master's own command applied first answers the oldest
    waiting client write, with the session's result at the session's index."""
    _, write = interleaved(NodeBug.ROUTE_TO_WRONG_REQUEST)
    assert isinstance(write, WriteReply)
    assert isinstance(write.result, SessionOpened)


def test_without_route_to_wrong_request_each_write_gets_its_own_outcome() -> None:
    """The counterpart: without the bug, the write gets its own result."""
    session, write = interleaved()
    assert isinstance(write, WriteReply)
    assert isinstance(write.result, Written)
    assert isinstance(session, SessionReply)
    assert isinstance(session.result, SessionCreated)


def test_route_to_wrong_request_is_invisible_when_outcomes_come_in_order() -> None:
    """ROUTE_TO_WRONG_REQUEST changes nothing while outcomes come back in the order their
    commands were proposed here (which is why only the simulator's mixes find it)."""

    def answers(*bugs: NodeBug) -> list[ServerReply]:
        cell = serving(*bugs)
        client, client_id = registered(cell)
        for sequence in (1, 2, 3):
            client.write(client_id, sequence, Create(f"{ROOT}/f{sequence}"))
        cell.settle()
        return client.answers

    assert answers(NodeBug.ROUTE_TO_WRONG_REQUEST) == answers()


@pytest.mark.parametrize("bug", list(NodeBug))
def test_each_bug_leaves_reads_and_registrations_alone(bug: NodeBug) -> None:
    """No node bug changes how reads, registrations or session calls are answered."""

    def answers(*bugs: NodeBug) -> list[ServerReply]:
        cell = serving(*bugs)
        client = cell.connect(R1)
        cell.register(client)
        cell.session(client)
        client.read(GetContentsAndStat(ROOT))
        return client.answers

    assert answers(bug) == answers()
