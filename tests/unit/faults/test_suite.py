"""The fault run's choice of hosts: namespaces when it can, else loopback, saying so."""

from __future__ import annotations

from pathlib import Path

import pytest

from chubbypy.testing.faults import _network
from chubbypy.testing.faults._network import LoopbackNetwork, namespaces_problem
from chubbypy.testing.faults._suite import Settings, _open_network


def test_the_loopback_variant_says_so_in_one_line(tmp_path: Path) -> None:
    """Asked for loopback, the run makes no namespace and says what it leaves out."""
    said: list[str] = []
    network = _open_network(
        Settings(seconds=1, seed=1, directory=tmp_path, loopback=True), ["r1", "c1"], said.append
    )
    assert isinstance(network, LoopbackNetwork)
    assert not network.links_faulty
    assert [h.address for h in network.hosts.values()] == ["127.0.0.11", "127.0.0.12"]
    assert said == [
        "network namespaces unavailable (asked for (--loopback)): running the loopback variant "
        "(kills, pauses, restarts, client pauses and clock skew; no partitions, drops or delays)"
    ]


def test_namespaces_need_root_and_the_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not root, or without ip or nft, there are no namespaces, and the reason is given."""
    monkeypatch.setattr(_network.os, "geteuid", lambda: 1000)
    assert namespaces_problem() == "not root"
    monkeypatch.setattr(_network.os, "geteuid", lambda: 0)
    monkeypatch.setattr(_network.shutil, "which", lambda tool: None if tool == "nft" else "/x")
    assert namespaces_problem() == "no nft command (Debian: apt-get install iproute2 nftables)"
