"""How many log lines of one kind a replica writes: the one rule for every line that a
client or a peer can make us write (a refused authentication, a connection closed for a
time-out, a malformed frame, ...). Pure: time is passed in, in whatever unit the caller
counts (the node's ticks, the shell's seconds).

Theory of operation. Each kind of line has a token bucket holding at most
`lines_per_window` lines and refilled at that many per `window`: a burst of a new kind is
logged whole up to the bucket's size, then one line per `window / lines_per_window`. A
line that finds the bucket empty is left out and counted; the next line of that kind
that is let through says how many were left out since the last one, so an operator
reading the log knows the scale of what happened without the log growing with it (issue
13: 11,000 wrong-token attempts a second each logged a warning line). The number of kinds
is bounded too (`KINDS_MAX`); kinds are fixed strings in the code, never built from what
a peer sent.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from attrs import define

from chubbypy.node._metrics import Counter

__all__ = ["KINDS_MAX", "LogBudget", "left_out_suffix"]

KINDS_MAX: Final = 256
"""Kinds of line remembered at once; the least recently used is forgotten past it."""


@define
class _Bucket:
    tokens: float
    updated: float
    left_out: int = 0


class LogBudget:
    """Per kind of line, a token bucket of lines; see the module docstring."""

    def __init__(
        self, lines_per_window: int, window: float, left_out: Counter | None = None
    ) -> None:
        assert lines_per_window >= 1, lines_per_window
        assert window > 0, window
        self._capacity = float(lines_per_window)
        self._rate = lines_per_window / window
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._left_out = left_out
        self.left_out_total = 0
        """Lines left out since the start, of every kind."""

    def admit(self, kind: str, now: float) -> int | None:
        """Whether a line of `kind` may be written at `now`: None to leave it out, else how
        many lines of the kind were left out before it (to say so in this one)."""
        bucket = self._buckets.get(kind)
        if bucket is None:
            bucket = self._buckets[kind] = _Bucket(self._capacity, now)
            if len(self._buckets) > KINDS_MAX:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(kind)
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(self._capacity, bucket.tokens + elapsed * self._rate)
            bucket.updated = now
        if bucket.tokens < 1.0:
            bucket.left_out += 1
            self.left_out_total += 1
            if self._left_out is not None:
                self._left_out.inc(kind=kind)
            return None
        bucket.tokens -= 1.0
        left_out, bucket.left_out = bucket.left_out, 0
        return left_out


def left_out_suffix(left_out: int) -> str:
    """What a line says about the lines of its kind left out before it ("" for none)."""
    if left_out == 0:
        return ""
    return f" ({left_out} more like this were left out of the log since the last one)"
