"""The pure lock functions and sequencers (Chubby §2.4): conflicts, release, expiry into
lock-delay, and the sequencer's bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chubbypy.locks import (
    FREE,
    Granted,
    Holder,
    LockMode,
    LockState,
    Sequencer,
    acquire,
    decode_sequencer,
    end_delay,
    release,
    session_ended,
)
from chubbypy.protocol._plain import DecodeError, pack
from chubbypy.protocol.errors import ErrorCode, Failure

EXCLUSIVE, SHARED = LockMode.EXCLUSIVE, LockMode.SHARED


def granted(state: LockState, holder: Holder) -> Granted:
    result = acquire(state, holder)
    assert isinstance(result, Granted), result
    return result


def test_a_free_lock_is_granted_and_reported_newly_held() -> None:
    """The first holder turns a free lock held (so the generation rises); a second shared
    holder does not."""
    first = granted(FREE, Holder(1, 1, SHARED))
    assert first.newly_held
    second = granted(first.state, Holder(2, 1, SHARED))
    assert not second.newly_held
    assert [h.session_id for h in second.state.holders] == [1, 2]


@pytest.mark.parametrize(
    ("held", "wanted", "allowed"),
    [(EXCLUSIVE, EXCLUSIVE, False), (EXCLUSIVE, SHARED, False), (SHARED, EXCLUSIVE, False),
     (SHARED, SHARED, True)],
)  # fmt: skip
def test_the_conflict_table(held: LockMode, wanted: LockMode, allowed: bool) -> None:
    """Only shared with shared is compatible."""
    state = granted(FREE, Holder(1, 1, held)).state
    result = acquire(state, Holder(2, 1, wanted))
    assert isinstance(result, Granted) is allowed
    if not allowed:
        assert isinstance(result, Failure)
        assert result.code is ErrorCode.LOCK_HELD


def test_release_frees_at_once_and_only_for_the_holder() -> None:
    """A clean release leaves no lock-delay; a non-holder gets LOCK_NOT_HELD."""
    state = granted(FREE, Holder(1, 1, EXCLUSIVE, 5000)).state
    refused = release(state, 1, 2)
    assert isinstance(refused, Failure)
    assert refused.code is ErrorCode.LOCK_NOT_HELD
    assert release(state, 1, 1) == FREE


def test_expiry_of_the_last_holder_starts_the_longest_lock_delay() -> None:
    """An expired session's holds go; if that frees the lock it is delayed by the longest
    of their delays; a closed session frees it with no delay."""
    state = granted(FREE, Holder(1, 1, SHARED, 100)).state
    state = granted(state, Holder(1, 2, SHARED, 300)).state
    state = granted(state, Holder(2, 1, SHARED, 900)).state
    after_one = session_ended(state, 1, expired=True)
    assert after_one.delay_ms == 0
    assert len(after_one.holders) == 1
    delayed = session_ended(state, 2, expired=True)
    assert delayed.delay_ms == 0  # 1 still holds
    both_gone = session_ended(session_ended(state, 2, expired=True), 1, expired=True)
    assert both_gone.delay_ms == 300
    assert not both_gone.holders
    assert session_ended(session_ended(state, 2, expired=False), 1, expired=False) == FREE
    refused = acquire(both_gone, Holder(3, 1, SHARED))
    assert isinstance(refused, Failure)
    assert refused.code is ErrorCode.LOCK_DELAYED
    assert end_delay(both_gone) == FREE


def test_a_session_holding_nothing_changes_nothing() -> None:
    """Ending a session that holds no part of the lock leaves the state as it was."""
    state = granted(FREE, Holder(1, 1, EXCLUSIVE, 10)).state
    assert session_ended(state, 2, expired=True) is state


modes = st.sampled_from(LockMode)
names = st.text(max_size=40)
numbers = st.integers(0, 2**63)


@given(st.builds(Sequencer, names, names, numbers, modes, numbers))
def test_sequencers_round_trip(sequencer: Sequencer) -> None:
    """A sequencer decodes to itself."""
    assert decode_sequencer(sequencer.encode()) == sequencer


@pytest.mark.parametrize(
    "data",
    [b"", b"\xc1", pack([2, "c", "/ls/c/f", 1, 1, 1]), pack([1, "c", "/ls/c/f", 1, 3, 1]),
     pack([1, "c", "/ls/c/f", -1, 1, 1]), pack([1, "c", "/ls/c/f", 1, 1]), b"\x00" * 5000],
    ids=["empty", "not msgpack", "format 2", "mode 3", "negative instance", "five fields",
         "too long"],
)  # fmt: skip
def test_bytes_that_are_not_a_sequencer_raise_decode_error(data: bytes) -> None:
    """Anything Sequencer.encode did not write is a DecodeError, never another exception."""
    with pytest.raises(DecodeError):
        decode_sequencer(data)
