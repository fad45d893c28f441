"""The handles one mastership knows: remembered once, indexed by name and session, refused
once closed or poisoned, forgotten (not refused) when their session ends; its own closed
handles cost no memory; and, against a deliberately simple reference, the same answers
after any sequence of changes."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from chubbypy.master._registry import HandleRegistry
from chubbypy.protocol import HandleId, SessionId
from chubbypy.protocol.session import EventMask, HandleMode
from chubbypy.sessions import Handle, handle_id_for

S1, S2 = SessionId(1 << 16), SessionId(2 << 16)
HERE = 2
"""The epoch of the master whose registry the model checks."""
A, B = "/ls/c/a", "/ls/c/b"


def handle(
    session: SessionId, number: int, path: str = A, instance: int = 1, epoch: int = 1
) -> Handle:
    return Handle(session, handle_id_for(epoch, number), path, instance, HandleMode.READ,
                  EventMask.NONE, 0, epoch)  # fmt: skip


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


def test_opening_and_closing_this_masters_handles_keeps_nothing() -> None:
    """10,000 handles made, remembered and closed by this master leave nothing behind
    (refused by not being known), and each stays refused; an earlier master's handle
    closed here is the one kind of id kept."""
    registry = HandleRegistry()
    made = []
    for _ in range(10_000):
        made.append(Handle(S1, registry.new_id(2), A, 1, HandleMode.READ, EventMask.NONE, 0, 2))
        registry.remember(made[-1])
        registry.close(made[-1])
    assert (len(registry), registry.refused_kept) == (0, 0)
    assert all(registry.is_closed(h.handle_id) for h in made)
    earlier = handle(S1, 0, epoch=1)
    registry.remember(earlier)
    registry.close(earlier)
    assert registry.is_closed(earlier.handle_id)
    assert registry.refused_kept == 1


def test_ids_carry_the_epoch_and_count_from_zero() -> None:
    """The master of epoch e numbers its handles e * 2**32 + n, n from 0."""
    registry = HandleRegistry()
    assert [registry.new_id(3) for _ in range(3)] == [HandleId((3 << 32) + n) for n in range(3)]
    assert HandleRegistry().new_id(4) > registry.new_id(3)


class RegistryModel(RuleBasedStateMachine):
    """The registry against a dict of handles and a set of refused ids. The master is of
    epoch HERE: its own handles enter as the master makes them (`make`), and are used only
    while not refused (the master checks `is_closed` before it remembers a handle); an
    earlier master's (epoch 1) may be remembered, closed or poisoned in any order."""

    def __init__(self) -> None:
        super().__init__()
        self.registry = HandleRegistry()
        self.known: dict[HandleId, Handle] = {}
        self.refused: set[HandleId] = set()
        self.made: list[Handle] = []

    earlier = st.builds(handle, st.sampled_from([S1, S2]), st.integers(0, 7),
                        st.sampled_from([A, B]), st.integers(1, 2))  # fmt: skip

    @rule(session=st.sampled_from([S1, S2]), path=st.sampled_from([A, B]))
    def make(self, session: SessionId, path: str) -> None:
        made = Handle(session, self.registry.new_id(HERE), path, 1, HandleMode.READ,
                      EventMask.NONE, 0, HERE)  # fmt: skip
        self.registry.remember(made)
        self.known[made.handle_id] = made
        self.made.append(made)

    @rule(known=earlier)
    def remember(self, known: Handle) -> None:
        self.registry.remember(known)
        self.known.setdefault(known.handle_id, known)

    @rule(data=st.data())
    def use_own(self, data: st.DataObject) -> None:
        """The master remembers its own handle again as it is used (while not refused)."""
        if self.made:
            own = data.draw(st.sampled_from(self.made))
            if not self.registry.is_closed(own.handle_id):
                self.registry.remember(own)

    @rule(known=earlier, data=st.data(), own=st.booleans())
    def close(self, known: Handle, data: st.DataObject, own: bool) -> None:
        if own and self.made:
            known = data.draw(st.sampled_from(self.made))
        stored = self.known.get(known.handle_id, known)
        self.registry.close(stored)
        self.known.pop(known.handle_id, None)
        self.refused.add(known.handle_id)

    @rule(known=earlier, data=st.data(), own=st.booleans())
    def poison(self, known: Handle, data: st.DataObject, own: bool) -> None:
        if own and self.made:
            known = data.draw(st.sampled_from(self.made))
        self.registry.poison(known.handle_id)
        self.refused.add(known.handle_id)

    @rule(session=st.sampled_from([S1, S2]))
    def session_ended(self, session: SessionId) -> None:
        self.registry.session_ended(session)
        self.known = {i: h for i, h in self.known.items() if h.session_id != session}

    @invariant()
    def same_answers(self) -> None:
        registry = self.registry
        assert len(registry) == len(self.known)
        ids = [handle_id_for(1, number) for number in range(8)]
        for handle_id in ids + [h.handle_id for h in self.made]:
            assert registry.get(handle_id) == self.known.get(handle_id)
            # This master's handles are refused once not known (closed, or their session
            # ended: the master checks the session first); earlier ones once refused.
            refused = handle_id in self.refused
            if registry.made_here(handle_id):
                refused = refused or handle_id not in self.known
            assert registry.is_closed(handle_id) == refused, handle_id
        assert registry.refused_kept <= len(set(ids) & self.refused) + len(self.known)
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
