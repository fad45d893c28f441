"""The simulated world: true time, an event queue, drifting clocks and a faulty network.

Everything happens on one thread in one process, ordered by (true time, insertion order),
and every random choice comes from one seeded generator: a seed replays exactly.
Times are integers in microseconds of true time.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable

from attrs import define, field

SECOND = 1_000_000
MILLISECOND = 1_000


class Scheduler:
    """A discrete-event loop over true time."""

    def __init__(self) -> None:
        self.now = 0
        self._queue: list[tuple[int, int, Callable[[], None]]] = []
        self._sequence = 0
        self.events_run = 0

    def at(self, time: int, action: Callable[[], None]) -> None:
        """Run `action` at true time `time` (never in the past)."""
        assert time >= self.now, (time, self.now)
        self._sequence += 1
        heapq.heappush(self._queue, (time, self._sequence, action))

    def after(self, delay: int, action: Callable[[], None]) -> None:
        self.at(self.now + max(0, delay), action)

    def next_time(self) -> int | None:
        return self._queue[0][0] if self._queue else None

    def run_one(self) -> None:
        time, _, action = heapq.heappop(self._queue)
        self.now = time
        self.events_run += 1
        action()


@define
class Clock:
    """A replica's clock: local = offset + true * (1 + ppm / 1e6), in microseconds."""

    offset_us: int
    ppm: int

    def local(self, true_us: int) -> int:
        return self.offset_us + true_us * (1_000_000 + self.ppm) // 1_000_000

    def true_at(self, local_us: int) -> int:
        """The first true time at which this clock reads at least `local_us`."""
        numerator = (local_us - self.offset_us) * 1_000_000
        denominator = 1_000_000 + self.ppm
        true = -(-numerator // denominator)
        while self.local(true) < local_us:  # integer rounding in `local`
            true += 1
        return true


@define
class NetworkFaults:
    """How badly the network behaves right now."""

    loss: float = 0.0
    duplication: float = 0.0
    reorder: float = 0.0
    """Chance that a message takes a long detour (and so arrives out of order)."""
    delay_min_us: int = 100
    delay_max_us: int = 2 * MILLISECOND
    detour_max_us: int = 300 * MILLISECOND


@define
class Network:
    """Delivers messages between named nodes with delay, loss, duplication and partitions."""

    scheduler: Scheduler
    rng: random.Random
    faults: NetworkFaults = field(factory=NetworkFaults)
    blocked: set[tuple[str, str]] = field(factory=set)
    """Directed links (sender, recipient) that drop everything: partitions, one-way or not."""
    sent: int = 0
    dropped: int = 0

    def send(self, sender: str, recipient: str, deliver: Callable[[], None]) -> None:
        self.sent += 1
        if (sender, recipient) in self.blocked or self.rng.random() < self.faults.loss:
            self.dropped += 1
            return
        copies = 2 if self.rng.random() < self.faults.duplication else 1
        for _ in range(copies):
            self.scheduler.after(self._delay(), deliver)

    def _delay(self) -> int:
        faults = self.faults
        delay = self.rng.randint(faults.delay_min_us, faults.delay_max_us)
        if self.rng.random() < faults.reorder:
            delay += self.rng.randint(0, faults.detour_max_us)
        return delay

    def partition(self, groups: list[set[str]], *, one_way: bool = False) -> None:
        """Cut every link between different groups (one-way: only from earlier to later ones)."""
        for i, group in enumerate(groups):
            for j, other in enumerate(groups):
                if i == j or (one_way and j < i):
                    continue
                self.blocked.update((a, b) for a in sorted(group) for b in sorted(other))

    def heal(self) -> None:
        self.blocked.clear()


SITE_ENABLED = 0.25
"""In a run with buggify on, the chance that a given site is switched on for the run."""


class SimChance:
    """The core's `Chance` in simulation: seeded, and with buggify switched on for some runs.

    As FoundationDB's BUGGIFY: in such a run, each site is switched on or off for good the
    first time it is asked (so which rare paths a run takes is decided per site and per
    seed), and a site that is on fires at `buggify_rate` of the times it is asked.
    """

    def __init__(self, rng: random.Random, buggify_rate: float) -> None:
        self._rng = rng
        self._buggify_rate = buggify_rate
        self._sites: dict[str, bool] = {}

    def randint(self, low: int, high: int) -> int:
        return self._rng.randint(low, high)

    def buggify(self, site: str) -> bool:
        if self._buggify_rate <= 0:
            return False
        enabled = self._sites.get(site)
        if enabled is None:
            enabled = self._sites[site] = self._rng.random() < SITE_ENABLED
        return enabled and self._rng.random() < self._buggify_rate
