"""The handles one mastership knows: remembered once, indexed by name and session, refused
once closed or poisoned, forgotten (not refused) when their session ends; and, against a
deliberately simple reference, the same answers after any sequence of changes."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from chubbypy.master._registry import HandleRegistry
from chubbypy.protocol import HandleId, SessionId
from chubbypy.protocol.session import EventMask, HandleMode
from chubbypy.sessions import Handle, handle_id_for

S1, S2 = SessionId(1 << 16), SessionId(2 << 16)
A, B = "/ls/c/a", "/ls/c/b"


def handle(session: SessionId, number: int, path: str = A, instance: int = 1) -> Handle:
    return Handle(session, handle_id_for(1, number), path, instance, HandleMode.READ,
                  EventMask.NONE, 0, 1)  # fmt: skip


def test_a_handle_is_remembered_once_and_found_by_name_session_and_id() -> None:
    """remember indexes a handle under its name and its session; again is a no-op."""
    registry = HandleRegistry()
    first, second, other = handle(S1, 0), handle(S1, 1, B), handle(S2, 2)
    for known in (first, second, other, first):
        registry.remember(known)
    assert len(registry) == 3
    assert registry.get(first.handle_id) == first
    assert registry.get(handle_id_for(1, 9)) is None
    assert sorted(h.handle_id for h in registry.on_path(A)) == [first.handle_id, other.handle_id]
    assert registry.on_path("/ls/c/none") == []
    assert (registry.count(S1), registry.count(S2), registry.count(SessionId(9))) == (2, 1, 0)


def test_closing_forgets_and_refuses_poisoning_only_refuses() -> None:
    """A closed handle is gone and refused; a poisoned one is refused, and still known (it
    hears its events, and counts, until it is closed)."""
    registry = HandleRegistry()
    closed, poisoned = handle(S1, 0), handle(S1, 1)
    registry.remember(closed)
    registry.remember(poisoned)
    registry.close(closed)
    registry.poison(poisoned.handle_id)
    assert registry.is_closed(closed.handle_id)
    assert registry.is_closed(poisoned.handle_id)
    assert registry.get(closed.handle_id) is None
    assert registry.on_path(A) == [poisoned]
    assert registry.count(S1) == 1


def test_a_handle_closed_before_it_was_known_is_refused() -> None:
    """Closing a handle of an earlier master this one never saw still refuses it."""
    registry = HandleRegistry()
    stranger = handle(S1, 5)
    registry.close(stranger)
    assert registry.is_closed(stranger.handle_id)
    assert len(registry) == 0


def test_a_sessions_end_forgets_its_handles_without_refusing_them() -> None:
    """Only the ended session's handles go; none is refused (the session's end is)."""
    registry = HandleRegistry()
    mine, also_mine, theirs = handle(S1, 0), handle(S1, 1, B), handle(S2, 2)
    for known in (mine, also_mine, theirs):
        registry.remember(known)
    registry.session_ended(S1)
    assert registry.count(S1) == 0
    assert registry.on_path(A) == [theirs]
    assert registry.on_path(B) == []
    assert not registry.is_closed(mine.handle_id)
    registry.session_ended(S1)  # again: nothing left to forget
    assert len(registry) == 1


def test_ids_carry_the_epoch_and_count_from_zero() -> None:
    """The master of epoch e numbers its handles e * 2**32 + n, n from 0."""
    registry = HandleRegistry()
    assert [registry.new_id(3) for _ in range(3)] == [HandleId((3 << 32) + n) for n in range(3)]
    assert HandleRegistry().new_id(4) > registry.new_id(3)


class RegistryModel(RuleBasedStateMachine):
    """The registry against a dict of handles and a set of refused ids."""

    def __init__(self) -> None:
        super().__init__()
        self.registry = HandleRegistry()
        self.known: dict[HandleId, Handle] = {}
        self.refused: set[HandleId] = set()

    handles = st.builds(handle, st.sampled_from([S1, S2]), st.integers(0, 7),
                        st.sampled_from([A, B]), st.integers(1, 2))  # fmt: skip

    @rule(known=handles)
    def remember(self, known: Handle) -> None:
        self.registry.remember(known)
        self.known.setdefault(known.handle_id, known)

    @rule(known=handles)
    def close(self, known: Handle) -> None:
        stored = self.known.get(known.handle_id, known)
        self.registry.close(stored)
        self.known.pop(known.handle_id, None)
        self.refused.add(known.handle_id)

    @rule(number=st.integers(0, 7))
    def poison(self, number: int) -> None:
        self.registry.poison(handle_id_for(1, number))
        self.refused.add(handle_id_for(1, number))

    @rule(session=st.sampled_from([S1, S2]))
    def session_ended(self, session: SessionId) -> None:
        self.registry.session_ended(session)
        self.known = {i: h for i, h in self.known.items() if h.session_id != session}

    @invariant()
    def same_answers(self) -> None:
        registry = self.registry
        assert len(registry) == len(self.known)
        for number in range(8):
            handle_id = handle_id_for(1, number)
            assert registry.get(handle_id) == self.known.get(handle_id)
            assert registry.is_closed(handle_id) == (handle_id in self.refused)
        for path in (A, B):
            expected = {h for h in self.known.values() if h.path == path}
            assert set(registry.on_path(path)) == expected
        for session in (S1, S2):
            expected_count = sum(h.session_id == session for h in self.known.values())
            assert registry.count(session) == expected_count


TestRegistryModel = RegistryModel.TestCase
TestRegistryModel.settings = settings(
    max_examples=50, stateful_step_count=30, deadline=None, derandomize=True
)
