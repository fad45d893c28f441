"""The rules of a membership change, in one place (docs/design/membership.md §2.1-2.3). Pure.

A change is one step: add a learner, promote a learner to voter, or remove one member. Any
majority of the voters before and any majority after one such step intersect, which is what
every quorum argument of the core (phase 1 against phase 2, the master lease) needs; so a
replacement is three steps. `successor_problem` is the one check of a proposed change (the
master refuses a proposal with it; a chosen change that fails it is a core bug).

A candidate must win a majority of every configuration that may govern an instance from its
first unchosen one: the configuration chosen before it, then each change among the values
it would re-propose, in index order (`quorums_of_chain`). One configuration is not enough:
with C = {a,b,c}, C' = C + d and C'' = C' - a, {a,b} is a majority of C and {c,d} one of C'',
and they do not meet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from chubbypy.protocol.values import (
    LEARNERS_MAX,
    MEMBER_ADDRESS_CHARS_MAX,
    REPLICA_ID_CHARS_MAX,
    VOTERS_MAX,
    VOTERS_MIN,
    Member,
    Membership,
    ReplicaId,
)

__all__ = [
    "counted_acknowledgements",
    "genesis_membership",
    "membership_of_ids",
    "membership_problem",
    "quorum_reached",
    "quorums_of_chain",
    "successor_problem",
]


def genesis_membership(members: Iterable[tuple[ReplicaId, str, str]]) -> Membership:
    """The membership a new cell starts with (version 1): each `(id, peer, client)` a voter,
    in id order."""
    ordered = sorted(members)
    return Membership(1, tuple(Member(rid, peer, client, True) for rid, peer, client in ordered))


def membership_of_ids(ids: Iterable[ReplicaId]) -> Membership:
    """A new cell's membership of voters named by id alone, each id its own address: where
    replicas are reached by name (the simulator, tests of the core)."""
    return genesis_membership((rid, rid, rid) for rid in ids)


def quorum_reached(
    config: Membership, replicas: Iterable[ReplicaId], *, learners_count: bool = False
) -> bool:
    """Whether `replicas` include a majority of `config`'s voters. Learners never count:
    a value "chosen" by the master and a learner could be missed by a majority of voters
    (docs/design/membership.md §2.6). Every count of the core goes through here;
    `learners_count` is the deliberate bug `Bug.COUNT_LEARNER_IN_QUORUM` (a learner counted
    towards the voters' majority), which the simulator's checkers must catch."""
    counted = config.member_ids if learners_count else config.voters
    return sum(1 for rid in set(replicas) if rid in counted) >= config.quorum()


def counted_acknowledgements(
    config: Membership, acked: Mapping[ReplicaId, int], *, learners_count: bool = False
) -> list[int]:
    """The acknowledgement ticks in `acked` that count towards a master lease under
    `config`: its voters' (the same rule as `quorum_reached`)."""
    counted = config.member_ids if learners_count else config.voters
    return [tick for rid, tick in acked.items() if rid in counted]


def membership_problem(membership: Membership) -> str | None:
    """Why `membership` cannot be a cell's, or None: its bounds (voters, learners, the
    lengths of ids and addresses) and a version of at least 1."""
    voters, learners = len(membership.voters), len(membership.learners)
    if membership.version < 1:
        return f"version {membership.version}: a membership's version starts at 1"
    if not VOTERS_MIN <= voters <= VOTERS_MAX:
        return f"{voters} voters: a cell has {VOTERS_MIN} to {VOTERS_MAX}"
    if learners > LEARNERS_MAX:
        return f"{learners} learners: at most {LEARNERS_MAX} catch up at once"
    for member in membership.members:
        if not 0 < len(member.replica_id) <= REPLICA_ID_CHARS_MAX:
            return f"a replica id of {len(member.replica_id)} characters"
        for address in (member.peer, member.client):
            if not 0 < len(address) <= MEMBER_ADDRESS_CHARS_MAX:
                return f"{member.replica_id}: an address of {len(address)} characters"
    return None


def successor_problem(current: Membership, proposed: Membership) -> str | None:
    """Why `proposed` cannot follow `current`, or None: its version one higher, exactly one
    step (a new id added as a learner; a learner made a voter, its addresses unchanged; one
    member removed), every other member as it was, and `proposed` within the bounds."""
    if proposed.version != current.version + 1:
        return f"version {proposed.version} cannot follow {current.version}: one higher"
    before = {m.replica_id: m for m in current.members}
    after = {m.replica_id: m for m in proposed.members}
    added, removed = after.keys() - before.keys(), before.keys() - after.keys()
    changed = [rid for rid in after.keys() & before.keys() if after[rid] != before[rid]]
    steps = len(added) + len(removed) + len(changed)
    if steps != 1:
        return f"{steps} members changed: a change adds, promotes or removes exactly one"
    if added and after[next(iter(added))].voter:
        return f"{next(iter(added))} is added as a voter: a new member joins as a learner"
    if changed:
        rid = changed[0]
        old, new = before[rid], after[rid]
        if old.voter or not new.voter or (old.peer, old.client) != (new.peer, new.client):
            return f"{rid} changed otherwise than a learner made a voter"
    return membership_problem(proposed)


def quorums_of_chain(chain: Sequence[Membership], promised: Iterable[ReplicaId]) -> bool:
    """Whether the replicas `promised` include a majority of the voters of every
    configuration in `chain` (a candidate's campaign wins only then; see the module
    docstring)."""
    assert chain, "a chain begins with the configuration chosen before the first instance"
    have = set(promised)
    return all(quorum_reached(config, have) for config in chain)
