"""Logins: who a request acts as, each with a client of the cell of its own.

Shell (STYLE §1). A person logs in with a principal and its token; the web server makes a
`Cell` client with them (so the cell checks the token, with its own limits on failed
authentications, and its ACLs decide everything that login sees and does) and gives the
browser a random 256-bit login id in a cookie. The token stays in that client's memory,
which needs it to authenticate again after a fail-over; it is never written to the cookie,
a log or a page. A visitor without a login acts through the shared anonymous client.

Bounds (``web:`` keys), checked in this order before the cell is asked:

* `AttemptLimiter` allows ``login_attempts_per_address_max`` attempts per address per
  ``login_attempts_window_seconds`` (a token bucket);
* at most ``logins_max`` logins live at once, ``logins_per_principal_max`` of one principal
  and ``logins_per_address_max`` from one address (attempts in progress count), so that
  one token or one host cannot take every login;
* at most ``login_failures_per_principal_max`` failed logins as one principal, from every
  address together, per the cell's ``limits.auth_failures_window_seconds`` (a token
  bucket per principal; an attempt spends one before the cell is asked, and gets it back
  if the cell admits the token or fails for another reason). Every login reaches the
  cell from this server's host, where the cell allows ``limits.auth_failures_per_address_max``
  failures per principal (the configuration checks this budget is below it): so failed
  web logins can keep a principal off this page for a while, never off the cell.

A login unused for ``login_idle_seconds`` is ended, its client closed (which ends its
session: its handles close at the master) and whoever listens told (`Logins.on_ended`).
Every refused login is logged with its address and principal, within the log budget for
lines a visitor causes (`chubbypy.server._framed.ShellWarnings`).
"""

from __future__ import annotations

import contextlib
import math
import re
import secrets
from collections.abc import Callable
from typing import Final

from attrs import define, field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from chubbypy.client import Cell
from chubbypy.protocol.errors import ChubbyError, ErrorCode
from chubbypy.server._framed import ShellWarnings

__all__ = ["AttemptLimiter", "Login", "LoginBounds", "LoginRefused", "Logins"]

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

    def __init__(self, code: str, message: str, *, retry_seconds: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_seconds = retry_seconds
        """When to try again, if the refusal says (a Retry-After header)."""


@define
class _Bucket:
    tokens: float
    seen: float


class AttemptLimiter:
    """A token bucket per key (an address, a principal): `allowed` attempts per
    `window_seconds`, refilled continuously. Pure: the caller passes the time.

    The table of keys is bounded (`ADDRESSES_TRACKED_MAX`): full buckets are forgotten
    first; then, unless `keep_spent`, the least recently seen half. With `keep_spent` a
    spent bucket is never forgotten (so a flood of other keys cannot refill it): a new key
    is refused while the table is full of them."""

    def __init__(self, allowed: int, window_seconds: float, *, keep_spent: bool = False) -> None:
        assert allowed >= 1, allowed
        assert window_seconds > 0, window_seconds
        self._allowed = allowed
        self._rate = allowed / window_seconds
        self._keep_spent = keep_spent
        self._buckets: dict[str, _Bucket] = {}

    def __contains__(self, key: str) -> bool:
        return key in self._buckets

    def take(self, key: str, now: float) -> bool:
        """Whether `key` may try now (and if so, the attempt is counted)."""
        bucket = self._bucket(key, now)
        if bucket is None or bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True

    def give_back(self, key: str, now: float) -> None:
        """An attempt `take` counted did not cost what the bucket bounds (a login that
        succeeded): return it."""
        bucket = self._bucket(key, now)
        if bucket is not None:
            bucket.tokens = min(float(self._allowed), bucket.tokens + 1)

    def wait_seconds(self, key: str, now: float) -> int:
        """Whole seconds until `key` may try again (0: now)."""
        bucket = self._bucket(key, now)
        if bucket is None:
            return math.ceil(1 / self._rate)
        return max(0, math.ceil((1 - bucket.tokens) / self._rate))

    def _bucket(self, key: str, now: float) -> _Bucket | None:
        """`key`'s bucket, refilled to `now`; None if it is new and there is no room."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if not self._room(now):
                return None
            bucket = self._buckets[key] = _Bucket(float(self._allowed), now)
        bucket.tokens = min(self._allowed, bucket.tokens + max(0.0, now - bucket.seen) * self._rate)
        bucket.seen = max(bucket.seen, now)
        return bucket

    def _room(self, now: float) -> bool:
        """Keep the table bounded: drop full buckets, then (a flood of keys, and unless
        `keep_spent`) the least recently seen half; whether a new key fits."""
        if len(self._buckets) < ADDRESSES_TRACKED_MAX:
            return True
        full = [
            key
            for key, bucket in self._buckets.items()
            if bucket.tokens + (now - bucket.seen) * self._rate >= self._allowed
        ]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= ADDRESSES_TRACKED_MAX and not self._keep_spent:
            by_age = sorted(self._buckets, key=lambda k: self._buckets[k].seen)
            for key in by_age[: len(by_age) // 2]:
                del self._buckets[key]
        return len(self._buckets) < ADDRESSES_TRACKED_MAX


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


@frozen(kw_only=True)
class LoginBounds:
    """The ``web:`` keys that bound logins (see `chubbypy.config.WebConfig`)."""

    logins_max: int
    logins_per_principal_max: int
    logins_per_address_max: int
    idle_seconds: float


class Logins:
    """Every live login, by id; see the module docstring."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        make_cell: MakeCell,
        bounds: LoginBounds,
        *,
        attempts: AttemptLimiter,
        failures: AttemptLimiter,
        warnings: ShellWarnings,
    ) -> None:
        """`attempts`: per address; `failures`: per principal, over every address (it
        must keep its spent buckets); `warnings`: where refused logins are logged."""
        self._clock = clock
        self._make_cell = make_cell
        self._bounds = bounds
        self._attempts = attempts
        self._failures = failures
        self._warnings = warnings
        self._logins: dict[str, Login] = {}
        self._pending: list[tuple[str, str]] = []
        """(principal, address) of each login the cell is being asked about."""
        self.on_ended: list[Callable[[Login], None]] = []
        """Called with each login that ends (logged out or expired)."""
        self._expiry = LoopingCall(self.expire_idle)
        self._expiry.clock = clock
        self._expiry.start(min(bounds.idle_seconds / 4, 30.0), now=False)

    def __len__(self) -> int:
        return len(self._logins)

    async def login(
        self, principal: str, token: str, address: str, replacing: Login | None = None
    ) -> Login:
        """A new login as `principal`, once the cell accepted `token`; `LoginRefused` if
        the address tried too often, the principal failed too often, too many logins are
        live (of everyone, of the principal, from the address: `replacing`, the login the
        visitor has now, is not counted) or the cell refused. Every refusal is logged."""
        now = self._clock.seconds()
        try:
            self._check(principal, address, replacing, now)
        except LoginRefused as refused:
            self.refused(principal, address, refused)
            raise
        self._pending.append((principal, address))
        try:
            cell = self._make_cell(principal, token, address)
            try:
                await cell.locate_master()  # the connection authenticates first
            except ChubbyError as error:
                await _quietly_closed(cell)
                if error.code is not ErrorCode.PERMISSION_DENIED:
                    self._failures.give_back(principal, self._clock.seconds())  # not a failure
                refusal = LoginRefused(error.code.name, _login_refusal(error, token))
                self.refused(principal, address, refusal)
                raise refusal from None
        finally:
            self._pending.remove((principal, address))
        self._failures.give_back(principal, self._clock.seconds())
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

    def refused(self, principal: str, address: str, refused: LoginRefused) -> None:
        """Log a refused login (within the log budget for lines a visitor causes)."""
        self._warnings.warn(
            f"web-login-refused-{refused.code}",
            f"refused a login as {principal!r:.80} from {address}: {refused.message}",
        )

    def _check(self, principal: str, address: str, replacing: Login | None, now: float) -> None:
        """Refuse (`LoginRefused`) a login before the cell is asked, else spend one of the
        principal's failures (given back if the cell admits the token)."""
        if not self._attempts.take(address, now):
            raise LoginRefused(
                "TOO_MANY_REQUESTS",
                "too many login attempts from this address: wait a minute "
                "(web.login_attempts_per_address_max)",
                retry_seconds=self._attempts.wait_seconds(address, now),
            )
        bounds = self._bounds
        live = [login for login in self._logins.values() if login is not replacing]
        everyone = len(live) + len(self._pending)
        of_principal = sum(1 for login in live if login.principal == principal)
        of_principal += sum(1 for pending, _ in self._pending if pending == principal)
        from_address = sum(1 for login in live if login.address == address)
        from_address += sum(1 for _, pending in self._pending if pending == address)
        if everyone >= bounds.logins_max:
            raise LoginRefused(
                "RESOURCE_EXHAUSTED",
                f"{bounds.logins_max} logins are live, the most this page holds "
                "(web.logins_max): try again when one ends",
            )
        if of_principal >= bounds.logins_per_principal_max:
            raise LoginRefused(
                "RESOURCE_EXHAUSTED",
                f"{bounds.logins_per_principal_max} logins as {principal!r:.80} are live, the "
                "most of one principal (web.logins_per_principal_max): log out of one, or "
                "wait for one to end",
            )
        if from_address >= bounds.logins_per_address_max:
            raise LoginRefused(
                "RESOURCE_EXHAUSTED",
                f"{bounds.logins_per_address_max} logins from {address} are live, the most "
                "from one address (web.logins_per_address_max): log out of one, or wait for "
                "one to end",
            )
        if not self._failures.take(principal, now):
            if principal not in self._failures:
                raise LoginRefused(
                    "TOO_MANY_REQUESTS",
                    "too many principals have failed logins on this page at once: try "
                    "again in a minute (the cell itself, and the CLI, are unaffected)",
                    retry_seconds=60,
                )
            wait = self._failures.wait_seconds(principal, now)
            raise LoginRefused(
                "TOO_MANY_REQUESTS",
                f"too many failed logins as {principal!r:.80} on this page, from any address "
                "(web.login_failures_per_principal_max): its logins here are refused "
                f"for {wait} s more; the cell itself, and the CLI, are unaffected",
                retry_seconds=wait,
            )

    def find(self, login_id: str | None) -> Login | None:
        """The live login of this id (now used: its idle time starts again), or None."""
        if login_id is None:
            return None
        login = self._logins.get(login_id)
        if login is None:
            return None
        now = self._clock.seconds()
        if now - login.last_used >= self._bounds.idle_seconds:
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
            if now - login.last_used >= self._bounds.idle_seconds:
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


def _login_refusal(error: ChubbyError, token: str) -> str:
    """What the login page says of the cell's refusal: for a principal or token the cell
    does not admit, the same words whichever it was (and no replica's address, which
    the client library puts first); otherwise the cell's reason, never with the token."""
    message = error.message.replace(token, "[token]") if token else error.message
    message = _REPLICA_PREFIX.sub("", message, count=1)
    if error.code is ErrorCode.PERMISSION_DENIED and "too many" not in message:
        return "unknown principal or wrong token"
    return message


_REPLICA_PREFIX: Final = re.compile(r"^\[?[\w.:-]+\]?:\d+: ")
"""The "host:port: " a client's error begins with when one replica's answer is relayed."""
