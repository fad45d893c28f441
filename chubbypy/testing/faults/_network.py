"""The fault suite's hosts: Linux network namespaces on a bridge, or loopback addresses.

Test support (the world around real replica processes). `NamespaceNetwork` gives each
replica, and the clients, a host of its own: a network namespace with one veth interface on
a bridge the suite creates, an address of its own, and a firewall of its own (nftables).
Every name it creates starts with a per-run prefix (``cfx<pid>``), so what a crashed run
left behind is recognised and removed by the next (`remove_stale`), and nothing else is
touched. The controller (the process running the suite) stays in the initial namespace, on
the bridge's own address, outside every fault: it reads each replica's admin page whatever
the partitions.

Faults are values (`LinkFaults`): which directed links are cut, which drop a share of their
packets, which are delayed. A cut or a drop is an nftables rule in the *sender's* namespace
(``ip daddr <receiver> drop``; ``numgen random mod 100 < N drop``), so "A cannot send to B"
holds for every packet A sends B, on connections either side opened, and a one-way
partition is one rule. This kernel has no ``tc netem``, so delays come from the suite's own
proxy (`chubbypy.testing.faults._proxy`): in each namespace an nftables NAT rule redirects
every outgoing connection to a peer's or a replica's client port through a proxy in that
namespace, which delays each direction of the bytes by the delay of its directed link.

`LoopbackNetwork` is the fallback where namespaces cannot be made (not root, no ``ip`` or
``nft``): every host is an address 127.0.0.x of this machine; processes are killed, paused,
restarted and their clocks skewed, but links cannot be cut, dropped or delayed.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Final, Protocol

from attrs import field, frozen

__all__ = [
    "PREFIX",
    "PROXY_MARK",
    "PROXY_PORT",
    "Host",
    "LinkFaults",
    "LoopbackNetwork",
    "NamespaceNetwork",
    "Network",
    "namespaces_problem",
    "nft_faults",
    "nft_tables",
    "proxy_delays",
    "remove_stale",
    "write_delays",
]

PREFIX: Final = "cfx"
"""Every namespace and interface the suite makes is named ``cfx<pid of the run>...``."""
PROXY_PORT: Final = 7400
"""Where each namespace's delaying proxy listens (on its own loopback)."""
PROXY_MARK: Final = 0xC0F
"""The firewall mark of the proxy's own outgoing connections, which are not redirected."""
FAULT_TABLE: Final = "chubbyfaults"
PROXY_TABLE: Final = "chubbyproxy"
COMMAND_SECONDS: Final = 120.0
"""How long an ``ip`` or ``nft`` command may take (the kernel can be slow under load)."""
SLOW_SECONDS: Final = 2.0
NETNS_DIRECTORY: Final = "/run/netns"
"""Where ``ip netns add`` puts its namespaces (what ``ip netns exec`` enters)."""


@frozen
class Host:
    """A replica's or the clients' machine, as the suite sees it."""

    name: str
    address: str
    namespace: str | None = None
    """Its network namespace (None: the controller's own, as in the loopback variant)."""


Link = tuple[str, str]
"""A directed link: (sender host, receiver host)."""


@frozen
class LinkFaults:
    """The network's faults at one moment; none by default."""

    cut: frozenset[Link] = frozenset()
    """Links whose every packet is dropped."""
    drop_percent: Mapping[Link, int] = field(factory=dict)
    """Links that drop this share of their packets, at random."""
    delay_ms: Mapping[Link, int] = field(factory=dict)
    """Links whose bytes arrive this much later (through the proxies)."""

    @property
    def healed(self) -> bool:
        return not (self.cut or self.drop_percent or self.delay_ms)


def nft_faults(host: Host, hosts: Sequence[Host], faults: LinkFaults) -> str:
    """The nftables script that gives `host`'s namespace the cuts and drops of `faults`
    (on the links it sends on), replacing the rules it had. It is applied in one
    transaction, so no packet sees half of it; and it changes rules only, never the chain,
    whose hook stays registered: an earlier version deleted and re-made the whole table
    each time, and under load here two such commands once took over a minute each (the
    cause was not established; hook changes wait for the kernel's RCU grace period). A
    command slower than `SLOW_SECONDS` is reported."""
    by_name = {h.name: h for h in hosts}
    rules = []
    for sender, receiver in sorted(faults.cut):
        if sender == host.name:
            rules.append(f"ip daddr {by_name[receiver].address} drop")
    for (sender, receiver), percent in sorted(faults.drop_percent.items()):
        if sender == host.name and (sender, receiver) not in faults.cut:
            address = by_name[receiver].address
            rules.append(f"ip daddr {address} numgen random mod 100 < {percent} drop")
    return f"flush chain inet {FAULT_TABLE} output\n" + "".join(
        f"add rule inet {FAULT_TABLE} output {rule}\n" for rule in rules
    )


def nft_tables(subnet: str, ports: Iterable[int]) -> str:
    """The nftables script that makes a namespace's tables: the faults' chain (empty), and
    the rule that sends its outgoing connections to `ports` in `subnet` through its proxy
    (all but the proxy's own, which carry its mark)."""
    listed = ", ".join(str(port) for port in sorted(set(ports)))
    return (
        f"table inet {FAULT_TABLE} {{\n"
        "\tchain output {\n"
        "\t\ttype filter hook output priority 0; policy accept;\n"
        "\t}\n"
        "}\n"
        f"table inet {PROXY_TABLE} {{\n"
        "\tchain output {\n"
        "\t\ttype nat hook output priority -100; policy accept;\n"
        f"\t\tmeta mark != {PROXY_MARK:#x} ip daddr {subnet} tcp dport {{ {listed} }} "
        f"redirect to :{PROXY_PORT}\n"
        "\t}\n"
        "}\n"
    )


def proxy_delays(host: Host, hosts: Sequence[Host], faults: LinkFaults) -> dict[str, list[int]]:
    """What `host`'s proxy delays, per address of the other end: [milliseconds for the
    bytes `host` sends there, milliseconds for the bytes it receives from there]."""
    delays = {}
    for other in hosts:
        if other.name == host.name:
            continue
        out = faults.delay_ms.get((host.name, other.name), 0)
        back = faults.delay_ms.get((other.name, host.name), 0)
        if out or back:
            delays[other.address] = [out, back]
    return delays


class Network(Protocol):
    """Hosts, a way to run a process on one, and the faults of the links between them."""

    hosts: dict[str, Host]
    links_faulty: bool
    """Whether links can be cut, dropped and delayed (not in the loopback variant)."""

    def wrap(self, host: Host, argv: Sequence[str]) -> list[str]:
        """The command that runs `argv` on `host`."""
        ...

    def apply(self, faults: LinkFaults) -> None: ...

    def close(self) -> None:
        """Remove everything made; processes on the hosts must have ended."""
        ...

    def describe(self) -> str:
        """The hosts, in a line."""
        ...


# ----------------------------------------------------------------------------- namespaces


def namespaces_problem() -> str | None:
    """Why network namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "not root"
    missing = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
    if missing:
        return f"no {' or '.join(missing)} command (Debian: apt-get install iproute2 nftables)"
    return None


def _run(argv: Sequence[str], stdin: str | None = None, check: bool = True) -> str:
    done = subprocess.run(
        list(argv),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=COMMAND_SECONDS,
        check=False,
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _run_of(name: str) -> int | None:
    """The pid of the run that made `name` (``cfx<pid>...``), or None if it is not ours."""
    if not name.startswith(PREFIX):
        return None
    digits = ""
    for character in name[len(PREFIX) :]:
        if not character.isdigit():
            break
        digits += character
    return int(digits) if digits else None


def remove_stale(say: Callable[[str], None]) -> None:
    """Remove the namespaces and bridges of runs that are no longer running (a crashed or
    killed run), first ending the processes left in those namespaces."""
    namespaces = [line.split()[0] for line in _run(["ip", "netns", "list"]).splitlines() if line]
    for namespace in namespaces:
        run = _run_of(namespace)
        if run is None or _alive(run):
            continue
        pids = [int(pid) for pid in _run(["ip", "netns", "pids", namespace], check=False).split()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        _run(["ip", "netns", "delete", namespace], check=False)
        say(
            f"removed namespace {namespace} of run {run}, which is gone "
            f"({len(pids)} processes ended)"
        )
    for line in _run(["ip", "-o", "link", "show", "type", "bridge"]).splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        run = _run_of(name)
        if run is not None and not _alive(run):
            _run(["ip", "link", "delete", name], check=False)
            say(f"removed bridge {name} of run {run}, which is gone")


_NETWORKS = itertools.count(1)
"""Networks made by this process so far (part of each one's names)."""


def _free_subnet(pid: int) -> str:
    """A /24 in 10.0.0.0/8 that no interface here uses, chosen from the run's pid."""
    used = _run(["ip", "-o", "-4", "addr", "show"])
    for attempt in range(256):
        number = (pid + attempt * 7919) % (200 * 250)
        subnet = f"10.{50 + number // 250}.{number % 250}"
        if f" {subnet}." not in used:
            return subnet
    raise RuntimeError("no free 10.x.y.0/24 subnet for the fault suite's bridge")


class NamespaceNetwork:
    """Hosts in network namespaces on a bridge; see the module docstring."""

    links_faulty = True

    def __init__(
        self, names: Sequence[str], ports: Iterable[int], say: Callable[[str], None]
    ) -> None:
        """Make a namespace for each of `names` (the last is the clients'), on a new bridge;
        their outgoing connections to `ports` go through each one's proxy."""
        self._say = say
        pid = os.getpid()
        # One process may make several networks in turn (a pytest worker), and the kernel
        # deletes a gone namespace's veth pair asynchronously: each network its own names.
        self.prefix = f"{PREFIX}{pid}x{next(_NETWORKS)}"
        self.subnet = _free_subnet(pid)
        self.bridge = f"{self.prefix}br"
        self.controller_address = f"{self.subnet}.1"
        self.hosts = {
            name: Host(name, f"{self.subnet}.{11 + i}", f"{self.prefix}-{name}")
            for i, name in enumerate(names)
        }
        self._made: list[list[str]] = []
        """How to undo each thing made, in order (undone in reverse)."""
        try:
            self._make_bridge()
            for i, host in enumerate(self.hosts.values()):
                self._make_host(host, f"{self.prefix}v{i}")
                self._nft(host, nft_tables(f"{self.subnet}.0/24", ports))
        except BaseException:
            self.close()
            raise

    def _make_bridge(self) -> None:
        _run(["ip", "link", "add", self.bridge, "type", "bridge"])
        self._made.append(["ip", "link", "delete", self.bridge])
        _run(["ip", "addr", "add", f"{self.controller_address}/24", "dev", self.bridge])
        _run(["ip", "link", "set", self.bridge, "up"])

    def _make_host(self, host: Host, veth: str) -> None:
        assert host.namespace is not None
        _run(["ip", "netns", "add", host.namespace])
        self._made.append(["ip", "netns", "delete", host.namespace])
        _run(
            [
                "ip",
                "link",
                "add",
                veth,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                host.namespace,
            ]
        )
        _run(["ip", "link", "set", veth, "master", self.bridge, "up"])
        inside = ["ip", "-n", host.namespace]
        _run([*inside, "addr", "add", f"{host.address}/24", "dev", "eth0"])
        _run([*inside, "link", "set", "eth0", "up"])
        _run([*inside, "link", "set", "lo", "up"])

    def _nft(self, host: Host, script: str) -> None:
        started = time.monotonic()
        _run(self.wrap(host, ["nft", "-f", "-"]), stdin=script)
        took = time.monotonic() - started
        if took > SLOW_SECONDS:
            self._say(f"nft in {host.name}'s namespace took {took:.1f} s (the kernel is slow)")

    def wrap(self, host: Host, argv: Sequence[str]) -> list[str]:
        """`argv` in `host`'s network namespace (nsenter: the network only, no other set-up,
        and the process is `argv` itself, so signals reach it)."""
        assert host.namespace is not None
        return ["nsenter", f"--net={NETNS_DIRECTORY}/{host.namespace}", "--", *argv]

    def apply(self, faults: LinkFaults) -> None:
        hosts = list(self.hosts.values())
        for host in hosts:
            self._nft(host, nft_faults(host, hosts, faults))

    def ruleset(self, host: Host) -> str:
        """What `host`'s firewall holds now (for the failure report)."""
        return self.run(host, ["nft", "list", "ruleset"])

    def run(self, host: Host, argv: Sequence[str]) -> str:
        """What `argv` prints on `host` (its errors too: this is for reports)."""
        done = subprocess.run(
            self.wrap(host, argv), capture_output=True, text=True, timeout=COMMAND_SECONDS
        )
        return done.stdout + done.stderr

    def close(self) -> None:
        for undo in reversed(self._made):
            _run(undo, check=False)
        self._made.clear()

    def describe(self) -> str:
        listed = ", ".join(f"{h.name} {h.address}" for h in self.hosts.values())
        return (
            f"network namespaces {self.prefix}-* on bridge {self.bridge} "
            f"({self.controller_address}/24): {listed}"
        )


# ----------------------------------------------------------------------------- loopback


class LoopbackNetwork:
    """Every host an address of this machine's loopback; links are never faulty."""

    links_faulty = False

    def __init__(self, names: Sequence[str]) -> None:
        self.controller_address = "127.0.0.1"
        self.hosts = {name: Host(name, f"127.0.0.{11 + i}") for i, name in enumerate(names)}

    def wrap(self, host: Host, argv: Sequence[str]) -> list[str]:
        return list(argv)

    def apply(self, faults: LinkFaults) -> None:
        assert faults.healed, "the loopback variant has no faulty links"

    def close(self) -> None:
        pass

    def describe(self) -> str:
        listed = ", ".join(f"{h.name} {h.address}" for h in self.hosts.values())
        return f"loopback addresses: {listed}"


def write_delays(path: Path, delays: Mapping[str, list[int]]) -> None:
    """Give a proxy its delays: its control file, replaced whole (a rename), so that it
    never reads half of one."""
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(delays))
    partial.replace(path)
