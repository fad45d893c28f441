"""The operators' membership calls through a replica node (issue 15): ListMembers from the
core's view; ChangeMembership for operators only, checked (already, if_version, the step's
sense, the one rule, the catch-up and liveness gates) before it is proposed, and answered
once chosen; locate names the members from the membership."""

from __future__ import annotations

from chubbypy.node import Persist, SendPeer
from chubbypy.protocol import ReplicaId
from chubbypy.protocol.client import ErrorReply, LocateMaster, MasterLocation
from chubbypy.protocol.errors import ErrorCode
from chubbypy.protocol.session import (
    AddLearner,
    ChangeMembership,
    ListMembers,
    MemberList,
    MembershipDone,
    Promote,
    Remove,
)
from tests.unit.node.harness import R1, R2, R3, Cell, Connection, metric
from tests.unit.node.test_operator_calls import authenticated, serving

R4 = ReplicaId("r4")
ADD_R4 = ChangeMembership(AddLearner(R4, "db4:7104", "db4:7204"))


def ask(
    cell: Cell, connection: Connection, call: ListMembers | ChangeMembership, ticks: int = 2
) -> object:
    """The result of `call`, settled and `ticks` later, or the code it was refused with."""
    request_id = connection.call(call)
    cell.settle()
    cell.run(ticks)
    reply = connection.reply(request_id)
    return reply.code if isinstance(reply, ErrorReply) else connection.result(request_id)


def test_the_members_are_listed_with_the_master_and_their_progress() -> None:
    """Three voters at version 1, r1 the master; the followers' progress as acknowledged."""
    cell = serving()
    listed = ask(cell, cell.connect(R1), ListMembers())
    assert isinstance(listed, MemberList)
    assert (listed.version, listed.index) == (1, 0)
    assert [(m.replica_id, m.voter, m.master) for m in listed.members] == [
        (R1, True, True), (R2, True, False), (R3, True, False),
    ]  # fmt: skip
    assert listed.members[0].chosen_index == listed.chosen_index
    assert all(m.chosen_index is not None for m in listed.members)
    assert all(m.acked_ms_ago is not None for m in listed.members)


def test_an_operator_adds_a_learner_and_a_retry_is_answered_at_once() -> None:
    """The change is answered once chosen, version 2, r4 listed as a learner that never
    acknowledged; the same call again is `already`; locate names voters only (a learner's
    typed client address has not served yet: a client must not hand it its token)."""
    cell = serving()
    operator = authenticated(cell, "operator")
    done = ask(cell, operator, ADD_R4)
    assert isinstance(done, MembershipDone)
    assert (done.version, done.already) == (2, False)
    listed = ask(cell, operator, ListMembers())
    assert isinstance(listed, MemberList)
    assert (listed.version, listed.index) == (2, done.index)
    learner = listed.members[-1]
    assert (learner.replica_id, learner.voter, learner.chosen_index) == (R4, False, None)
    assert ask(cell, operator, ADD_R4) == MembershipDone(2, done.index, already=True)
    request_id = operator.send(LocateMaster(operator.next_id()))
    location = operator.reply(request_id)
    assert isinstance(location, MasterLocation)
    assert [a.replica_id for a in location.replicas] == [R1, R2, R3]  # voters only
    for rid in (R2, R3):
        assert cell.nodes[rid].core.membership.learners == (R4,)
    node = cell.nodes[R1]
    counted = 'chubbypy_operator_calls_total{call="membership",outcome="%s"}'
    assert [metric(node, counted % o) for o in ("proposed", "already")] == [1, 1]


def test_refusals_say_why_and_change_nothing() -> None:
    """Not an operator: PERMISSION_DENIED with nothing written or sent. A stale if_version,
    a learner never heard from, a removal below three voters, a promotion of a stranger,
    a second change while one is in flight: each refused with its code."""
    cell = serving()
    alice, operator = authenticated(cell, "alice"), authenticated(cell, "operator")
    mark = cell.mark()
    assert ask(cell, alice, ADD_R4, ticks=0) is ErrorCode.PERMISSION_DENIED
    assert not [o for o in cell.since(mark, R1) if isinstance(o, Persist | SendPeer)]
    stale = ChangeMembership(AddLearner(R4, "db4:7104", "db4:7204"), if_version=7)
    assert ask(cell, operator, stale) is ErrorCode.VERSION_CHANGED
    assert ask(cell, operator, ChangeMembership(Promote(R4))) is ErrorCode.MEMBERSHIP_INVALID
    assert ask(cell, operator, ChangeMembership(Remove(R2))) is ErrorCode.MEMBERSHIP_INVALID
    assert isinstance(ask(cell, operator, ADD_R4), MembershipDone)
    assert ask(cell, operator, ChangeMembership(Promote(R4))) is ErrorCode.NOT_CAUGHT_UP
    first = operator.call(ChangeMembership(Remove(R4)))
    second = operator.call(ChangeMembership(AddLearner(ReplicaId("r5"), "db5:1", "db5:2")))
    cell.settle()
    cell.run(2)
    assert isinstance(operator.result(first), MembershipDone)
    assert operator.code(second) is ErrorCode.MEMBERSHIP_BUSY
    assert cell.nodes[R1].core.membership.version == 3
    assert cell.nodes[R1].core.membership.member_ids == (R1, R2, R3)
