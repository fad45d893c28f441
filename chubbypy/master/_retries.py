"""Retries of calls in progress (issue 12). Pure: memory of one mastership.

A client that lost its connection, or whose call timed out, sends the call again, with
the same `CallNumber` if it may change state. While the first is still in progress here
(its proposal not yet applied, its acquire still queued), the retry *joins* it: it is
answered with the first one's answer, and nothing is done twice; a blocking acquire keeps
its place in the queue. Calls in progress are found by their session's number
(`numbered`), acquires by their handle (`LockWaits.in_progress`).

A caller that gives up (`leave`: its deadline passed, its connection went away) takes its
call with it only if no retry joined it; otherwise the call goes on for the retries.
Whatever ends a call (`settle`) names the retries to answer with it.

The retries waiting are counted per session (`joined_of`), so that the master can bound
what one session has waiting (issue 13: 100,001 blocking acquires of one handle,
pipelined, each joined the first and waited with it).
"""

from __future__ import annotations

from chubbypy.master._ids import CallToken
from chubbypy.protocol import SessionId

NumberKey = tuple[SessionId, int]
"""A numbered call: its session, and its sequence number there."""


class CallRetries:
    """The calls in progress that retries may join; see the module docstring."""

    def __init__(self) -> None:
        self._numbered: dict[NumberKey, CallToken] = {}
        self._key_of: dict[CallToken, NumberKey] = {}
        self._joined: dict[CallToken, list[CallToken]] = {}
        """Per call in progress: the retries answered with it, in arrival order."""
        self._joined_to: dict[CallToken, CallToken] = {}
        self._session_of: dict[CallToken, SessionId] = {}
        """The session of each retry that joined a call."""
        self._per_session: dict[SessionId, int] = {}

    def __len__(self) -> int:
        """Numbered calls in progress (for tests: it returns to 0)."""
        return len(self._numbered)

    def numbered(self, key: NumberKey) -> CallToken | None:
        """The call in progress with this number, if any."""
        return self._numbered.get(key)

    def track(self, token: CallToken, key: NumberKey) -> None:
        """Call `token`, numbered `key`, is in progress: retries of it may join it."""
        assert key not in self._numbered, key
        self._numbered[key] = token
        self._key_of[token] = key

    def join(self, first: CallToken, retry: CallToken, session_id: SessionId) -> None:
        """`retry`, a call of `session_id`, is answered with the call `first`, which is in
        progress."""
        assert retry not in self._joined_to, retry
        self._joined.setdefault(first, []).append(retry)
        self._joined_to[retry] = first
        self._session_of[retry] = session_id
        self._per_session[session_id] = self._per_session.get(session_id, 0) + 1

    def joined_of(self, session_id: SessionId) -> int:
        """The session's retries waiting on a call in progress."""
        return self._per_session.get(session_id, 0)

    def settle(self, token: CallToken) -> list[CallToken]:
        """Call `token` ends with an answer: the retries to answer alike (none for a
        retry, whose first answers it)."""
        key = self._key_of.pop(token, None)
        if key is not None:
            del self._numbered[key]
        retries = self._joined.pop(token, [])
        for retry in retries:
            del self._joined_to[retry]
            self._uncount(retry)
        return retries

    def leave(self, token: CallToken) -> bool:
        """The caller of `token` gave up: True if the call must go on all the same (a
        retry joined it); a retry that gives up just stops waiting."""
        first = self._joined_to.pop(token, None)
        if first is not None:
            self._uncount(token)
            self._joined[first].remove(token)
            if not self._joined[first]:
                del self._joined[first]
            return True
        return bool(self._joined.get(token))

    def _uncount(self, retry: CallToken) -> None:
        session_id = self._session_of.pop(retry)
        left = self._per_session[session_id] - 1
        assert left >= 0, (session_id, left)
        if left:
            self._per_session[session_id] = left
        else:
            del self._per_session[session_id]
