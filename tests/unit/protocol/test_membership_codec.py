"""The operators' membership calls and answers on the wire: each round-trips, and what no
correct peer sends (an unknown step, a step of the wrong size, an empty or too long id or
address, a version out of range, too many members, an unknown role) is a DecodeError."""

from __future__ import annotations

from typing import Any

import pytest

from chubbypy.protocol import ReplicaId
from chubbypy.protocol._plain import DecodeError
from chubbypy.protocol.session import (
    AddLearner,
    ChangeMembership,
    ListMembers,
    MemberInfo,
    MemberList,
    MembershipDone,
    Promote,
    Remove,
)
from chubbypy.protocol.session_codec import (
    call_from_plain,
    call_to_plain,
    session_result_from_plain,
    session_result_to_plain,
)
from chubbypy.protocol.values import LOG_INDEX_MAX, MEMBERSHIP_VERSION_MAX, REPLICA_ID_CHARS_MAX

R4 = ReplicaId("r4")
CALLS = [
    ListMembers(),
    ChangeMembership(AddLearner(R4, "db4:7104", "db4:7204")),
    ChangeMembership(Promote(R4), if_version=3),
    ChangeMembership(Remove(R4, force=True), if_version=MEMBERSHIP_VERSION_MAX),
]
LISTED = MemberList(
    4,
    17,
    LOG_INDEX_MAX,
    (
        MemberInfo(ReplicaId("r1"), "tcp:7101", "tcp:7201", True, True, 20, 0),
        MemberInfo(R4, "db4:7104", "db4:7204", False, False, None, None),
    ),
)


@pytest.mark.parametrize("call", CALLS, ids=lambda c: type(getattr(c, "step", c)).__name__)
def test_membership_calls_round_trip(call: Any) -> None:
    """call_from_plain(call_to_plain(c)) == c for each call and step."""
    assert call_from_plain(call_to_plain(call)) == call


def test_membership_answers_round_trip() -> None:
    """A member list (members that never acknowledged included) and a change's answer."""
    for result in (LISTED, MembershipDone(5, 40, already=True)):
        assert session_result_from_plain(session_result_to_plain(result)) == result


BAD_CALLS: dict[str, list[Any]] = {
    "unknown step": [18, [4, "r4"], 0],
    "empty step": [18, [], 0],
    "add without its client": [18, [1, "r4", "db4:7104"], 0],
    "promote with a flag": [18, [2, "r4", True], 0],
    "empty id": [18, [2, ""], 0],
    "long id": [18, [2, "r" * (REPLICA_ID_CHARS_MAX + 1)], 0],
    "empty address": [18, [1, "r4", "", "db4:7204"], 0],
    "long address": [18, [1, "r4", "a" * 256, "db4:7204"], 0],
    "force not a boolean": [18, [3, "r4", 1], 0],
    "version too large": [18, [2, "r4"], MEMBERSHIP_VERSION_MAX + 1],
    "negative version": [18, [2, "r4"], -1],
    "list with an argument": [17, 1],
}


@pytest.mark.parametrize("name", list(BAD_CALLS))
def test_a_malformed_membership_call_is_refused(name: str) -> None:
    """Each malformed call raises DecodeError (BAD_REQUEST for its sender), nothing else."""
    with pytest.raises(DecodeError):
        call_from_plain(BAD_CALLS[name])


def test_a_malformed_member_list_is_refused() -> None:
    """No members, ten members, a version of 0, an unknown index: DecodeError."""
    plain = session_result_to_plain(LISTED)
    member = plain[4][0]
    for bad in ([*plain[:4], []], [*plain[:4], [member] * 10], [12, 0, *plain[2:]],
                [12, plain[1], None, *plain[3:]]):  # fmt: skip
        with pytest.raises(DecodeError):
            session_result_from_plain(bad)


def catch_up(membership: Any) -> bytes:
    """A CatchUp with no entries whose membership is `membership` (its plain form)."""
    from chubbypy.protocol._plain import pack

    return pack([9, [], 0, membership])


GOOD_MEMBER = ["r1", "tcp:7101", "tcp:7201", True]
BAD_MEMBERSHIPS: dict[str, Any] = {
    "no members": [1, []],
    "ten members": [1, [[f"r{n}", "a", "b", True] for n in range(10)]],
    "out of id order": [1, [["r2", "a", "b", True], GOOD_MEMBER]],
    "an id twice": [1, [GOOD_MEMBER, GOOD_MEMBER]],
    "version 0": [0, [GOOD_MEMBER]],
    "an empty address": [1, [["r1", "", "b", True]]],
    "an address too long": [1, [["r1", "a" * 256, "b", True]]],
    "a voter flag not a boolean": [1, [["r1", "a", "b", 1]]],
    "a member of three fields": [1, [["r1", "a", "b"]]],
}


@pytest.mark.parametrize("name", list(BAD_MEMBERSHIPS))
def test_a_malformed_membership_from_a_peer_is_refused(name: str) -> None:
    """A peer's CatchUp (or snapshot, or MEMBERSHIP value: one decoder) whose membership no
    correct replica sends raises DecodeError before anything is built."""
    from chubbypy.protocol.codec import decode_message

    with pytest.raises(DecodeError):
        decode_message(catch_up(BAD_MEMBERSHIPS[name]))
    decode_message(catch_up([1, [GOOD_MEMBER]]))  # the well-formed one decodes
