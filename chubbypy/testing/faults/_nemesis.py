"""The nemesis: faults injected into a running cell, one episode at a time, from a seed.

Test support (the world around real replica processes). Each episode is one fault, held for
a while, then healed, then a quiet spell so the cell can recover and the clients make
progress. The kinds, in a shuffled order that covers every kind before any repeats:

* ``partition-majority``: a random minority of the replicas cut off from the majority (both
  ways; the clients still reach everyone);
* ``partition-master``: the master cut off from every other replica and from the clients;
* ``partition-clients``: one of the two clients' hosts cut off from every replica, for
  longer than a session lease: its sessions end and their locks go to the other host's
  clients, while its own believe they still hold them until they hear otherwise;
* ``partition-one-way``: the master's packets to the others dropped, or theirs to it (the
  master then still hears, or is still heard, by the others);
* ``partition-bridge``: two sides that cannot reach each other, and one replica that reaches
  both (Jepsen's bridge);
* ``drop``: every link between hosts drops a random share of its packets;
* ``delay``: every link to and from one replica (the master half the time) delayed;
* ``kill``: a replica (the master half the time) killed with SIGKILL, started again later;
* ``pause``: a replica (the master half the time) stopped with SIGSTOP for longer than the
  master lease, then continued (SIGCONT);
* ``restart``: a replica stopped gracefully (SIGTERM) and started again;
* ``pause-client``: a client process (a lock holder's two times in three) stopped with
  SIGSTOP for longer than a session lease, then continued: it wakes with a session that
  ended, holding a sequencer that another holder has since superseded, and a cache that
  must not be read;
* ``skew``: the master's clock slowed and every other replica's sped up by the most the
  cell's ``paxos.clock_drift_max`` allows (the direction that tests the lease's margin),
  and in the episode's second half the master cut off (or, without namespaces, paused),
  so that a new master is elected while the clocks disagree most.

The order, the targets chosen at random and the durations come from the seed; which replica
is master when an episode begins comes from the cell. Every action is a line of the
nemesis log (JSON), with its time on the histories' clock.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Final, Protocol

from chubbypy.testing.faults._network import LinkFaults, Network

__all__ = ["KINDS", "LINK_KINDS", "CellControl", "Nemesis", "NemesisLog"]

KINDS: Final = (
    "partition-majority",
    "partition-master",
    "partition-one-way",
    "partition-bridge",
    "drop",
    "delay",
    "kill",
    "pause",
    "restart",
    "pause-client",
    "partition-clients",
    "skew",
)
LINK_KINDS: Final = frozenset(
    {
        "partition-majority",
        "partition-master",
        "partition-one-way",
        "partition-bridge",
        "partition-clients",
        "drop",
        "delay",
    }
)
"""The kinds that need faulty links (network namespaces)."""

EPISODE_SECONDS: Final = {
    "partition-majority": (3.0, 6.0),
    "partition-master": (3.0, 6.0),
    "partition-one-way": (3.0, 6.0),
    "partition-bridge": (3.0, 6.0),
    "drop": (3.0, 6.0),
    "delay": (3.0, 6.0),
    "kill": (1.0, 4.0),
    "pause": (1.5, 4.0),
    "restart": (0.5, 2.0),
    "pause-client": (4.0, 7.0),
    "partition-clients": (4.0, 7.0),
    "skew": (4.0, 8.0),
}
"""How long each kind of fault is held, at random between these (seconds)."""
QUIET_SECONDS: Final = (1.5, 3.0)
DROP_PERCENT: Final = (20, 40)
DELAY_MS: Final = (50, 300)


class CellControl(Protocol):
    """What the nemesis does to the cell's replica processes."""

    replicas: Sequence[str]
    client_hosts: Sequence[str]

    @property
    def client_processes(self) -> Sequence[str]:
        """The client processes, by name (``w2-lock``); a lock workload's ends in -lock."""
        ...

    clock_drift_max: float
    master_lease_seconds: float

    def master(self) -> str | None: ...

    def kill(self, replica: str) -> None: ...

    def stop(self, replica: str) -> None:
        """SIGTERM, and wait for it to exit."""
        ...

    def start(self, replica: str) -> None: ...

    def pause(self, replica: str) -> None: ...

    def resume(self, replica: str) -> None: ...

    def set_clock_rate(self, replica: str, rate: float) -> None: ...

    def pause_client(self, name: str) -> None: ...

    def resume_client(self, name: str) -> None: ...

    def set_delays(self, faults: LinkFaults) -> None:
        """Give every proxy the delays of `faults`."""
        ...


class NemesisLog:
    """The nemesis log: one JSON object a line, and a line for a person through `say`."""

    def __init__(self, path: Path, say: Callable[[str], None], started_ns: int) -> None:
        self._stream = path.open("a")
        self._say = say
        self._started_ns = started_ns

    def event(self, what: str, **details: object) -> None:
        now = time.monotonic_ns()
        document = {"time_ns": now, "what": what, **details}
        self._stream.write(json.dumps(document) + "\n")
        self._stream.flush()
        listed = " ".join(f"{key}={value}" for key, value in details.items())
        self._say(f"[{(now - self._started_ns) / 1e9:7.2f} s] {what} {listed}".rstrip())

    def close(self) -> None:
        self._stream.close()


def _rounds(rng: random.Random, kinds: Sequence[str]) -> Iterator[str]:
    """The kinds, shuffled, every kind once per round."""
    while True:
        order = list(kinds)
        rng.shuffle(order)
        yield from order


class Nemesis:
    """Injects faults episode after episode; see the module docstring."""

    def __init__(
        self,
        *,
        seed: int,
        cell: CellControl,
        network: Network,
        log: NemesisLog,
        kinds: Sequence[str],
        stop: threading.Event,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float], object] | None = None,
    ) -> None:
        assert set(kinds) <= set(KINDS), kinds
        assert network.links_faulty or not set(kinds) & LINK_KINDS, kinds
        self._rng = random.Random(seed)
        self._cell = cell
        self._network = network
        self._log = log
        self._kinds = list(kinds)
        self._stop = stop
        self._clock = clock
        self._sleep = wait or stop.wait
        self.injected: Counter[str] = Counter()
        self._down: set[str] = set()
        self._paused: set[str] = set()
        self._paused_clients: set[str] = set()
        self._skewed = False
        self._faults = LinkFaults()

    # ------------------------------------------------------------------ the schedule

    def run(self, seconds: float) -> None:
        """Episodes until `seconds` have passed (the last one cut short), then heal all."""
        deadline = self._clock() + seconds
        order = _rounds(self._rng, self._kinds)
        try:
            while self._clock() < deadline and not self._stop.is_set():
                kind = next(order)
                low, high = EPISODE_SECONDS[kind]
                hold = min(self._rng.uniform(low, high), max(0.5, deadline - self._clock()))
                self._episode(kind, hold)
                self._wait(min(self._rng.uniform(*QUIET_SECONDS), deadline - self._clock()))
        finally:
            self.heal()

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self._sleep(seconds)

    def _pick(self, master_half: bool = True) -> str:
        """A replica: the master half the time (when there is one), else any."""
        master = self._cell.master()
        if master_half and master is not None and self._rng.random() < 0.5:
            return master
        return self._rng.choice(list(self._cell.replicas))

    def _episode(self, kind: str, hold: float) -> None:
        self.injected[kind] += 1
        match kind:
            case "partition-majority":
                self._partition_majority(hold)
            case "partition-master":
                self._partition_master(hold)
            case "partition-one-way":
                self._partition_one_way(hold)
            case "partition-bridge":
                self._partition_bridge(hold)
            case "drop":
                self._drop(hold)
            case "delay":
                self._delay(hold)
            case "kill":
                self._kill(hold)
            case "pause":
                self._pause(hold)
            case "restart":
                self._restart(hold)
            case "pause-client":
                self._pause_client(hold)
            case "partition-clients":
                self._partition_clients(hold)
            case "skew":
                self._skew(hold)

    # ------------------------------------------------------------------ links

    def _links(self, faults: LinkFaults) -> None:
        self._faults = faults
        self._network.apply(faults)
        self._cell.set_delays(faults)

    def _cut(self, hold: float, kind: str, cut: set[tuple[str, str]], **details: object) -> None:
        self._log.event(f"{kind} begins", cut=sorted(f"{a}->{b}" for a, b in cut), **details)
        self._links(LinkFaults(cut=frozenset(cut)))
        self._wait(hold)
        self._links(LinkFaults())
        self._log.event(f"{kind} healed")

    def _partition_majority(self, hold: float) -> None:
        replicas = list(self._cell.replicas)
        minority = set(self._rng.sample(replicas, (len(replicas) - 1) // 2))
        majority = set(replicas) - minority
        cut = {(a, b) for a in minority for b in majority} | {
            (b, a) for a in minority for b in majority
        }
        self._cut(hold, "partition-majority", cut, minority=sorted(minority))

    def _partition_master(self, hold: float) -> None:
        master = (
            self._pick(master_half=False) if self._cell.master() is None else self._cell.master()
        )
        assert master is not None
        others = [h for h in self._hosts() if h != master]
        cut = {(master, other) for other in others} | {(other, master) for other in others}
        self._cut(hold, "partition-master", cut, master=master)

    def _partition_clients(self, hold: float) -> None:
        host = self._rng.choice(list(self._cell.client_hosts))
        replicas = self._cell.replicas
        cut = {(host, r) for r in replicas} | {(r, host) for r in replicas}
        self._cut(hold, "partition-clients", cut, clients=host)

    def _partition_one_way(self, hold: float) -> None:
        master = self._cell.master() or self._rng.choice(list(self._cell.replicas))
        others = [r for r in self._cell.replicas if r != master]
        if self._rng.random() < 0.5:
            cut, direction = {(master, other) for other in others}, "master cannot send"
        else:
            cut, direction = {(other, master) for other in others}, "master cannot hear"
        self._cut(hold, "partition-one-way", cut, master=master, direction=direction)

    def _partition_bridge(self, hold: float) -> None:
        replicas = list(self._cell.replicas)
        self._rng.shuffle(replicas)
        bridge, sides = replicas[0], replicas[1:]
        left, right = sides[: len(sides) // 2], sides[len(sides) // 2 :]
        cut = {(a, b) for a in left for b in right} | {(b, a) for a in left for b in right}
        self._cut(hold, "partition-bridge", cut, bridge=bridge, sides=[left, right])

    def _hosts(self) -> list[str]:
        return [*self._cell.replicas, *self._cell.client_hosts]

    def _all_links(self) -> list[tuple[str, str]]:
        """Every link between a replica and another host (clients do not talk together)."""
        hosts = self._hosts()
        return [
            (a, b)
            for a in hosts
            for b in hosts
            if a != b and (a in self._cell.replicas or b in self._cell.replicas)
        ]

    def _drop(self, hold: float) -> None:
        percent = self._rng.randint(*DROP_PERCENT)
        self._log.event("drop begins", percent=percent)
        self._links(LinkFaults(drop_percent=dict.fromkeys(self._all_links(), percent)))
        self._wait(hold)
        self._links(LinkFaults())
        self._log.event("drop healed")

    def _delay(self, hold: float) -> None:
        target = self._pick()
        delay = self._rng.randint(*DELAY_MS)
        links = [(a, b) for a, b in self._all_links() if target in (a, b)]
        self._log.event("delay begins", replica=target, ms=delay)
        self._links(LinkFaults(delay_ms=dict.fromkeys(links, delay)))
        self._wait(hold)
        self._links(LinkFaults())
        self._log.event("delay healed")

    # ------------------------------------------------------------------ processes

    def _kill(self, hold: float) -> None:
        target = self._pick()
        self._log.event("kill", replica=target, master=self._cell.master())
        self._cell.kill(target)
        self._down.add(target)
        self._wait(hold)
        self._cell.start(target)
        self._down.discard(target)
        self._log.event("restarted", replica=target)

    def _pause(self, hold: float) -> None:
        target = self._pick()
        self._log.event("pause", replica=target, master=self._cell.master(), seconds=round(hold, 2))
        self._cell.pause(target)
        self._paused.add(target)
        self._wait(hold)
        self._cell.resume(target)
        self._paused.discard(target)
        self._log.event("resumed", replica=target)

    def _restart(self, hold: float) -> None:
        target = self._pick()
        self._log.event("restart: stop", replica=target, master=self._cell.master())
        self._down.add(target)
        self._cell.stop(target)
        self._wait(hold)
        self._cell.start(target)
        self._down.discard(target)
        self._log.event("restart: started", replica=target)

    def _pause_client(self, hold: float) -> None:
        processes = list(self._cell.client_processes)
        holders = [name for name in processes if name.endswith("-lock")]
        target = self._rng.choice(holders if holders and self._rng.random() < 2 / 3 else processes)
        self._log.event("pause-client", process=target, seconds=round(hold, 2))
        self._cell.pause_client(target)
        self._paused_clients.add(target)
        self._wait(hold)
        self._cell.resume_client(target)
        self._paused_clients.discard(target)
        self._log.event("resumed client", process=target)

    def _skew(self, hold: float) -> None:
        master = self._cell.master() or self._rng.choice(list(self._cell.replicas))
        drift = self._cell.clock_drift_max
        rates = {r: 1 - drift if r == master else 1 + drift for r in self._cell.replicas}
        self._log.event("skew begins", rates=rates, master=master)
        self._skewed = True
        for replica, rate in rates.items():
            self._cell.set_clock_rate(replica, rate)
        self._wait(hold / 2)
        if self._network.links_faulty:
            others = [h for h in self._hosts() if h != master]
            cut = {(master, o) for o in others} | {(o, master) for o in others}
            self._log.event("skew: master cut off", master=master)
            self._links(LinkFaults(cut=frozenset(cut)))
            self._wait(hold / 2)
            self._links(LinkFaults())
        else:
            self._log.event("skew: master paused", master=master)
            self._cell.pause(master)
            self._paused.add(master)
            self._wait(hold / 2)
            self._cell.resume(master)
            self._paused.discard(master)
        for replica in rates:
            self._cell.set_clock_rate(replica, 1.0)
        self._skewed = False
        self._log.event("skew healed")

    # ------------------------------------------------------------------ the end

    def heal(self) -> None:
        """Undo every fault still in force: links, paused and stopped replicas, clocks."""
        if not self._faults.healed:
            self._links(LinkFaults())
        for replica in sorted(self._paused):
            self._cell.resume(replica)
        for name in sorted(self._paused_clients):
            self._cell.resume_client(name)
        for replica in sorted(self._down):
            self._cell.start(replica)
        if self._skewed:
            for replica in self._cell.replicas:
                self._cell.set_clock_rate(replica, 1.0)
        if self._paused or self._down or self._skewed or self._paused_clients:
            self._log.event(
                "healed",
                resumed=sorted(self._paused | self._paused_clients),
                started=sorted(self._down),
            )
        self._paused.clear()
        self._paused_clients.clear()
        self._down.clear()
        self._skewed = False
