"""Logins on a task.Clock: the cell decides the token, attempts and live logins are bounded,
idle logins end and their clients are closed."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from chubbypy.protocol.errors import PermissionDenied, Unavailable
from chubbypy.server._framed import ShellWarnings
from chubbypy.web._logins import (
    ADDRESSES_TRACKED_MAX,
    AttemptLimiter,
    Login,
    LoginBounds,
    LoginRefused,
    Logins,
    _login_refusal,
)

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


class Warnings(ShellWarnings):
    """The log lines a visitor causes, kept."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(10, clock.seconds)
        self.lines: list[str] = []

    def warn(self, kind: str, text: str) -> None:
        self.lines.append(text)
        super().warn(kind, text)


def made(
    clock: Clock,
    *,
    logins_max: int = 2,
    attempts: int = 5,
    failures: int = 5,
    per_principal: int | None = None,
    per_address: int | None = None,
    pending: list[Deferred[Any]] | None = None,
) -> tuple[Logins, list[FakeCell]]:
    """`pending`: every client's authentication waits on a Deferred put there."""
    cells: list[FakeCell] = []

    def make(principal: str, token: str, address: str) -> Any:
        cells.append(FakeCell(principal, token))
        if pending is not None:
            waiting: Deferred[Any] = Deferred()
            pending.append(waiting)
            cells[-1].locate_master = lambda: waiting  # type: ignore[method-assign]
        return cells[-1]

    bounds = LoginBounds(
        logins_max=logins_max,
        logins_per_principal_max=per_principal or logins_max,
        logins_per_address_max=per_address or logins_max,
        idle_seconds=60.0,
    )
    logins = Logins(
        clock,
        make,
        bounds,
        attempts=AttemptLimiter(attempts, 60.0),
        failures=AttemptLimiter(failures, 60.0, keep_spent=True),
        warnings=Warnings(clock),
    )
    return logins, cells


def warnings_of(logins: Logins) -> list[str]:
    warnings = logins._warnings
    assert isinstance(warnings, Warnings)
    return warnings.lines


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


def test_failed_logins_as_a_principal_are_bounded_over_every_address() -> None:
    """Five wrong tokens as operator from five addresses spend its budget: the sixth try,
    even with the right token and from a fresh address, is refused before the cell is
    asked, saying when to try again and that the CLI is unaffected; other principals log
    in; the budget refills with the window, and a success costs nothing."""
    clock = Clock()
    logins, cells = made(clock, logins_max=4, failures=5)
    for number in range(5):
        with pytest.raises(LoginRefused) as wrong:
            log_in(logins, "operator", "wrong-wrong-wrong-wrong", address=f"10.0.0.{number}")
        assert wrong.value.code == "PERMISSION_DENIED"
    asked = len(cells)
    with pytest.raises(LoginRefused) as spent:
        log_in(logins, "operator", GOOD, address="10.0.9.9")
    assert len(cells) == asked  # the cell was not asked
    assert spent.value.code == "TOO_MANY_REQUESTS"
    assert "web.login_failures_per_principal_max" in spent.value.message
    assert "refused for 12 s more" in spent.value.message
    assert "the CLI, are unaffected" in spent.value.message
    assert spent.value.retry_seconds == 12
    assert any(
        "refused a login as 'operator' from 10.0.9.9: too many failed logins" in line
        for line in warnings_of(logins)
    )
    log_in(logins, "alice", GOOD)
    clock.advance(12)  # one failure refilled (5 per 60 s)
    log_in(logins, "operator", GOOD, address="10.0.9.9")
    log_in(logins, "operator", GOOD, address="10.0.9.8")  # the success gave it back


def test_logins_in_progress_spend_the_budget_before_the_cell_answers() -> None:
    """Failures are counted as the cell is asked, not when it answers: with five logins as
    operator in progress a sixth is refused at once; a success gives its share back."""
    clock = Clock()
    pending: list[Deferred[Any]] = []
    logins, cells = made(clock, logins_max=8, attempts=10, failures=5, pending=pending)
    results: list[Any] = []
    for _ in range(6):
        coroutine = logins.login("operator", GOOD, "10.0.0.1")
        Deferred.fromCoroutine(coroutine).addBoth(results.append)
    assert len(cells) == 5
    (refused,) = results
    assert refused.value.code == "TOO_MANY_REQUESTS"
    pending[0].callback(object())  # the cell admits the first
    assert isinstance(results[1], Login)
    results.clear()
    Deferred.fromCoroutine(logins.login("operator", GOOD, "10.0.0.1")).addBoth(results.append)
    assert results == []
    assert len(cells) == 6  # its share was given back: asked


def test_one_principal_or_one_address_cannot_take_every_login() -> None:
    """Past logins_per_principal_max (or logins_per_address_max) a login is refused
    RESOURCE_EXHAUSTED naming that key, while others still log in; a visitor's own login,
    which a new one replaces, does not count."""
    clock = Clock()
    logins, _ = made(clock, logins_max=8, attempts=20, per_principal=2, per_address=3)
    first = log_in(logins, "operator", GOOD, address="10.0.0.1")
    log_in(logins, "operator", GOOD, address="10.0.0.2")
    with pytest.raises(LoginRefused) as principal:
        log_in(logins, "operator", GOOD, address="10.0.0.3")
    assert principal.value.code == "RESOURCE_EXHAUSTED"
    assert "web.logins_per_principal_max" in principal.value.message
    result: list[Any] = []
    Deferred.fromCoroutine(logins.login("operator", GOOD, "10.0.0.1", first)).addBoth(result.append)
    assert isinstance(result[0], Login)
    log_in(logins, "alice", GOOD, address="10.0.0.5")
    log_in(logins, "bob", GOOD, address="10.0.0.5")
    log_in(logins, "carol", GOOD, address="10.0.0.5")
    with pytest.raises(LoginRefused) as address:
        log_in(logins, "dave", GOOD, address="10.0.0.5")
    assert "web.logins_per_address_max" in address.value.message
    assert "10.0.0.5" in address.value.message
    log_in(logins, "dave", GOOD, address="10.0.0.6")


def test_a_principal_budget_is_never_forgotten_while_spent() -> None:
    """With keep_spent, a table full of spent buckets refuses new keys rather than
    forgetting one (a flood of names cannot refill a principal's budget)."""
    limiter = AttemptLimiter(1, 60.0, keep_spent=True)
    for number in range(ADDRESSES_TRACKED_MAX):
        assert limiter.take(f"p{number}", 0.0)
    assert not limiter.take("newcomer", 1.0)
    assert "p0" in limiter
    assert "newcomer" not in limiter
    assert limiter.take("newcomer", 61.0)  # the full buckets are forgotten first


def test_a_refused_login_names_no_replica_and_does_not_say_which_was_wrong() -> None:
    """An unknown principal and a wrong token read alike, without the replica's address
    the client puts first; the cell's own lock-out keeps its reason; a token is never
    repeated."""
    wrong = PermissionDenied("127.0.0.1:7201: unknown principal 'bob' or wrong token")
    assert _login_refusal(wrong, "s3cret") == "unknown principal or wrong token"
    locked = PermissionDenied("[::1]:7201: too many failed authentications from ::1 ...")
    assert _login_refusal(locked, "s3cret") == "too many failed authentications from ::1 ..."
    echoed = Unavailable("no master answered for s3cret")
    assert _login_refusal(echoed, "s3cret") == "no master answered for [token]"
