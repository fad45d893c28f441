"""Logins on a task.Clock: the cell decides the token, attempts and live logins are bounded,
idle logins end and their clients are closed."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from chubbypy.protocol.errors import PermissionDenied
from chubbypy.web._logins import AttemptLimiter, Login, LoginRefused, Logins

GOOD = "a-token-of-sixteen-or-more"


class FakeCell:
    """What a login needs of a client of the cell: it authenticates, and closes."""

    def __init__(self, principal: str, token: str) -> None:
        self.principal, self.token = principal, token
        self.closed = False

    def locate_master(self) -> Deferred[Any]:
        if self.token != GOOD:
            return fail(PermissionDenied(f"unknown principal {self.principal!r} or wrong token"))
        return succeed(object())

    def close(self) -> Deferred[None]:
        self.closed = True
        return succeed(None)


def made(clock: Clock, *, logins_max: int = 2, attempts: int = 5) -> tuple[Logins, list[FakeCell]]:
    cells: list[FakeCell] = []

    def make(principal: str, token: str, address: str) -> Any:
        cells.append(FakeCell(principal, token))
        return cells[-1]

    logins = Logins(clock, make, logins_max=logins_max, idle_seconds=60.0,
                    attempts=AttemptLimiter(attempts, 60.0))  # fmt: skip
    return logins, cells


def log_in(logins: Logins, principal: str, token: str, address: str = "10.0.0.1") -> Login:
    result: list[Any] = []
    Deferred.fromCoroutine(logins.login(principal, token, address)).addBoth(result.append)
    (outcome,) = result
    if isinstance(outcome, Exception):
        raise outcome
    if hasattr(outcome, "value"):  # a twisted Failure
        raise outcome.value
    assert isinstance(outcome, Login)
    return outcome


def test_a_wrong_token_is_refused_by_the_cell_and_its_client_closed() -> None:
    """The cell's refusal becomes the login's; the client made for it is closed."""
    logins, cells = made(Clock())
    with pytest.raises(LoginRefused) as refused:
        log_in(logins, "operator", "wrong-wrong-wrong-wrong")
    assert refused.value.code == "PERMISSION_DENIED"
    assert cells[0].closed
    assert len(logins) == 0


def test_a_login_has_random_ids_and_is_found_by_its_id() -> None:
    """Ids are 256 random bits in hex; the CSRF token differs; a wrong id finds nothing."""
    logins, _ = made(Clock())
    first, second = log_in(logins, "operator", GOOD), log_in(logins, "alice", GOOD)
    assert len(first.login_id) == 64
    assert first.login_id != second.login_id
    assert first.csrf != first.login_id
    assert logins.find(first.login_id) is first
    assert logins.find("0" * 64) is None
    assert logins.find(None) is None


def test_live_logins_and_attempts_are_bounded() -> None:
    """Past logins_max a login is refused; past the attempts per address, even a good one."""
    clock = Clock()
    logins, _ = made(clock, logins_max=1, attempts=3)
    log_in(logins, "operator", GOOD)
    with pytest.raises(LoginRefused) as full:
        log_in(logins, "alice", GOOD)
    assert full.value.code == "RESOURCE_EXHAUSTED"
    with pytest.raises(LoginRefused):
        log_in(logins, "alice", GOOD)
    with pytest.raises(LoginRefused) as flooded:
        log_in(logins, "alice", GOOD)
    assert flooded.value.code == "TOO_MANY_REQUESTS"
    with pytest.raises(LoginRefused) as other:
        log_in(logins, "alice", GOOD, address="10.0.0.2")  # another address: its own bucket
    assert other.value.code == "RESOURCE_EXHAUSTED"


def test_an_idle_login_ends_and_its_client_is_closed() -> None:
    """Unused for the idle time, a login ends (listeners told), whether found or swept."""
    clock = Clock()
    logins, cells = made(clock)
    ended: list[Login] = []
    logins.on_ended.append(ended.append)
    kept, idle = log_in(logins, "operator", GOOD), log_in(logins, "alice", GOOD)
    clock.advance(45)
    assert logins.find(kept.login_id) is kept  # used: its idle time starts again
    clock.advance(30)  # the sweep runs every 15 s: alice's login is 75 s idle now
    assert ended == [idle]
    assert cells[1].closed
    assert not cells[0].closed
    clock.advance(60)
    assert logins.find(kept.login_id) is None
    assert ended == [idle, kept]


def test_logout_and_close_end_logins() -> None:
    """Logging out ends one login; closing the table ends the rest and stops the sweep."""
    clock = Clock()
    logins, cells = made(clock)
    first, _ = log_in(logins, "operator", GOOD), log_in(logins, "alice", GOOD)
    logins.logout(first)
    assert cells[0].closed
    assert logins.find(first.login_id) is None
    logins.close()
    assert cells[1].closed
    assert clock.getDelayedCalls() == []
