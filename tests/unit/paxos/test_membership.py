"""The rules of a membership change (chubbypy.paxos._membership): one step at a time, the
bounds, and a candidate's quorums over the chain of configurations."""

from __future__ import annotations

from itertools import combinations

from attrs import evolve
from hypothesis import given
from hypothesis import strategies as st

from chubbypy.paxos._membership import membership_problem, quorums_of_chain, successor_problem
from chubbypy.protocol.values import Member, Membership, ReplicaId


def member(name: str, voter: bool = True) -> Member:
    return Member(ReplicaId(name), f"tcp:host-{name}:7100", f"tcp:host-{name}:7200", voter)


def cell(version: int, *names: str, learners: tuple[str, ...] = ()) -> Membership:
    members = [member(n) for n in names] + [member(n, voter=False) for n in learners]
    return Membership(version, tuple(sorted(members, key=lambda m: m.replica_id)))


def ids(*names: str) -> list[ReplicaId]:
    return [ReplicaId(name) for name in names]


ABC = cell(1, "a", "b", "c")


def test_each_of_the_three_steps_may_follow_and_nothing_else() -> None:
    """Add a learner, promote it, remove one member: each follows with a version one
    higher; two steps at once, a voter added, a demotion, moved addresses, a skipped
    version or too few voters are refused, saying why."""
    added = cell(2, "a", "b", "c", learners=("d",))
    promoted = cell(3, "a", "b", "c", "d")
    removed = cell(4, "b", "c", "d")
    assert successor_problem(ABC, added) is None
    assert successor_problem(added, promoted) is None
    assert successor_problem(promoted, removed) is None
    refusals = {
        "one higher": cell(3, "a", "b", "c", learners=("d",)),
        "exactly one": cell(2, "a", "b", learners=("d",)),
        "joins as a learner": cell(2, "a", "b", "c", "d"),
        "otherwise than a learner made a voter": cell(2, "a", "b", learners=("c",)),
        "3 to 7": cell(2, "a", "b"),
    }
    for why, proposed in refusals.items():
        problem = successor_problem(ABC, proposed)
        assert problem is not None
        assert why in problem, (why, problem)
    moved = Membership(3, (*promoted.members[:3], evolve(promoted.members[3], peer="tcp:x:1")))
    assert "otherwise" in (successor_problem(added, moved) or "")


def test_the_bounds_of_a_membership() -> None:
    """3 to 7 voters, at most 2 learners, a version from 1, ids and addresses not empty and
    not too long."""
    assert membership_problem(ABC) is None
    assert membership_problem(cell(1, *"abcdefg")) is None
    assert "8 voters" in (membership_problem(cell(1, *"abcdefgh")) or "")
    assert "3 learners" in (membership_problem(cell(1, *"abc", learners=("d", "e", "f"))) or "")
    assert "version 0" in (membership_problem(evolve(ABC, version=0)) or "")
    long = Membership(1, (*ABC.members[:2], evolve(ABC.members[2], client="x" * 256)))
    assert "address of 256" in (membership_problem(long) or "")


def test_a_candidate_needs_a_majority_of_every_configuration_in_the_chain() -> None:
    """C = {a,b,c}, C' = C + d, C'' = C' - a: {a,b} is a majority of C alone and {c,d} of
    C'' alone; a candidate with a chain of both needs more than either."""
    with_d = cell(3, "a", "b", "c", "d")
    without_a = cell(4, "b", "c", "d")
    chain = (ABC, with_d, without_a)
    assert quorums_of_chain((ABC,), ids("a", "b"))
    assert quorums_of_chain((without_a,), ids("c", "d"))
    assert not quorums_of_chain(chain, ids("a", "b"))
    assert not quorums_of_chain(chain, ids("c", "d"))
    assert quorums_of_chain(chain, ids("a", "b", "c"))


NAMES = "abcdefgh"


@st.composite
def steps(draw: st.DrawFn) -> tuple[Membership, Membership]:
    """A valid membership and a valid one-step successor of it."""
    voters = draw(st.integers(3, 6))
    learners = draw(st.integers(0, 1))
    names = draw(st.permutations(NAMES))
    current = cell(1, *names[:voters], learners=tuple(names[voters : voters + learners]))
    kind = draw(st.sampled_from(["add", "promote", "remove"]))
    if kind == "add" and learners == 0:
        proposed = cell(2, *names[:voters], learners=(names[voters],))
    elif kind == "promote" and learners == 1:
        proposed = cell(2, *names[: voters + 1])
    else:
        gone = draw(st.sampled_from(sorted(current.voters) + sorted(current.learners)))
        kept = [n for n in names[:voters] if n != gone]
        proposed = cell(2, *kept, learners=tuple(n for n in current.learners if n != gone))
    return current, proposed


@given(steps())
def test_majorities_before_and_after_one_step_always_meet(
    pair: tuple[Membership, Membership],
) -> None:
    """For every valid step, any majority of the voters before meets any majority after
    (the one fact every quorum argument of the core needs across a change)."""
    current, proposed = pair
    if successor_problem(current, proposed) is not None:
        return  # e.g. removing a voter from three: refused, and rightly
    for before in combinations(current.voters, current.quorum()):
        for after in combinations(proposed.voters, proposed.quorum()):
            assert set(before) & set(after), (current, proposed, before, after)
