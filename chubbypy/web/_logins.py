"""Logins: who a request acts as, each with a client of the cell of its own.

Shell (STYLE §1). A person logs in with a principal and its token; the web server makes a
`Cell` client with them (so the cell checks the token, with its own limits on failed
authentications, and its ACLs decide everything that login sees and does) and gives the
browser a random 256-bit login id in a cookie. The token stays in that client's memory,
which needs it to authenticate again after a fail-over; it is never written to the cookie,
a log or a page. A visitor without a login acts through the shared anonymous client.

Bounds (``web:`` keys): `AttemptLimiter` allows ``login_attempts_per_address_max`` attempts
per address per ``login_attempts_window_seconds`` (a token bucket); at most ``logins_max``
logins live at once (attempts in progress count); a login unused for
``login_idle_seconds`` is ended, its client closed (which ends its session: its handles
close at the master) and whoever listens told (`Logins.on_ended`).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable
from typing import Final

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from chubbypy.client import Cell
from chubbypy.protocol.errors import ChubbyError

__all__ = ["AttemptLimiter", "Login", "LoginRefused", "Logins"]

LOGIN_ID_BYTES: Final = 32
"""256 random bits: a login id cannot be guessed."""
CSRF_BYTES: Final = 32
ADDRESSES_TRACKED_MAX: Final = 10_000
"""Addresses whose login attempts are remembered at once; full buckets are forgotten first."""

MakeCell = Callable[[str, str, str], Cell]
"""Makes the client of a login: its principal, its token, and the address it logs in from."""


class LoginRefused(Exception):
    """A login that did not happen: `code` is an error code of the API, `message` says why
    (never with the token in it)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@define
class _Bucket:
    tokens: float
    seen: float


class AttemptLimiter:
    """A token bucket per address: `allowed` attempts per `window_seconds`, refilled
    continuously. Pure: the caller passes the time."""

    def __init__(self, allowed: int, window_seconds: float) -> None:
        assert allowed >= 1, allowed
        assert window_seconds > 0, window_seconds
        self._allowed = allowed
        self._rate = allowed / window_seconds
        self._buckets: dict[str, _Bucket] = {}

    def take(self, address: str, now: float) -> bool:
        """Whether `address` may try now (and if so, the attempt is counted)."""
        bucket = self._buckets.get(address)
        if bucket is None:
            self._forget_some(now)
            bucket = self._buckets[address] = _Bucket(float(self._allowed), now)
        bucket.tokens = min(self._allowed, bucket.tokens + (now - bucket.seen) * self._rate)
        bucket.seen = now
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True

    def _forget_some(self, now: float) -> None:
        """Keep the table bounded: drop full buckets, then (a flood of addresses) the
        least recently seen half."""
        if len(self._buckets) < ADDRESSES_TRACKED_MAX:
            return
        full = [
            address
            for address, bucket in self._buckets.items()
            if bucket.tokens + (now - bucket.seen) * self._rate >= self._allowed
        ]
        for address in full:
            del self._buckets[address]
        if len(self._buckets) >= ADDRESSES_TRACKED_MAX:
            by_age = sorted(self._buckets, key=lambda a: self._buckets[a].seen)
            for address in by_age[: len(by_age) // 2]:
                del self._buckets[address]


@define(eq=False)
class Login:
    """One person's login: the client of the cell that acts as `principal`."""

    login_id: str
    principal: str
    cell: Cell
    csrf: str
    """The token every change of this login carries (a form field or the X-CSRF-Token
    header), compared in constant time."""
    address: str
    last_used: float
    ended: bool = field(default=False)


class Logins:
    """Every live login, by id; see the module docstring."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        make_cell: MakeCell,
        *,
        logins_max: int,
        idle_seconds: float,
        attempts: AttemptLimiter,
    ) -> None:
        self._clock = clock
        self._make_cell = make_cell
        self._logins_max = logins_max
        self._idle_seconds = idle_seconds
        self._attempts = attempts
        self._logins: dict[str, Login] = {}
        self._pending = 0
        self.on_ended: list[Callable[[Login], None]] = []
        """Called with each login that ends (logged out or expired)."""
        self._expiry = LoopingCall(self.expire_idle)
        self._expiry.clock = clock
        self._expiry.start(min(idle_seconds / 4, 30.0), now=False)

    def __len__(self) -> int:
        return len(self._logins)

    async def login(self, principal: str, token: str, address: str) -> Login:
        """A new login as `principal`, once the cell accepted `token`; `LoginRefused` if
        the address tried too often, too many logins live, or the cell refused."""
        if not self._attempts.take(address, self._clock.seconds()):
            raise LoginRefused(
                "TOO_MANY_REQUESTS",
                "too many login attempts from this address: wait a minute "
                "(web.login_attempts_per_address_max)",
            )
        if len(self._logins) + self._pending >= self._logins_max:
            raise LoginRefused(
                "RESOURCE_EXHAUSTED",
                f"{self._logins_max} logins are live, the most this page holds "
                "(web.logins_max): try again when one ends",
            )
        self._pending += 1
        try:
            cell = self._make_cell(principal, token, address)
            try:
                await cell.locate_master()  # the connection authenticates first
            except ChubbyError as refused:
                await _quietly_closed(cell)
                raise LoginRefused(refused.code.name, refused.message) from None
        finally:
            self._pending -= 1
        login = Login(
            login_id=secrets.token_hex(LOGIN_ID_BYTES),
            principal=principal,
            cell=cell,
            csrf=secrets.token_urlsafe(CSRF_BYTES),
            address=address,
            last_used=self._clock.seconds(),
        )
        self._logins[login.login_id] = login
        self.log.info("login as {principal} from {address}", principal=principal, address=address)
        return login

    def find(self, login_id: str | None) -> Login | None:
        """The live login of this id (now used: its idle time starts again), or None."""
        if login_id is None:
            return None
        login = self._logins.get(login_id)
        if login is None:
            return None
        now = self._clock.seconds()
        if now - login.last_used >= self._idle_seconds:
            self._end(login, "idle")
            return None
        login.last_used = now
        return login

    def logout(self, login: Login) -> Deferred[None]:
        """End `login` now; fires once its client is closed."""
        return self._end(login, "logged out")

    def expire_idle(self) -> None:
        """End every login unused for the idle time."""
        now = self._clock.seconds()
        for login in list(self._logins.values()):
            if now - login.last_used >= self._idle_seconds:
                self._end(login, "idle")

    def close(self) -> Deferred[None]:
        """End every login (the server stops); fires once their clients are closed."""
        if self._expiry.running:
            self._expiry.stop()
        ending = [self._end(login, "server stopping") for login in list(self._logins.values())]
        return Deferred.fromCoroutine(_all(ending))

    def _end(self, login: Login, why: str) -> Deferred[None]:
        if login.ended:
            return Deferred.fromCoroutine(_nothing())
        login.ended = True
        self._logins.pop(login.login_id, None)
        self.log.info("login of {principal} ended: {why}", principal=login.principal, why=why)
        for callback in list(self.on_ended):
            callback(login)
        return Deferred.fromCoroutine(_quietly_closed(login.cell))


async def _quietly_closed(cell: Cell) -> None:
    with contextlib.suppress(Exception):  # closing must not fail the caller
        await cell.close()


async def _all(deferreds: list[Deferred[None]]) -> None:
    for deferred in deferreds:
        await deferred


async def _nothing() -> None:
    return None
