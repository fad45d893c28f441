"""The web page's pure helpers: JSON depth, Host checks, login attempt buckets, contents
pages, hex dumps, Prometheus parsing and the cell page's chart arithmetic."""

from __future__ import annotations

import math

import pytest

from chubbypy.web._api import checksum_summary
from chubbypy.web._cellstatus import CellHistory, ReplicaSample, Round, parse_metrics, quantile
from chubbypy.web._http import HostCheck, json_depth
from chubbypy.web._logins import AttemptLimiter
from chubbypy.web._reads import contents_page, hex_lines, pretty_json


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        (b"{}", 1),
        (b'{"a": [1, {"b": []}]}', 4),
        (b'{"a": "[[[[{{{{"}', 1),
        (b'{"a": "\\"[[["}', 1),
        (b"[" * 5000, 5000),
        (b"12", 0),
    ],
)
def test_json_depth_counts_brackets_outside_strings(text: bytes, depth: int) -> None:
    """Nesting is measured without parsing, brackets inside strings (escaped quotes too) aside."""
    assert json_depth(text) == depth


def test_host_check_admits_the_listening_address_and_loopback_names() -> None:
    """The port must match; configured names join the loopback ones; anything else is refused."""
    check = HostCheck("127.0.0.1", 7400, ["chubby.example.com"], tls=False)
    for host in (b"127.0.0.1:7400", b"localhost:7400", b"[::1]:7400", b"Chubby.Example.com:7400"):
        assert check.admits(host), host
    for host in (b"evil.example:7400", b"127.0.0.1:7401", b"127.0.0.1", b"", None, b"\xff:7400"):
        assert not check.admits(host), host


def test_host_check_on_the_default_port_admits_names_without_it() -> None:
    """On port 443 with TLS a Host without a port is the same place."""
    check = HostCheck("0.0.0.0", 443, [], tls=True)
    assert check.admits(b"localhost")
    assert check.admits(b"localhost:443")
    assert not check.admits(b"0.0.0.0:443")


def test_attempt_limiter_refills_over_its_window() -> None:
    """Three attempts per 60 s: the fourth is refused, and one more is allowed 20 s later."""
    limiter = AttemptLimiter(3, 60.0)
    assert [limiter.take("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.take("b", 0.0)  # another address has its own bucket
    assert not limiter.take("a", 19.0)
    assert limiter.take("a", 40.0)


def test_attempt_limiter_table_stays_bounded() -> None:
    """A flood of addresses cannot grow the table without bound."""
    limiter = AttemptLimiter(1, 60.0)
    for number in range(25_000):
        limiter.take(f"10.0.{number // 256}.{number % 256}", 0.0)
    assert len(limiter._buckets) <= 10_000


def test_contents_page_ends_on_a_character_boundary() -> None:
    """A page of UTF-8 text never splits a character; the next page starts where it ended."""
    text = ("é" * 10).encode()  # two bytes each
    first = contents_page(text, 0, 5)
    assert first.data == "éé".encode()
    assert (first.end, first.size, first.more, first.is_text) == (4, 20, True, True)
    second = contents_page(text, first.end, 5)
    assert second.offset == 4
    assert second.data.decode() == "éé"
    assert not contents_page(text, 18, 5).more


def test_contents_page_of_bytes_is_cut_anywhere() -> None:
    """Contents that are not UTF-8 are paged by bytes."""
    page = contents_page(b"\xff\xfe\x80\x80\x80", 1, 3)
    assert (page.data, page.is_text, page.more) == (b"\xfe\x80\x80", False, True)


def test_hex_lines_show_offsets_bytes_and_ascii() -> None:
    """Sixteen bytes a line, offsets from where the page starts, dots for unprintables."""
    lines = hex_lines(b"AB\x00" * 6, 32)
    assert lines[0] == (
        "00000020",
        "41 42 00 41 42 00 41 42 00 41 42 00 41 42 00 41",
        "AB.AB.AB.AB.AB.A",
    )
    assert lines[1] == ("00000030", "42 00", "B.")


def test_pretty_json_or_none() -> None:
    """JSON is indented; anything else (or nesting too deep for the parser) is None."""
    assert pretty_json(b'{"a":[1,2]}') == '{\n  "a": [\n    1,\n    2\n  ]\n}'
    assert pretty_json(b"not json") is None
    assert pretty_json(b"[" * 100_000 + b"]" * 100_000) is None


METRICS = """# HELP chubbypy_client_operations_total Client operations done.
# TYPE chubbypy_client_operations_total counter
chubbypy_client_operations_total{op="read"} {reads}
chubbypy_client_operations_total{op="write"} {writes}
chubbypy_sessions {sessions}
chubbypy_fsync_seconds_bucket{le="0.001"} {fast}
chubbypy_fsync_seconds_bucket{le="0.01"} {slow}
chubbypy_fsync_seconds_bucket{le="+Inf"} {slow}
chubbypy_client_write_seconds_bucket{le="0.005"} {fast}
chubbypy_client_write_seconds_bucket{le="0.02"} {slow}
chubbypy_client_write_seconds_bucket{le="+Inf"} {slow}
chubbypy_client_read_seconds_bucket{le="0.0005"} {reads}
chubbypy_client_read_seconds_bucket{le="+Inf"} {reads}
chubbypy_checksum_comparisons_total {compared}
"""


def sample(
    reads: int, writes: int, sessions: int, fast: int, slow: int, compared: int = 0
) -> ReplicaSample:
    text = METRICS
    for key, value in dict(
        reads=reads, writes=writes, sessions=sessions, fast=fast, slow=slow, compared=compared
    ).items():
        text = text.replace("{" + key + "}", str(value))
    return ReplicaSample({"serving": sessions > 0, "epoch": 4}, parse_metrics(text))


def test_parse_metrics_reads_labels_and_values() -> None:
    """Samples are keyed by name and sorted labels; comments are skipped."""
    metrics = parse_metrics('a_total{x="1",b="q\\"uote"} 3\nb 2.5\n# c 1\nbroken line here\n')
    assert metrics == {"a_total": {(("b", 'q\\"uote'), ("x", "1")): 3.0}, "b": {(): 2.5}}


def test_quantile_picks_the_bucket_bound() -> None:
    """The 99th percentile is the bound of the bucket where 99% of the count is reached."""
    assert quantile({0.001: 98.0, 0.01: 100.0, math.inf: 100.0}, 0.99) == 0.01
    assert quantile({0.001: 100.0, 0.01: 100.0, math.inf: 100.0}, 0.99) == 0.001
    assert quantile({0.001: 0.0, math.inf: 0.0}, 0.99) is None


def test_history_draws_rates_latency_and_sessions() -> None:
    """Rates are increases per second over all replicas, p99s from the buckets filled in
    the interval; a restarted counter counts from zero."""
    history = CellHistory(["r1", "r2"], points_max=10)
    idle = ReplicaSample({"serving": False}, parse_metrics("chubbypy_sessions 0\n"))
    history.add(Round(10.0, {"r1": sample(100, 10, 3, 50, 50), "r2": idle}))
    history.add(Round(12.0, {"r1": sample(140, 30, 4, 50, 60), "r2": idle}))
    history.add(Round(14.0, {"r1": sample(8, 2, 4, 51, 61), "r2": idle}))  # restarted
    first, second = history.points()
    assert (first.reads_per_second, first.writes_per_second, first.sessions) == (20.0, 10.0, 4.0)
    assert first.fsync_p99_ms == 10.0  # all ten new fsyncs were in the 0.001-0.01 bucket
    assert first.write_p99_ms == 20.0  # and the ten new writes in the 0.005-0.02 one
    assert first.read_p99_ms == 0.5
    assert (second.reads_per_second, second.writes_per_second) == (4.0, 1.0)


def compared(index: int, matched: bool = True) -> str:
    return (
        f'chubbypy_checksum_last_compared_index{{peer="r2"}} {index}\n'
        f'chubbypy_checksum_last_matched{{peer="r2"}} {int(matched)}\n'
    )


def test_history_reports_a_new_master_and_when_checksums_were_compared() -> None:
    """A change of serving replica is reported once; the master's comparison of a
    follower's checksum at a later index is timed for both (one it had already when the
    page first looked is not)."""
    history = CellHistory(["r1", "r2"], points_max=3)
    master = {"serving": True, "epoch": 4}
    r1 = ReplicaSample(master, parse_metrics(compared(10)))
    follower = ReplicaSample({"serving": False, "epoch": 4}, parse_metrics(""))
    assert history.add(Round(1.0, {"r1": r1, "r2": follower})) is None
    assert history.compared_at("r2") is None
    r1_again = ReplicaSample(master, parse_metrics(compared(20)))
    assert history.add(Round(2.0, {"r1": r1_again, "r2": follower})) is None
    assert (history.compared_at("r1"), history.compared_at("r2")) == (2.0, 2.0)
    assert history.last_compared(history.latest, "r1") == {"r2": (20, True)}
    r2 = ReplicaSample({"serving": True, "epoch": 5}, parse_metrics(""))
    down = ReplicaSample(None, None, "no answer")
    assert history.add(Round(3.0, {"r1": down, "r2": r2})) == ("r2", 5)
    assert history.add(Round(4.0, {"r1": down, "r2": r2})) is None
    assert len(history.points()) == 3  # at most points_max, the oldest dropped


def test_the_checksum_line_says_what_the_master_compared() -> None:
    """The master's line counts its comparisons; a follower's gives the master's last
    comparison of it; a difference or a divergence in /status is bad news."""
    metrics = parse_metrics(
        "chubbypy_checksum_comparisons_total 12\nchubbypy_checksum_mismatches_total 0\n"
    )
    assert checksum_summary("r1", "r1", {"r2": (20, True)}, metrics, {}, 1.5) == (
        "master: compared 12 follower checksums, 1.5 s ago",
        False,
    )
    assert checksum_summary("r2", "r1", {"r2": (20, True)}, None, {}, 1.5) == (
        "matched the master's at index 20, 1.5 s ago",
        False,
    )
    assert checksum_summary("r2", "r1", {"r2": (1_020, False)}, None, {}, None) == (
        "DIFFERED from the master's at index 1,020",
        True,
    )
    assert checksum_summary("r3", "r1", {}, None, {"divergence": "at index 5 ..."}, None) == (
        "not compared by this master yet; DIVERGED (see its /status)",
        True,
    )
    assert checksum_summary("r3", None, {}, None, None, None) == ("no master compares now", False)
