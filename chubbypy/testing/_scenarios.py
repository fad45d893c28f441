"""Targeted scenarios: fault patterns aimed at one class of failure, with timing varied by seed.

Random faults find most bugs, but some failures need several faults lined up in a short
window. Like etcd's failpoint-specific robustness runs and Jepsen's targeted nemeses, each
scenario here builds that window deliberately, then lets the seed vary everything else
(who is master, message delays, disk latencies, the workload), and ends with the same
checks as a random run (`SimCell.conclude`).

* ``random``: the general safety-then-liveness run with random faults.
* ``bridge``: one replica loses its link to the master only. It must not be able to take
  over while the master's lease holds (the acceptors' lease promise is what stops it).
* ``lost-ack``: the master's only live peer crashes in the middle of a disk write, at the
  moment the master drops off the network. A peer that acknowledged before its write was
  durable would let an acknowledged command vanish.
* ``flapping-master``: a master decides to expire a session whose client it no longer
  hears, with its Accepts already cut off; a second master serves just long enough to
  extend that session's lease; a third recovers the first one's leftover instances. Only
  the epoch guard keeps the stale expiry from applying while the client's lease holds.
* ``isolated-master`` (lock clients): the master loses its peers for several session
  leases while its clients still reach it. It must stop extending session leases once its
  master lease is over: the new master, on the other side, expires every session that
  does not come to it, and no client may still believe its session alive by then.
* ``stalling-cacher`` (the whole cell, no faults): a hostile session caches every file the
  workload writes and never acknowledges an invalidation (issue 13's review: the master
  renewed its lease on every KeepAlive, and the writes waited for ever). Each write may
  wait for it only until its lease is over: the liveness bound is a session lease and a
  second, from each operation's start, so this is the check that no write is held up by
  a cacher longer than about a lease.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from attrs import evolve

from chubbypy.testing._cell import SimCell, SimResult, SimSettings
from chubbypy.testing._client import COUNTERS, REGISTERS, ScriptClient
from chubbypy.testing._lock_client import LOCK_COUNT, LOCK_PATH_FORMAT
from chubbypy.testing._registers import path_of
from chubbypy.testing._world import SECOND

Narrate = Callable[[str], None] | None


class Scenario(Protocol):
    def __call__(self, seed: int, settings: SimSettings, narrate: Narrate = None) -> SimResult: ...


def random_faults(seed: int, settings: SimSettings, narrate: Narrate = None) -> SimResult:
    return SimCell(seed, settings, narrate=narrate).run_scenario()


def bridge(seed: int, settings: SimSettings, narrate: Narrate = None) -> SimResult:
    cell = SimCell(seed, evolve(settings, clients=1), narrate=narrate)
    cell.start()
    master = cell.run_until_serving()
    cut_off = next(n for n in cell.names if n != master)
    cell.cut(master, cut_off)
    cell.run(seconds=3 * settings.lease_seconds)
    return cell.conclude()


def lost_acknowledgement(seed: int, settings: SimSettings, narrate: Narrate = None) -> SimResult:
    cell = SimCell(seed, evolve(settings, replicas=3), narrate=narrate)
    cell.start()
    master = cell.run_until_serving()
    peer, isolated = (n for n in cell.names if n != master)
    cell.partition([isolated], [master, peer])
    cell.run(seconds=0.5)
    node = cell.nodes[peer]
    rng = cell.seeded_random()

    def write_started(duration_us: int) -> None:
        def crash() -> None:
            cell.crash(peer)
            cell.heal()
            cell.partition([master], [peer, isolated])
            cell.scheduler.after(SECOND // 5, lambda: cell.restart(peer))

        cell.scheduler.after(rng.randrange(max(1, duration_us)), crash)

    node.write_started = write_started
    cell.run(seconds=4 * settings.lease_seconds)
    return cell.conclude()


def flapping_master(seed: int, settings: SimSettings, narrate: Narrate = None) -> SimResult:
    # One idle lock client (a session, nothing else) and a script client; no other load,
    # so that each master proposes only what the script makes it.
    quiet = evolve(settings, clients=1, locks=True, registers=True, idle_lock_clients=True,
                   checksum_every_seconds=1_000.0, grace_seconds=30.0)  # fmt: skip
    cell = SimCell(seed, evolve(quiet, clients=0), narrate=narrate)
    holder = cell.add_lock_client()
    cell.start()
    first = cell.run_until_serving()
    writer = cell.script_client()
    writer.register(first)
    cell.wait_for(lambda: holder.lease_end() is not None, seconds=5)
    # The holder freezes: the first master will expire its session when its lease runs
    # out. Just before, the master's Accepts stop reaching anyone (clients still reach
    # it): a write, then the session's expiry, are instances nobody else accepts.
    others = [n for n in cell.names if n != first]
    holder.pause(cell.scheduler.now + 3600 * SECOND)
    cell.run(seconds=0.5)
    cell.wait_for(lambda: _lease_left_ms(cell, writer, first) < 500, seconds=10)
    cell.partition([first], others, one_way=True)
    writer.write(first, "k0", 1)
    cell.run(seconds=0.6)
    # A second master serves just long enough to answer the holder's KeepAlive once it
    # thaws (a new lease for a session that, in the log, is still alive)...
    second = cell.run_until_serving(excluding=[first])
    holder.resume()
    answered = cell.scheduler.now
    cell.wait_for(lambda: (holder.lease_end() or 0) > answered + SECOND, seconds=5)
    # ...and is cut off; a third master recovers the first one's leftover instances from
    # a quorum that includes the first master. Only the epoch guard keeps the first
    # master's expiry of the session, decided before the second master extended it, from
    # applying while the holder's lease holds.
    cell.heal()
    cell.partition([second], [n for n in cell.names if n != second])
    cell.run_until_serving(excluding=[second])
    cell.run(seconds=1)
    return cell.conclude()


def isolated_master(seed: int, settings: SimSettings, narrate: Narrate = None) -> SimResult:
    cell = SimCell(seed, evolve(settings, locks=True), narrate=narrate)
    cell.start()
    master = cell.run_until_serving()
    cell.run(seconds=settings.session_lease_seconds)
    cell.partition([master], [n for n in cell.names if n != master])
    cell.run(seconds=3 * settings.session_lease_seconds)
    cell.heal()
    cell.run(seconds=settings.session_lease_seconds)
    return cell.conclude()


def stalling_cacher(seed: int, settings: SimSettings, narrate: Narrate = None) -> SimResult:
    # No faults: the whole run is the liveness phase, so every operation, from its start,
    # must finish within the bound (one that found no master counts against it too).
    bound = settings.session_lease_seconds + 1.0
    phase = 5 * settings.session_lease_seconds
    whole = evolve(settings, locks=True, registers=True, liveness_seconds=bound,
                   liveness_phase_seconds=phase)  # fmt: skip
    cell = SimCell(seed, whole, narrate=narrate)
    cell.start()
    master = cell.run_until_serving()
    files = [path_of(key) for key in (*REGISTERS, *COUNTERS)]
    files += [LOCK_PATH_FORMAT.format(n) for n in range(LOCK_COUNT)]
    cell.stalling_cacher(tuple(files)).start(master)
    return cell.conclude()


SCENARIOS: dict[str, Scenario] = {
    "random": random_faults,
    "bridge": bridge,
    "lost-ack": lost_acknowledgement,
    "flapping-master": flapping_master,
    "isolated-master": isolated_master,
    "stalling-cacher": stalling_cacher,
}


def _lease_left_ms(cell: SimCell, operator: ScriptClient, master: str) -> int:
    """How long the (only) session's lease has left at `master`, as an operator asks it
    (`ListSessions`): once under the time a KeepAlive is answered before the end, no
    KeepAlive answer can extend it any more."""
    operator.sessions(master)
    cell.wait_for(lambda: operator.listed is not None, seconds=1)
    assert operator.listed is not None
    (session,) = operator.listed
    return session.lease_remaining_ms
