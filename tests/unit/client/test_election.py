"""Election.observe over a fake cell: it follows the leader's file across sessions."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from chubbypy.client import Election
from chubbypy.client._election import RESUME_PAUSE_SECONDS
from chubbypy.client._streams import EventStream
from chubbypy.protocol.errors import PermissionDenied, SessionExpired, Unavailable
from chubbypy.protocol.namespace import AclNames, Stat
from chubbypy.protocol.session import EventKind, SessionEvent
from tests.unit.client.harness import result_of

PATH = "/ls/test/leader"
STAT = Stat(3, 1, 0, 0, 0, AclNames("all", "all", "all"), False, False, 0)


class FakeHandle:
    """A handle on the leader's file: one events() stream the test feeds."""

    def __init__(self, session: int) -> None:
        self.session = session
        self.stream: EventStream[SessionEvent] = EventStream()
        self.closed = False

    def events(self) -> EventStream[SessionEvent]:
        return self.stream

    def close(self) -> Deferred[None]:
        self.closed = True
        self.stream.end()
        return succeed(None)

    def changed(self) -> None:
        self.stream.push(SessionEvent(1, EventKind.CONTENTS_MODIFIED, PATH, 0))


class FakeCell:
    """What an Election uses of a `Cell`: `open`, `session` (read through it) and its clock;
    `session_number` counts the sessions, as a new one follows an expiry."""

    def __init__(self) -> None:
        self._clock = Clock()
        self._closing = self._closed = False
        self.contents = b"alice"
        self.handles: list[FakeHandle] = []
        self.session_number = 1
        self.refusals: list[Exception] = []
        """Errors the next opens fail with."""

    def open(self, path: str, **options: Any) -> Deferred[FakeHandle]:
        assert path == PATH
        if self.refusals:
            return fail(self.refusals.pop(0))
        handle = FakeHandle(self.session_number)
        self.handles.append(handle)
        return succeed(handle)

    def session(self) -> Deferred[FakeCell]:
        return succeed(self)

    def get_contents_and_stat(self, path: str) -> Deferred[tuple[bytes, Stat]]:
        return succeed((self.contents, STAT))

    def expire(self) -> None:
        """The session ends: its handles' streams end with SessionExpired."""
        ended, self.session_number = self.session_number, self.session_number + 1
        for handle in list(self.handles):
            if handle.session == ended:
                handle.stream.end(SessionExpired(f"session {ended} has expired"))


@pytest.fixture
def cell() -> FakeCell:
    return FakeCell()


def observe(cell: FakeCell) -> EventStream[str | None]:
    return Election(cell, PATH, "watcher").observe()  # type: ignore[arg-type]


def test_observe_resumes_in_a_new_session_and_reports_what_changed_meanwhile(
    cell: FakeCell,
) -> None:
    """The session ends: the observer opens a handle in the next session, reads the file
    again, reports the leader that took over meanwhile, and goes on hearing of changes."""
    observed = observe(cell)
    assert result_of(observed.next()) == "alice"
    cell.contents = b"bob"
    cell.expire()
    assert result_of(observed.next()) == "bob"
    assert [h.session for h in cell.handles] == [1, 2]
    assert cell.handles[0].closed
    cell.contents = b"carol"
    cell.handles[1].changed()
    assert result_of(observed.next()) == "carol"
    observed.close()
    assert cell.handles[1].closed


def test_an_unchanged_leader_is_not_reported_again_after_resuming(cell: FakeCell) -> None:
    """Resuming reads the file again; the same leader is not a change."""
    observed = observe(cell)
    assert result_of(observed.next()) == "alice"
    cell.expire()
    assert len(cell.handles) == 2
    waiting = observed.next()
    assert not waiting.called
    cell.contents = b"bob"
    cell.handles[1].changed()
    assert result_of(waiting) == "bob"


def test_resuming_while_the_cell_is_out_of_reach_tries_again_after_a_pause(
    cell: FakeCell,
) -> None:
    """No new session yet (Unavailable): tried again every RESUME_PAUSE_SECONDS until one
    opens; the stream stays open meanwhile."""
    observed = observe(cell)
    result_of(observed.next())
    cell.refusals = [Unavailable("no master answered"), Unavailable("no master answered")]
    cell.contents = b"bob"
    cell.expire()
    waiting = observed.next()
    cell._clock.advance(RESUME_PAUSE_SECONDS)
    assert not waiting.called
    cell._clock.advance(RESUME_PAUSE_SECONDS)
    assert result_of(waiting) == "bob"
    assert not observed.ended


def test_closing_the_stream_while_resuming_stops_it(cell: FakeCell) -> None:
    """A stream closed during the pause opens nothing more."""
    observed = observe(cell)
    result_of(observed.next())
    cell.refusals = [Unavailable("no master answered")]
    cell.expire()
    observed.close()
    cell._clock.advance(RESUME_PAUSE_SECONDS)
    assert len(cell.handles) == 1


def test_the_first_open_failing_or_a_refusal_ends_the_stream_with_its_error(
    cell: FakeCell,
) -> None:
    """Nothing to resume from: the first open's Unavailable ends the stream, and so does
    a refusal when resuming (it would not mend)."""
    cell.refusals = [Unavailable("no master answered")]
    with pytest.raises(Unavailable):
        result_of(observe(cell).next())
    observed = observe(cell)
    result_of(observed.next())
    cell.refusals = [PermissionDenied("not for you")]
    cell.expire()
    with pytest.raises(PermissionDenied):
        result_of(observed.next())


def test_a_cell_closed_ends_the_stream(cell: FakeCell) -> None:
    """The handle's events ending cleanly (the cell closed its session) end the stream."""
    observed = observe(cell)
    result_of(observed.next())
    cell.handles[0].stream.end()
    with pytest.raises(StopAsyncIteration):
        result_of(observed.next())
