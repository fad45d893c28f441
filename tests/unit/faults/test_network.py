"""The fault suite's firewall scripts and proxy delays, as text and values (no kernel)."""

from __future__ import annotations

from chubbypy.testing.faults._network import (
    PREFIX,
    PROXY_MARK,
    PROXY_PORT,
    Host,
    LinkFaults,
    _run_of,
    nft_faults,
    nft_tables,
    proxy_delays,
)

HOSTS = [
    Host("r1", "10.9.9.11", "n1"),
    Host("r2", "10.9.9.12", "n2"),
    Host("clients", "10.9.9.14", "n3"),
]


def test_no_faults_flush_the_rules_and_add_none() -> None:
    """A healed network is an empty chain: one flush, no rule."""
    assert nft_faults(HOSTS[0], HOSTS, LinkFaults()) == "flush chain inet chubbyfaults output\n"


def test_a_cut_is_a_drop_in_the_senders_namespace_only() -> None:
    """r1 -> r2 cut: r1 drops what it sends r2; r2's rules are empty (one way)."""
    faults = LinkFaults(cut=frozenset({("r1", "r2")}))
    assert "add rule inet chubbyfaults output ip daddr 10.9.9.12 drop\n" in nft_faults(
        HOSTS[0], HOSTS, faults
    )
    assert "add rule" not in nft_faults(HOSTS[1], HOSTS, faults)


def test_drops_are_random_shares_and_a_cut_link_is_only_cut() -> None:
    """A drop share is `numgen random mod 100 < N`; on a cut link the cut is enough."""
    faults = LinkFaults(
        cut=frozenset({("r1", "r2")}),
        drop_percent={("r1", "r2"): 30, ("r1", "clients"): 25},
    )
    script = nft_faults(HOSTS[0], HOSTS, faults)
    assert script.count("add rule") == 2
    assert "ip daddr 10.9.9.14 numgen random mod 100 < 25 drop" in script


def test_the_tables_redirect_to_the_proxy_all_but_its_own_connections() -> None:
    """The NAT rule sends peer and client ports of the subnet to the proxy, except marked
    connections (the proxy's own)."""
    script = nft_tables("10.9.9.0/24", [7200, 7100, 7100])
    assert f"meta mark != {PROXY_MARK:#x} ip daddr 10.9.9.0/24 tcp dport {{ 7100, 7200 }}" in script
    assert f"redirect to :{PROXY_PORT}" in script
    assert "type filter hook output priority 0" in script


def test_each_proxy_delays_both_directions_of_its_links() -> None:
    """r1's proxy delays what r1 sends r2 by r1->r2's delay and what comes back by r2->r1's."""
    faults = LinkFaults(delay_ms={("r1", "r2"): 100, ("r2", "r1"): 40, ("clients", "r2"): 7})
    assert proxy_delays(HOSTS[0], HOSTS, faults) == {"10.9.9.12": [100, 40]}
    assert proxy_delays(HOSTS[1], HOSTS, faults) == {"10.9.9.11": [40, 100], "10.9.9.14": [0, 7]}
    assert proxy_delays(HOSTS[2], HOSTS, LinkFaults()) == {}


def test_names_are_recognised_by_their_runs_pid_only() -> None:
    """Stale clean-up touches only names the suite makes: the prefix, then a pid."""
    assert _run_of(f"{PREFIX}123-r1") == 123
    assert _run_of(f"{PREFIX}45br") == 45
    assert _run_of(f"{PREFIX}-r1") is None
    assert _run_of("docker0") is None
