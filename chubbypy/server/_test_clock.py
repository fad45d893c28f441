"""A test clock hook: a replica whose clock runs fast or slow, for the fault suite only.

Shell side (STYLE §1): the core counts ticks, and `ReplicaServer` makes them from a monotonic
clock; this module is another such clock. When a replica is started with the environment
variable ``CHUBBYPY_TEST_CLOCK_RATE_FILE`` naming a file, its clock runs at the rate that
file holds (a number such as ``1.01``: 1% fast), and follows the file when it changes, so
the fault suite (`chubbypy.testing.faults`) can skew a running replica's clock the way a
drifting crystal would. Only the rate matters: master leases and session leases are
durations on a monotonic clock, and Paxos Made Live's lease argument assumes only that
each clock's rate stays within ``1 ± paxos.clock_drift_max`` of true time. So a rate
outside that bound is refused: at start the replica exits with one line saying so, and a
later change out of bounds is ignored with a warning (the clock keeps its rate). A new
rate applies from the moment it is read, without a jump: the clock stays monotonic.

Nothing sets the variable but the fault suite; a production replica never reads the file.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from chubbypy.paxos import drift_fraction

__all__ = ["LOOK_SECONDS", "TEST_CLOCK_VARIABLE", "RateClock", "rate_problem"]

TEST_CLOCK_VARIABLE: Final = "CHUBBYPY_TEST_CLOCK_RATE_FILE"
LOOK_SECONDS: Final = 0.1
"""How often (in real seconds) the clock looks at its file for a new rate."""


def rate_problem(rate: float, clock_drift_max: float) -> str | None:
    """Why a clock may not run at `rate`, or None: it must stay within the drift bound."""
    # In exact fractions, as the lease arithmetic bounds drift (so 1.01 is within 0.01).
    if not math.isfinite(rate) or abs(drift_fraction(rate) - 1) > drift_fraction(clock_drift_max):
        return (
            f"a clock rate of {rate:g} is outside 1 ± paxos.clock_drift_max "
            f"({clock_drift_max:g}): the master lease assumes no clock drifts further"
        )
    return None


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as error:
        raise ValueError(f"cannot read the clock rate file {path}: {error.strerror}") from None


def _rate_in(path: Path, text: str) -> float:
    """The rate `text` (read from `path`) gives; ValueError saying why it gives none."""
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"the clock rate file {path} holds {text[:40]!r}, not a number") from None


class RateClock:
    """A monotonic clock running at the rate its file holds; see the module docstring."""

    def __init__(
        self,
        path: Path,
        clock_drift_max: float,
        warn: Callable[[str], None],
        real: Callable[[], float] = time.monotonic,
    ) -> None:
        """ValueError (saying why) if the file has no rate, or one out of bounds."""
        self._path = path
        self._drift_max = clock_drift_max
        self._warn = warn
        self._real = real
        self._text = _read_text(path)
        rate = _rate_in(path, self._text)
        problem = rate_problem(rate, clock_drift_max)
        if problem is not None:
            raise ValueError(f"{path}: {problem}")
        self.rate = rate
        self._since = self._looked = real()
        self._base = self._since

    def __call__(self) -> float:
        now = self._real()
        if now - self._looked >= LOOK_SECONDS:
            self._looked = now
            self._look(now)
        return self._base + (now - self._since) * self.rate

    def _look(self, now: float) -> None:
        """Take the file's rate if it changed and is allowed; a warning, once, if not."""
        try:
            text = _read_text(self._path)
        except ValueError as error:
            text = str(error)
            if text != self._text:
                self._warn(f"test clock: {error}; the rate stays {self.rate:g}")
            self._text = text
            return
        if text == self._text:
            return
        self._text = text
        try:
            rate = _rate_in(self._path, text)
        except ValueError as error:
            self._warn(f"test clock: {error}; the rate stays {self.rate:g}")
            return
        problem = rate_problem(rate, self._drift_max)
        if problem is not None:
            self._warn(f"test clock: {self._path}: {problem}; the rate stays {self.rate:g}")
            return
        self._base += (now - self._since) * self.rate
        self._since = now
        self.rate = rate
