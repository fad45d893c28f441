"""The nemesis's schedule and faults, against a fake cell and network, on a fake clock."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from chubbypy.testing.faults._nemesis import KINDS, LINK_KINDS, Nemesis, NemesisLog
from chubbypy.testing.faults._network import Host, LinkFaults

REPLICAS = ("r1", "r2", "r3")
CLIENT_HOSTS = ("c1", "c2")


class FakeClock:
    """A clock that only the nemesis's waits move."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> None:
        self.now += seconds


class FakeNetwork:
    def __init__(self, links_faulty: bool = True) -> None:
        self.links_faulty = links_faulty
        self.hosts = {
            name: Host(name, f"10.0.0.{i}") for i, name in enumerate([*REPLICAS, "clients"])
        }
        self.applied: list[LinkFaults] = []

    def wrap(self, host: Host, argv: list[str]) -> list[str]:
        return argv

    def apply(self, faults: LinkFaults) -> None:
        self.applied.append(faults)

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return "fake"


class FakeCell:
    """Records what the nemesis did; r1 is the master unless it is down or paused."""

    client_hosts = CLIENT_HOSTS
    client_processes = ("w0-register", "w1-cached", "w2-lock", "w3-lock")
    clock_drift_max = 0.01
    master_lease_seconds = 0.6

    def __init__(self, replicas: tuple[str, ...] = REPLICAS) -> None:
        self.replicas = replicas
        self.actions: list[tuple[str, ...]] = []
        self.down: set[str] = set()
        self.paused: set[str] = set()
        self.rates = dict.fromkeys(replicas, 1.0)
        self.delays: list[LinkFaults] = []

    def master(self) -> str | None:
        up = [r for r in self.replicas if r not in self.down | self.paused]
        return up[0] if up else None

    def kill(self, replica: str) -> None:
        self.actions.append(("kill", replica))
        self.down.add(replica)

    def stop(self, replica: str) -> None:
        self.actions.append(("stop", replica))
        self.down.add(replica)

    def start(self, replica: str) -> None:
        self.actions.append(("start", replica))
        self.down.discard(replica)

    def pause(self, replica: str) -> None:
        self.actions.append(("pause", replica))
        self.paused.add(replica)

    def resume(self, replica: str) -> None:
        self.actions.append(("resume", replica))
        self.paused.discard(replica)

    def set_clock_rate(self, replica: str, rate: float) -> None:
        self.actions.append(("rate", replica, str(rate)))
        self.rates[replica] = rate

    def set_delays(self, faults: LinkFaults) -> None:
        self.delays.append(faults)

    def pause_client(self, name: str) -> None:
        self.actions.append(("pause-client", name))
        self.paused.add(name)

    def resume_client(self, name: str) -> None:
        self.actions.append(("resume-client", name))
        self.paused.discard(name)


def nemesis(
    tmp_path: Path,
    kinds: tuple[str, ...] = KINDS,
    seed: int = 7,
    cell: FakeCell | None = None,
    network: FakeNetwork | None = None,
) -> tuple[Nemesis, FakeCell, FakeNetwork, FakeClock]:
    cell = cell or FakeCell()
    network = network or FakeNetwork()
    clock = FakeClock()
    log = NemesisLog(tmp_path / f"nemesis-{seed}.log", lambda line: None, 0)
    made = Nemesis(
        seed=seed,
        cell=cell,
        network=network,
        log=log,
        kinds=kinds,
        stop=threading.Event(),
        clock=clock,
        wait=clock.wait,
    )
    return made, cell, network, clock


def test_every_kind_is_injected_once_per_round(tmp_path: Path) -> None:
    """Enough time for one round gives one episode of each kind, in the seed's order."""
    made, _, _, _ = nemesis(tmp_path)
    made.run(seconds=120)
    assert set(made.injected) == set(KINDS)
    assert max(made.injected.values()) - min(made.injected.values()) <= 1


def test_one_seed_gives_one_schedule(tmp_path: Path) -> None:
    """The same seed against the same cell does the same things at the same times."""
    first, first_cell, first_network, _ = nemesis(tmp_path, seed=3)
    second, second_cell, second_network, _ = nemesis(tmp_path, seed=3)
    first.run(seconds=40)
    second.run(seconds=40)
    assert first_cell.actions == second_cell.actions
    assert first_network.applied == second_network.applied
    other, other_cell, _, _ = nemesis(tmp_path, seed=4)
    other.run(seconds=40)
    assert other_cell.actions != first_cell.actions


def test_everything_is_healed_at_the_end(tmp_path: Path) -> None:
    """After the run no link is faulty, no replica down or paused, every clock at rate 1."""
    made, cell, network, _ = nemesis(tmp_path)
    made.run(seconds=200)
    assert network.applied[-1].healed
    assert cell.delays[-1].healed
    assert not cell.down
    assert not cell.paused
    assert set(cell.rates.values()) == {1.0}


def test_a_run_stopped_mid_episode_still_heals(tmp_path: Path) -> None:
    """A stop in the middle of a fault (Ctrl-C) leaves nothing broken."""
    made, cell, _, clock = nemesis(tmp_path, kinds=("pause",))
    stop_after = {"waits": 0}

    def wait(seconds: float) -> None:
        clock.now += seconds
        stop_after["waits"] += 1
        if stop_after["waits"] == 1:
            raise KeyboardInterrupt

    made._sleep = wait
    with pytest.raises(KeyboardInterrupt):
        made.run(seconds=60)
    assert cell.actions[-1][0] == "resume"
    assert not cell.paused


def test_partition_of_the_master_cuts_it_from_everyone(tmp_path: Path) -> None:
    """The master cannot reach, or be reached by, the other replicas and the clients."""
    made, _, network, _ = nemesis(tmp_path, kinds=("partition-master",))
    made.run(seconds=5)
    cut = network.applied[0].cut
    others = {"r2", "r3", *CLIENT_HOSTS}
    assert cut == {("r1", o) for o in others} | {(o, "r1") for o in others}


def test_a_bridge_reaches_both_sides(tmp_path: Path) -> None:
    """In a bridge partition of five, two pairs are cut from each other, and the bridge
    from nobody."""
    cell = FakeCell(("r1", "r2", "r3", "r4", "r5"))
    network = FakeNetwork()
    network.hosts.update({r: Host(r, f"10.0.1.{r[1]}") for r in ("r4", "r5")})
    made, _, _, _ = nemesis(tmp_path, kinds=("partition-bridge",), cell=cell, network=network)
    made.run(seconds=5)
    cut = network.applied[0].cut
    cut_hosts = {a for a, _ in cut}
    (bridge,) = set(cell.replicas) - cut_hosts
    assert len(cut) == 8
    assert all(bridge not in link for link in cut)


@pytest.mark.parametrize(
    ("replicas", "minority"), [(REPLICAS, 1), (("r1", "r2", "r3", "r4", "r5"), 2)]
)
def test_a_minority_is_cut_from_the_majority(
    tmp_path: Path, replicas: tuple[str, ...], minority: int
) -> None:
    """One of three, or two of five, cut off both ways; the clients reach everyone."""
    made, _, network, _ = nemesis(tmp_path, kinds=("partition-majority",), cell=FakeCell(replicas))
    made.run(seconds=5)
    cut = network.applied[0].cut
    assert all(host not in link for link in cut for host in CLIENT_HOSTS)
    reach = {r: {r} | {b for b in replicas if (r, b) not in cut} for r in replicas}
    sides = {frozenset(side) for side in reach.values()}
    assert sorted(len(side) for side in sides) == [minority, len(replicas) - minority]
    assert all((b, a) in cut for a, b in cut)


def test_skew_slows_the_master_and_speeds_the_rest_within_the_bound(tmp_path: Path) -> None:
    """The master at 1 - e, the others at 1 + e; then the master cut off; then all at 1."""
    made, cell, network, _ = nemesis(tmp_path, kinds=("skew",))
    made.run(seconds=8)
    rates = [a for a in cell.actions if a[0] == "rate"]
    assert rates[:3] == [("rate", "r1", "0.99"), ("rate", "r2", "1.01"), ("rate", "r3", "1.01")]
    assert {a[2] for a in rates[3:6]} == {"1.0"}
    assert any(("r1", "c1") in f.cut for f in network.applied)


def test_without_namespaces_skew_pauses_the_master_instead(tmp_path: Path) -> None:
    """The loopback variant cannot cut links: skew pauses the master in its second half."""
    made, cell, network, _ = nemesis(tmp_path, kinds=("skew",), network=FakeNetwork(False))
    made.run(seconds=8)
    assert ("pause", "r1") in cell.actions
    assert network.applied == []


def test_link_faults_need_namespaces(tmp_path: Path) -> None:
    """A nemesis over loopback refuses kinds that cut, drop or delay links."""
    for kind in LINK_KINDS:
        with pytest.raises(AssertionError):
            nemesis(tmp_path, kinds=(kind,), network=FakeNetwork(False))


def test_delays_go_to_the_proxies_and_drops_to_the_firewall(tmp_path: Path) -> None:
    """A delay episode delays every link of one replica; a drop episode drops on all."""
    made, cell, network, _ = nemesis(tmp_path, kinds=("delay", "drop"))
    made.run(seconds=12)
    delayed = next(f for f in cell.delays if f.delay_ms)
    (target,) = set.intersection(*(set(link) for link in delayed.delay_ms))
    assert target in REPLICAS
    assert len(delayed.delay_ms) == 8  # to and from each of the four other hosts
    assert all(50 <= ms <= 300 for ms in delayed.delay_ms.values())
    dropped = next(f for f in network.applied if f.drop_percent)
    assert len(dropped.drop_percent) == 18  # replicas among themselves, and with clients
    assert all(20 <= p <= 40 for p in dropped.drop_percent.values())


def test_a_clients_host_is_cut_from_every_replica(tmp_path: Path) -> None:
    """One clients' host loses every replica, both ways; the other keeps them all."""
    made, _, network, _ = nemesis(tmp_path, kinds=("partition-clients",))
    made.run(seconds=6)
    cut = network.applied[0].cut
    (host,) = {h for link in cut for h in link} & set(CLIENT_HOSTS)
    assert cut == {(host, r) for r in REPLICAS} | {(r, host) for r in REPLICAS}


def test_a_paused_client_is_continued(tmp_path: Path) -> None:
    """A client process is stopped for longer than a session lease, then continued; lock
    holders are chosen most often."""
    chosen = []
    for seed in range(30):
        made, cell, _, _ = nemesis(tmp_path, kinds=("pause-client",), seed=seed)
        made.run(seconds=5)
        name = cell.actions[0][1]
        assert cell.actions[:2] == [("pause-client", name), ("resume-client", name)]
        chosen.append(name.endswith("-lock"))
    assert sum(chosen) > len(chosen) / 2
