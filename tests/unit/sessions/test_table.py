"""The master's session table (Chubby §2.8, §2.9): leases that only grow, parked
KeepAlives, events carried on their answers, expiry, fail-over and the backlog bound."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from chubbypy.sessions import EventKind, KeepAliveAnswer, SessionTable, SessionTiming

TIMING = SessionTiming(lease_ticks=100, answer_before_ticks=30, events_pending_max=4)
S1, S2 = 11, 22


def table(*sessions: int, now: int = 0) -> SessionTable:
    t = SessionTable(TIMING)
    t.tick(now)
    for session in sessions:
        t.opened(session)
    return t


def answers(t: SessionTable) -> list[KeepAliveAnswer]:
    return list(t.take().answers)


def test_a_parked_keepalive_is_answered_shortly_before_the_lease_ends() -> None:
    """Held until answer_before_ticks remain, then answered with a whole new lease."""
    t = table(S1)
    assert t.keep_alive(S1, token=1, acked_through=0)
    t.tick(69)
    assert answers(t) == []
    t.tick(70)
    (answer,) = answers(t)
    assert (answer.token, answer.lease_ticks) == (1, 99), "a tick short: never more"
    assert answer.held_ticks == 69, "parked at 0, answered at 70: a tick short again"
    assert t.lease_expiry(S1) == 170


def test_an_event_answers_the_parked_keepalive_at_once_and_is_resent_until_acked() -> None:
    """Events ride on the answer; a KeepAlive that does not acknowledge them gets them again."""
    t = table(S1)
    t.keep_alive(S1, 1, 0)
    t.push(S1, EventKind.CONTENTS_MODIFIED, "/ls/c/f", 7)
    (answer,) = answers(t)
    assert [(e.sequence, e.kind, e.handle_id) for e in answer.events] == [
        (1, EventKind.CONTENTS_MODIFIED, 7)
    ]
    t.keep_alive(S1, 2, acked_through=0)  # the answer was lost
    (again,) = answers(t)
    assert again.events == answer.events
    t.keep_alive(S1, 3, acked_through=1)
    assert answers(t) == []  # parked: nothing left to say


def test_a_second_keepalive_answers_the_first() -> None:
    """Only one KeepAlive is parked per session; a newer one releases the older."""
    t = table(S1)
    t.keep_alive(S1, 1, 0)
    t.keep_alive(S1, 2, 0)
    assert [a.token for a in answers(t)] == [1]


def test_a_session_without_keepalives_expires_once_its_lease_has_run_out() -> None:
    """Expiry is listed once, at the lease's end and not before; then KeepAlives fail."""
    t = table(S1, S2)
    t.keep_alive(S2, 1, 0)
    t.tick(99)
    assert t.take().expire == ()
    t.tick(100)
    assert t.take().expire == (S1,)
    assert not t.keep_alive(S1, 2, 0), "no lease grows while its end is in flight"
    t.tick(150)
    assert t.take().expire == ()
    t.ended(S1)
    assert not t.is_live(S1)
    assert t.is_live(S2)


def test_ending_a_session_refuses_its_parked_keepalive() -> None:
    """A session ended (closed by its client) answers its parked KeepAlive SESSION_EXPIRED."""
    t = table(S1)
    t.keep_alive(S1, 5, 0)
    t.ended(S1)
    assert t.take().refused == ((S1, 5),)


def test_a_new_master_grants_every_session_a_whole_lease_and_a_failover_event() -> None:
    """After start, leases run a lease plus the drift margin from now; fail-over completes
    once every session acknowledged its event or ended."""
    timing = SessionTiming(lease_ticks=100, answer_before_ticks=30, failover_extra_ticks=5)
    t = SessionTable(timing)
    t.start(1000, [S1, S2])
    assert (t.lease_expiry(S1), t.lease_expiry(S2)) == (1105, 1105)
    assert not t.failover_complete
    t.keep_alive(S1, 1, 0)
    (answer,) = answers(t)
    assert [e.kind for e in answer.events] == [EventKind.MASTER_FAILOVER]
    t.keep_alive(S1, 2, answer.events[0].sequence)
    assert not t.failover_complete
    t.tick(1105)
    assert t.take().expire == (S2,)
    assert t.failover_complete, "S2's lease is over: its client trusts nothing it cached"
    t.ended(S2)
    assert t.failover_complete


def test_a_session_that_never_acknowledges_the_fail_over_gets_no_longer_lease() -> None:
    """KeepAlives that never acknowledge the fail-over event do not extend the lease: the
    session ends when the lease `start` gave it runs out, and the fail-over completes (a
    hostile client cannot hold every write behind the fail-over for as long as it likes)."""
    timing = SessionTiming(lease_ticks=100, answer_before_ticks=30, failover_extra_ticks=5)
    t = SessionTable(timing)
    t.start(1000, [S1, S2])
    t.keep_alive(S2, 1, 0)
    (failover,) = answers(t)
    t.keep_alive(S2, 2, failover.events[0].sequence)
    for now in range(1000, 1105, 10):
        t.tick(now)
        assert t.keep_alive(S1, now, acked_through=0)
        for answer in answers(t):
            if answer.session_id == S1:
                assert answer.lease_ticks < 1105 - now, "never past the lease start gave"
    assert t.lease_expiry(S1) == 1105
    assert t.lease_expiry(S2) > 1105, "S2 acknowledged: its lease grows again"
    t.tick(1105)
    assert t.take().expire == (S1,)
    assert t.failover_complete


def test_a_session_that_keeps_an_invalidation_unacknowledged_gets_no_longer_lease() -> None:
    """The answer that delivers an INVALIDATE extends the lease as any other; later ones,
    while the session has not acknowledged it, do not: a cacher that KeepAlives without
    acknowledging holds the write up only until that lease is over, then it expires."""
    t = table(S1)
    t.keep_alive(S1, 1, 0)
    t.tick(10)
    t.push(S1, EventKind.INVALIDATE, "/ls/c/f")
    (delivered,) = answers(t)
    assert delivered.lease_ticks == 99, "delivering it extends the lease: from tick 10"
    assert t.lease_expiry(S1) == 110
    for now in range(11, 110):
        t.tick(now)
        assert t.keep_alive(S1, now, acked_through=0)
        for answer in answers(t):
            assert [e.kind for e in answer.events] == [EventKind.INVALIDATE]
            assert now + answer.lease_ticks < 110, "never past the lease it had when told"
    assert t.lease_expiry(S1) == 110
    t.tick(110)
    assert t.take().expire == (S1,)


def test_an_honest_client_acknowledging_in_its_next_keepalive_keeps_its_lease_growing() -> None:
    """A client that acknowledges every event in the KeepAlive after the answer that
    carried it (as the client library does) gets a whole lease on every answer, however
    many invalidations come, each while a KeepAlive is parked or on its way."""
    t = table(S1)
    acked, token = 0, 0
    for now in range(0, 1000, 7):
        t.tick(now)
        token += 1
        t.keep_alive(S1, token, acked)
        t.push(S1, EventKind.INVALIDATE, f"/ls/c/f{now}")
        (answer,) = answers(t)
        assert answer.lease_ticks == 99, "a whole lease, a tick short"
        acked = answer.events[-1].sequence
    token += 1
    t.keep_alive(S1, token, acked)  # on its way when the next one was pushed
    t.tick(1001)
    t.push(S1, EventKind.INVALIDATE, "/ls/c/late")
    assert [a.lease_ticks for a in answers(t)] == [99]


def test_an_invalidation_sent_again_after_a_lost_answer_is_owed_until_acknowledged() -> None:
    """A KeepAlive that missed the answer carrying an INVALIDATE gets it again at once,
    with no longer lease (it was delivered once); the KeepAlive that acknowledges it is
    answered with a whole lease again."""
    t = table(S1)
    t.keep_alive(S1, 1, 0)
    t.push(S1, EventKind.INVALIDATE, "/ls/c/f")
    (lost,) = answers(t)
    t.tick(50)
    t.keep_alive(S1, 2, acked_through=0)
    (again,) = answers(t)
    assert again.events == lost.events
    assert again.lease_ticks == 100 - 50 - 1, "the lease it had, no more"
    t.keep_alive(S1, 3, acked_through=again.events[-1].sequence)
    t.tick(70)
    (renewed,) = answers(t)
    assert (renewed.events, renewed.lease_ticks) == ((), 99)


def test_other_events_left_unacknowledged_do_not_stop_the_lease_growing() -> None:
    """Only events that hold others up are owed: an unacknowledged CONTENTS_MODIFIED holds
    no one, and its session's lease grows as before."""
    t = table(S1)
    t.keep_alive(S1, 1, 0)
    t.push(S1, EventKind.CONTENTS_MODIFIED, "/ls/c/f", 7)
    answers(t)
    t.tick(50)
    t.keep_alive(S1, 2, acked_through=0)
    assert [a.lease_ticks for a in answers(t)] == [99]


def test_a_new_master_numbers_events_from_its_first_sequence() -> None:
    """Events of a new master number from `first_sequence`, above the old master's."""
    t = SessionTable(TIMING)
    t.start(0, [S1], first_sequence=(7 << 32) + 1)
    t.opened(S2)
    assert t.push(S2, EventKind.CHILD_CHANGED, "/ls/c") == (7 << 32) + 1
    t.keep_alive(S1, 1, 0)
    (answer,) = answers(t)
    assert answer.events[0].sequence == (7 << 32) + 1


def test_a_closing_session_is_refused_and_ends_at_its_lease_if_the_close_never_lands() -> None:
    """`closing` stops a session's KeepAlives; if its EndSession is lost, it still expires."""
    t = table(S1)
    t.keep_alive(S1, 1, 0)
    t.closing(S1)
    assert t.take().refused == ((S1, 1),)
    assert not t.is_live(S1)
    assert not t.keep_alive(S1, 2, 0)
    t.tick(100)
    assert t.take().expire == (S1,)


def test_a_doomed_session_holds_up_the_fail_over_until_its_lease_is_over() -> None:
    """Falling behind does not count as acknowledging the fail-over: its client may still
    act on what the old master said until its lease ends."""
    timing = SessionTiming(lease_ticks=100, answer_before_ticks=30, events_pending_max=2)
    t = SessionTable(timing)
    t.start(0, [S1])
    t.push(S1, EventKind.CHILD_CHANGED, "/ls/c")
    assert t.push(S1, EventKind.CHILD_CHANGED, "/ls/c") is None, "doomed"
    assert t.is_doomed(S1)
    assert not t.failover_complete
    t.tick(100)
    assert t.take().expire == (S1,)
    assert t.failover_complete


def test_a_session_that_falls_behind_is_refused_but_not_ended_before_its_lease() -> None:
    """Past events_pending_max the session is doomed: refused at once, expired at lease end."""
    t = table(S1)
    for _ in range(TIMING.events_pending_max):
        t.push(S1, EventKind.CHILD_CHANGED, "/ls/c")  # no KeepAlive comes to take them
    assert t.is_live(S1)
    t.push(S1, EventKind.CHILD_CHANGED, "/ls/c")  # one more than the backlog holds
    assert not t.is_live(S1)
    assert not t.keep_alive(S1, 3, 0)
    expiry = t.lease_expiry(S1)
    assert expiry is not None
    t.tick(expiry - 1)
    assert t.take().expire == ()
    t.tick(expiry)
    assert t.take().expire == (S1,)


def test_an_operators_end_refuses_the_session_at_once_but_expires_it_at_its_lease_end() -> None:
    """`operator_ending` refuses the parked KeepAlive and every later one, so the lease
    stops growing; the session is listed for expiry only once that lease has run out."""
    t = table(S1, S2)
    t.tick(40)
    t.keep_alive(S1, 1, 0)
    t.operator_ending(S1)
    assert t.take().refused == ((S1, 1),)
    assert (t.is_live(S1), t.is_operator_ended(S1), t.awaits_expiry(S1)) == (False, True, True)
    assert not t.keep_alive(S1, 2, 0)
    assert t.lease_expiry(S1) == 100, "not extended, not shortened"
    t.tick(99)
    assert t.take().expire == ()
    t.tick(100)
    assert t.take().expire == (S1, S2)


def test_an_operators_end_leaves_a_session_that_is_ending_already_as_it_is() -> None:
    """A doomed or closing session stays so (a closing client stopped using its cache:
    it awaits nothing); an unknown one is ignored."""
    timing = SessionTiming(lease_ticks=100, answer_before_ticks=30, events_pending_max=1)
    t = SessionTable(timing)
    t.opened(S1)
    t.opened(S2)
    t.push(S1, EventKind.CHILD_CHANGED, "/ls/c")
    t.push(S1, EventKind.CHILD_CHANGED, "/ls/c")
    t.closing(S2)
    for session in (S1, S2, 33):
        t.operator_ending(session)
    assert (t.is_doomed(S1), t.is_operator_ended(S1), t.awaits_expiry(S1)) == (True, False, True)
    assert (t.is_operator_ended(S2), t.awaits_expiry(S2)) == (False, False)
    assert not t.is_operator_ended(33)


def test_a_session_an_operator_ended_holds_up_the_fail_over_until_its_lease_is_over() -> None:
    """Its client may not have heard (the refusal may be lost): it may act on what the old
    master said until its lease ends, as a doomed session's may."""
    t = SessionTable(TIMING)
    t.start(0, [S1])
    t.operator_ending(S1)
    assert not t.failover_complete
    t.tick(100)
    assert t.take().expire == (S1,)
    assert t.failover_complete


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["tick", "keepalive", "push", "operator", "end"]),
            st.integers(0, 40),
        ),
        max_size=60,
    )
)
def test_the_lease_never_shrinks_and_no_session_ends_before_it(
    steps: list[tuple[str, int]],
) -> None:
    """Whatever happens, each session's expiry only grows, every answer's lease is within
    it, and a session is listed for expiry only at or after its expiry tick."""
    t = table(S1, S2)
    now, token, expiries = 0, 0, {S1: 100, S2: 100}
    ended: set[int] = set()
    for action, amount in steps:
        session = S1 if amount % 2 else S2
        if action == "tick":
            now += amount
            t.tick(now)
        elif action == "keepalive":
            token += 1
            t.keep_alive(session, token, amount // 3)
        elif action == "push":
            t.push(session, EventKind.LOCK_ACQUIRED)
        elif action == "operator":
            t.operator_ending(session)
        elif session not in ended and amount < 4:
            t.ended(session)
            ended.add(session)
        outputs = t.take()
        for answer in outputs.answers:
            assert now + answer.lease_ticks + 1 == t.lease_expiry(answer.session_id)
        for expired in outputs.expire:
            assert now >= expiries[expired]
        for live in {S1, S2} - ended:
            expiry = t.lease_expiry(live)
            assert expiry is not None
            assert expiry >= expiries[live]
            expiries[live] = expiry
