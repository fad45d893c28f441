"""`chubbypy.config`: the etc/ files load, and every mistake is reported by its key path."""

from __future__ import annotations

import copy
import itertools
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from attrs import fields

from chubbypy.config import (
    AuthConfig,
    CellConfig,
    ConfigError,
    LimitsConfig,
    PaxosConfig,
    SessionsConfig,
    SupervisorConfig,
    load_config,
    parse_config,
)
from chubbypy.node import ClientLimits
from chubbypy.paxos import Limits, Timing

ETC = Path(__file__).resolve().parents[2] / "etc"

BASE: dict[str, Any] = {
    "cell": "test",
    "replicas": [
        {
            "id": f"r{n}",
            "peer": f"tcp:710{n}:interface=127.0.0.1",
            "client": f"tcp:720{n}:interface=127.0.0.1",
            "admin": f"tcp:730{n}:interface=127.0.0.1",
        }
        for n in (1, 2, 3)
    ],
    "data_dir": "/srv/chubby",
}


OLD_TIMING = {"tick_seconds": 0.05, "heartbeat_seconds": 0.25, "retry_seconds": 0.25}
"""Settings the lease tests below were worked out for (the defaults until the lease shrank)."""


def config(**changes: Any) -> dict[str, Any]:
    """A valid minimal cell with top-level `changes`; a value of ... removes the key."""
    mapping = copy.deepcopy(BASE)
    for key, value in changes.items():
        if value is ...:
            del mapping[key]
        else:
            mapping[key] = value
    return mapping


def problems(mapping: object) -> list[str]:
    """The lines of the ConfigError that `mapping` must raise."""
    with pytest.raises(ConfigError) as raised:
        parse_config(mapping)
    assert str(raised.value).splitlines() == list(raised.value.problems)
    return list(raised.value.problems)


def only_problem(mapping: object) -> str:
    """The single problem that `mapping` must raise."""
    found = problems(mapping)
    assert len(found) == 1, found
    return found[0]


# --- The files under etc/ --------------------------------------------------------------------


def test_cell_yaml_loads() -> None:
    """etc/cell.yaml is a 3-replica loopback cell with the documented timing and limits."""
    cell = load_config(ETC / "cell.yaml")
    assert cell.cell == "local"
    assert cell.replica_ids == ("r1", "r2", "r3")
    assert [r.peer for r in cell.replicas] == [f"tcp:710{n}:interface=127.0.0.1" for n in (1, 2, 3)]
    assert cell.replica("r3").admin == "tcp:7303:interface=127.0.0.1"
    assert cell.storage_url is None
    assert cell.source == ETC / "cell.yaml"
    assert cell.paxos.timing() == Timing(
        lease_ticks=24,
        master_lease_ticks=22,
        heartbeat_ticks=4,
        election_jitter_ticks=6,
        retry_ticks=6,
    )
    assert cell.paxos.limits() == Limits(
        batch_entries_max=64,
        batch_bytes_max=1 << 20,
        proposals_inflight_max=32,
        proposals_queued_max=10_000,
        catchup_entries_max=256,
        log_retain_entries=1_000,
    )
    assert cell.limits == LimitsConfig(file_bytes_max=256 * 1024, frame_bytes_max=1 << 20)
    assert cell.paxos.checksum_every_ticks() == 2400


def test_cell_yaml_states_the_defaults() -> None:
    """The values in etc/cell.yaml are the defaults a missing key takes."""
    cell = load_config(ETC / "cell.yaml")
    assert cell.paxos == PaxosConfig()
    assert cell.limits == LimitsConfig()
    assert cell.sessions == SessionsConfig()
    assert cell.supervisor == SupervisorConfig()


def test_cell5_yaml_loads() -> None:
    """etc/cell5.yaml is the same cell with five replicas on ports 7101-7105, 7201-..., 7301-..."""
    cell = load_config(ETC / "cell5.yaml")
    assert cell.replica_ids == ("r1", "r2", "r3", "r4", "r5")
    for n, replica in enumerate(cell.replicas, start=1):
        assert (replica.peer, replica.client, replica.admin) == tuple(
            f"tcp:7{role}0{n}:interface=127.0.0.1" for role in (1, 2, 3)
        )
    assert cell.paxos == load_config(ETC / "cell.yaml").paxos
    assert cell.data_dir.name == "cell5"


@pytest.mark.parametrize("name", ["cell.yaml", "cell5.yaml"])
def test_etc_files_comment_every_key(name: str) -> None:
    """Every key in the example files carries a comment, and every paxos/limits key appears."""
    text = (ETC / name).read_text()
    for line in text.splitlines():
        if re.match(r"\s*(- )?[a-z_]+:", line):
            assert "#" in line, line
    document = yaml.safe_load(text)
    assert set(document["paxos"]) == {a.name for a in fields(PaxosConfig)}
    assert set(document["limits"]) == {a.name for a in fields(LimitsConfig)}
    assert set(document["supervisor"]) == {a.name for a in fields(SupervisorConfig)}


# --- Defaults, paths and URLs ----------------------------------------------------------------


def test_missing_sections_take_defaults() -> None:
    """Without paxos: and limits: sections (or with empty ones) every value is the default."""
    assert parse_config(config()).paxos == PaxosConfig()
    cell = parse_config(config(paxos=None, limits={}))
    assert (cell.paxos, cell.limits) == (PaxosConfig(), LimitsConfig())


def test_integers_are_accepted_as_seconds() -> None:
    """An integer where seconds are expected is read as a float."""
    cell = parse_config(config(paxos={"master_lease_seconds": 3, "checksum_every_seconds": 60}))
    assert cell.paxos.master_lease_seconds == 3.0
    assert isinstance(cell.paxos.master_lease_seconds, float)


def test_relative_data_dir_is_resolved_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative data_dir is made absolute from the working directory at load time."""
    monkeypatch.chdir(tmp_path)
    cell = parse_config(config(data_dir="var/cell"))
    assert cell.data_dir == tmp_path / "var" / "cell"
    assert cell.data_dir_for("r2") == tmp_path / "var" / "cell" / "r2"


def test_storage_url_defaults_to_a_sqlite_file_per_replica() -> None:
    """With storage_url null each replica gets <data_dir>/<id>/replica.sqlite."""
    cell = parse_config(config(data_dir="/srv/chubby"))
    assert cell.storage_url_for("r2") == "sqlite:////srv/chubby/r2/replica.sqlite"


def test_storage_url_default_escapes_awkward_paths() -> None:
    """A data_dir with '?' or '#' still names the right SQLite file."""
    from sqlalchemy.engine import make_url

    cell = parse_config(config(data_dir="/srv/odd?dir#1"))
    assert make_url(cell.storage_url_for("r1")).database == "/srv/odd?dir#1/r1/replica.sqlite"


def test_storage_url_template_substitutes_the_replica() -> None:
    """A storage_url template has {replica} replaced by the replica id."""
    cell = parse_config(config(storage_url="postgresql://chubby@db/chubby_{replica}"))
    assert cell.storage_url_for("r3") == "postgresql://chubby@db/chubby_r3"


def test_unknown_replica_lists_the_known_ones() -> None:
    """Asking for a replica the cell does not have names the ids it does have."""
    cell = load_config(ETC / "cell.yaml")
    with pytest.raises(ConfigError, match=r"cell\.yaml: replicas: no replica 'r9' .*r1, r2, r3"):
        cell.storage_url_for("r9")


# --- Keys: unknown, missing, wrong type ------------------------------------------------------


def test_typo_suggests_the_closest_key() -> None:
    """An unknown key that resembles a known one gets a did-you-mean."""
    assert only_problem(config(paxos={"heartbeat_secs": 0.25})) == (
        "paxos.heartbeat_secs: unknown key: did you mean 'heartbeat_seconds'?"
    )
    assert only_problem(config(data_dri="x")) == "data_dri: unknown key: did you mean 'data_dir'?"


def test_unknown_key_without_resemblance_lists_the_known_keys() -> None:
    """An unknown key like no known one lists every key the section allows."""
    message = only_problem(config(limits={"colour": "blue"}))
    assert message == (
        "limits.colour: unknown key: expected one of file_bytes_max, frame_bytes_max, "
        "peer_message_bytes_max, registrations_per_connection_max, "
        "registrations_per_principal_max, sessions_per_connection_max, "
        "sessions_per_principal_max, client_connections_max, hello_timeout_seconds, "
        "hello_frame_bytes_max, "
        "peer_handshakes_max, peer_handshakes_per_address_max, admin_connections_max, "
        "admin_idle_timeout_seconds, admin_connections_per_address_max, "
        "admin_request_head_seconds, admin_request_head_bytes_max, http_request_bytes_max, "
        "frame_timeout_seconds, idle_timeout_seconds, requests_pending_per_connection_max, "
        "reply_bytes_buffered_max, reply_bytes_buffered_total_max, "
        "client_requests_per_turn, client_bytes_per_turn, request_arrays_max, "
        "client_reads_per_turn, auth_failures_per_connection_max, "
        "auth_failures_per_address_max, auth_failures_window_seconds, "
        "calls_waiting_per_session_max, handles_per_session_max, "
        "cached_names_per_session_max, log_lines_per_minute, "
        "nodes_per_principal_max, "
        "bytes_per_principal_max, snapshot_chunk_bytes, snapshot_held_seconds"
    )


def test_missing_required_keys() -> None:
    """A missing cell, data_dir or replica field is named by its path."""
    mapping = config(cell=..., data_dir=...)
    del mapping["replicas"][1]["admin"]
    assert problems(mapping) == [
        "cell: is missing: this key is required",
        "data_dir: is missing: this key is required",
        "replicas[1].admin: is missing: this key is required",
    ]


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("paxos", "batch_entries_max", True, "expected an integer, got boolean true"),
        ("paxos", "batch_entries_max", 64.0, "expected an integer, got number 64"),
        ("paxos", "clients_max", "many", "expected an integer, got string 'many'"),
        ("paxos", "tick_seconds", False, "expected a number, got boolean false"),
        ("paxos", "tick_seconds", None, "expected a number, got null"),
        ("paxos", "tick_seconds", float("inf"), "expected a finite number, got number inf"),
        ("limits", "frame_bytes_max", [1], "expected an integer, got a list"),
    ],
)
def test_wrong_types_are_named(section: str, key: str, value: object, expected: str) -> None:
    """A value of the wrong type is reported with its path, its YAML type and what is wanted."""
    assert only_problem(config(**{section: {key: value}})) == f"{section}.{key}: {expected}"


def test_numbers_written_as_strings_get_a_hint() -> None:
    """YAML 1.1's 1e6-is-a-string trap and numbers with units get an explanation."""
    assert "write 1000000 or 1.0e+6" in only_problem(config(paxos={"batch_bytes_max": "1e6"}))
    assert "the unit is in the key's name" in only_problem(config(paxos={"tick_seconds": "50 ms"}))


def test_sections_must_be_mappings() -> None:
    """A section or replica that is not a mapping is named; so is a non-mapping document."""
    assert only_problem(config(paxos=[1, 2])) == "paxos: expected a mapping of keys, got a list"
    mapping = config()
    mapping["replicas"][0] = "r1"
    assert only_problem(mapping) == "replicas[0]: expected a mapping of keys, got string 'r1'"
    assert only_problem(["cell"]) == "expected a mapping of keys, got a list"
    assert only_problem(None).startswith("the file is empty")


# --- Ranges and relations --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("tick_seconds", 0, "0 is not a duration: expected a number of seconds above 0"),
        ("heartbeat_seconds", -1, "-1 is not a duration"),
        ("retry_seconds", 0.0, "0 is not a duration"),
        ("checksum_every_seconds", -60, "-60 is not a duration"),
        ("clock_drift_max", 0.5, "0.5 is out of range: expected a fraction at least 0 and below"),
        ("clock_drift_max", -0.01, "-0.01 is out of range"),
        ("batch_entries_max", 0, "0 is out of range: expected 1 to 65536"),
        ("batch_entries_max", 65537, "65537 is out of range: expected 1 to 65536"),
        ("catchup_entries_max", 65537, "65537 is out of range: expected 1 to 65536"),
        ("batch_bytes_max", 0, "0 is too small: expected at least 1"),
        ("proposals_inflight_max", 0, "0 is too small: expected at least 1"),
        ("log_retain_entries", -1, "-1 is too small: expected at least 0"),
        ("snapshot_every_entries", 0, "0 is too small: expected at least 1"),
        ("clients_max", 0, "0 is too small: expected at least 1"),
        ("client_results_max", 0, "0 is too small: expected at least 1"),
    ],
)
def test_out_of_range_paxos_values(key: str, value: float, expected: str) -> None:
    """A paxos value outside its range is reported once, by its path."""
    assert only_problem(config(paxos={key: value})).startswith(f"paxos.{key}: {expected}")


def test_a_page_of_full_batches_must_be_one_a_peer_takes() -> None:
    """catchup_entries_max times batch_entries_max above the commands a replica takes in one
    peer message is refused (a page of full batches would be refused by every peer)."""
    paxos = {"catchup_entries_max": 2048, "batch_entries_max": 1024}
    assert only_problem(config(paxos=paxos)).startswith(
        "paxos.catchup_entries_max: 2048 entries of up to paxos.batch_entries_max (1024) "
        "commands make pages of 2.09715e+06 commands: a replica takes at most 1048576"
    )
    assert (
        parse_config(config(paxos={**paxos, "catchup_entries_max": 1024})).paxos.batch_entries_max
        == 1024
    )


def test_answers_kept_cover_what_a_client_may_leave_unanswered() -> None:
    """sessions.answers_kept_max below CALLS_UNACKED_MAX is refused: a retry's answer could
    be dropped while its client may still send it."""
    assert only_problem(config(sessions={"answers_kept_max": 63})).startswith(
        "sessions.answers_kept_max: 63 is too small: expected at least 64"
    )


def test_lock_info_listed_max_is_checked_and_reaches_the_master() -> None:
    """sessions.lock_info_listed_max defaults to 100, reaches the master's timing, and is
    refused outside 1 to LOCK_INFO_LISTED_MAX (what one answer may carry on the wire)."""
    assert SessionsConfig().lock_info_listed_max == 100
    cell = parse_config(config(sessions={"lock_info_listed_max": 7}))
    assert cell.node_settings("r1").master_timing.lock_info_listed_max == 7
    assert only_problem(config(sessions={"lock_info_listed_max": 0})).startswith(
        "sessions.lock_info_listed_max: 0 is out of range: expected 1 to 1000"
    )
    assert only_problem(config(sessions={"lock_info_listed_max": 1001})).startswith(
        "sessions.lock_info_listed_max: 1001 is out of range: expected 1 to 1000"
    )


def test_frame_limit_fits_the_length_prefix() -> None:
    """frame_bytes_max must be stateable in the 4-byte frame length prefix."""
    assert only_problem(config(limits={"frame_bytes_max": 1 << 32})) == (
        "limits.frame_bytes_max: 4.29497e+09 is out of range: expected 1 to 4294967295 "
        "(a 4-byte length prefix)"
    )


def test_client_limits_reach_the_node_with_their_keys() -> None:
    """The limits on what a connection or principal holds are read from limits:, default
    to the node's own defaults, reach NodeSettings, and their node-side names are keys."""
    assert parse_config(config()).node_settings("r1").client_limits == ClientLimits()
    document = config(
        limits={"registrations_per_connection_max": 3, "sessions_per_principal_max": 5000}
    )
    limits = parse_config(document).node_settings("r1").client_limits
    assert (limits.registrations_per_connection_max, limits.sessions_per_principal_max) == (3, 5000)
    keys = {a.name for a in fields(LimitsConfig)}
    assert {limits.key(a.name).removeprefix("limits.") for a in fields(ClientLimits)} <= keys


@pytest.mark.parametrize(
    "key",
    [
        "registrations_per_connection_max",
        "registrations_per_principal_max",
        "sessions_per_connection_max",
        "sessions_per_principal_max",
    ],
)
def test_client_limits_are_at_least_one(key: str) -> None:
    """A limit of 0 would refuse every client: refused, by its key."""
    assert only_problem(config(limits={key: 0})).startswith(
        f"limits.{key}: 0 is too small: expected at least 1"
    )


def test_a_connection_limit_above_its_principals_is_refused() -> None:
    """A per-connection limit that the per-principal one makes unreachable is a mistake."""
    document = config(limits={"sessions_per_connection_max": 50, "sessions_per_principal_max": 10})
    assert only_problem(document) == (
        "limits.sessions_per_connection_max: 50 is above limits.sessions_per_principal_max "
        "(10): one connection can never hold more than its principal may"
    )


def test_a_principals_registrations_must_stay_below_the_client_table() -> None:
    """registrations_per_principal_max at or above paxos.clients_max is refused: one
    principal could then evict every other principal's clients."""
    document = config(paxos={"clients_max": 1000}, limits={"registrations_per_principal_max": 1000})
    assert only_problem(document) == (
        "limits.registrations_per_principal_max: 1000 is not below paxos.clients_max (1000): "
        "one principal's registrations could evict every other principal's clients"
    )
    assert parse_config(config()).paxos.clients_max == 50_000


def test_lease_must_be_four_ticks() -> None:
    """A master lease under four ticks is refused, naming the shortest allowed."""
    assert only_problem(config(paxos={**OLD_TIMING, "master_lease_seconds": 0.15})) == (
        "paxos.master_lease_seconds: 0.15 is too short: it must be at least 4 ticks "
        "(0.2 s with tick_seconds 0.05)"
    )


def test_lease_must_leave_the_master_two_ticks_after_drift() -> None:
    """A lease the drift margin shrinks below two master ticks is refused on the lease key."""
    paxos = {
        **OLD_TIMING,
        "master_lease_seconds": 0.2,
        "clock_drift_max": 0.3,
        "heartbeat_seconds": 0.05,
    }
    assert only_problem(config(paxos=paxos)) == (
        "paxos.master_lease_seconds: 0.2 is too short for clock_drift_max 0.3: the master may "
        "trust only 1 tick of it and needs 2 (at least 0.25 s with these settings)"
    )
    parse_config(config(paxos={**paxos, "master_lease_seconds": 0.25}))


def test_heartbeat_must_renew_twice_per_lease() -> None:
    """A heartbeat longer than half the master's window is refused, naming the longest allowed."""
    lease = {**OLD_TIMING, "master_lease_seconds": 2.0}
    assert only_problem(config(paxos={**lease, "heartbeat_seconds": 1.5})) == (
        "paxos.heartbeat_seconds: 1.5 is too long: the master must renew at least twice per "
        "lease (at most 0.95 s with these settings)"
    )
    assert (
        parse_config(config(paxos={**lease, "heartbeat_seconds": 0.95}))
        .paxos.timing()
        .heartbeat_ticks
        == 19
    )
    assert "1 is too long" in only_problem(config(paxos={**lease, "heartbeat_seconds": 1.0}))


def test_election_jitter_must_be_a_tick() -> None:
    """An election jitter shorter than one tick is refused."""
    assert only_problem(config(paxos={**OLD_TIMING, "election_jitter_seconds": 0.01})).startswith(
        "paxos.election_jitter_seconds: 0.01 is shorter than one tick (0.05 s)"
    )


def test_queue_must_hold_a_batch() -> None:
    """proposals_queued_max below batch_entries_max is refused with the reason."""
    assert only_problem(config(paxos={"proposals_queued_max": 10})) == (
        "paxos.proposals_queued_max: 10 is smaller than paxos.batch_entries_max (64): "
        "the queue must hold at least one full batch"
    )


def test_catchup_must_cover_the_window() -> None:
    """catchup_entries_max below proposals_inflight_max is refused with the reason."""
    assert only_problem(config(paxos={"catchup_entries_max": 16})).startswith(
        "paxos.catchup_entries_max: 16 is smaller than paxos.proposals_inflight_max (32): "
    )


def test_largest_file_must_fit_a_batch_and_a_frame() -> None:
    """file_bytes_max must fit, with the command header, in one batch, and in one frame."""
    assert problems(config(limits={"file_bytes_max": 1 << 20})) == [
        "limits.file_bytes_max: 1.04858e+06 does not fit in one Paxos batch: a write carries "
        "the whole file in one command, so paxos.batch_bytes_max (1.04858e+06) must exceed it "
        "by at least the 24-byte command header",
        "limits.file_bytes_max: 1.04858e+06 does not fit in one frame: a write request carries "
        "the whole file, so limits.frame_bytes_max (1.04858e+06) must be larger",
    ]


def test_config_timing_checks_agree_with_the_core() -> None:
    """Over a grid of settings, the config accepts exactly what `Timing` accepts."""
    grid = itertools.product(
        [0.05, 0.1, 0.3],  # tick_seconds
        [0.1, 0.2, 0.3, 0.45, 0.6, 1.0, 2.0],  # master_lease_seconds
        [0.0, 0.2, 0.45],  # clock_drift_max
        [0.05, 0.1, 0.3, 0.5],  # heartbeat_seconds
        [0.01, 0.3],  # election_jitter_seconds
    )
    for tick, lease, drift, heartbeat, jitter in grid:
        seconds = {
            "tick_seconds": tick,
            "master_lease_seconds": lease,
            "clock_drift_max": drift,
            "heartbeat_seconds": heartbeat,
            "election_jitter_seconds": jitter,
        }
        try:
            Timing.from_seconds(
                tick_seconds=tick,
                lease_seconds=lease,
                clock_drift_max=drift,
                heartbeat_seconds=heartbeat,
                election_jitter_seconds=jitter,
                retry_seconds=0.25,
            )
            core_accepts = jitter >= tick  # The core rounds a short jitter up; config refuses it.
        except AssertionError:
            core_accepts = False
        try:
            parse_config(config(paxos=seconds))
            config_accepts = True
        except ConfigError:
            config_accepts = False
        assert config_accepts == core_accepts, seconds


def test_config_limit_checks_agree_with_the_core() -> None:
    """Over a grid of bounds, the config accepts exactly what `Limits` accepts."""
    for batch, inflight, queued, catchup in itertools.product([1, 8], [1, 4], [1, 8], [1, 4]):
        paxos = {
            "batch_entries_max": batch,
            "proposals_inflight_max": inflight,
            "proposals_queued_max": queued,
            "catchup_entries_max": catchup,
        }
        try:
            Limits(**paxos)
            core_accepts = True
        except AssertionError:
            core_accepts = False
        try:
            parse_config(config(paxos=paxos))
            config_accepts = True
        except ConfigError:
            config_accepts = False
        assert config_accepts == core_accepts, paxos


# --- Cell name, replicas, endpoints, storage URL ---------------------------------------------


@pytest.mark.parametrize("name", ["Local", "1cell", "", "a" * 65, "my cell", "x/y"])
def test_invalid_cell_names(name: str) -> None:
    """A cell name that cannot be a path component is refused."""
    assert only_problem(config(cell=name)).startswith(f"cell: {name!r} is not a valid cell name")


def test_cell_name_must_be_a_string() -> None:
    """A cell name YAML read as another type is refused with the type."""
    assert only_problem(config(cell=7)) == "cell: expected a string, got integer 7"


@pytest.mark.parametrize("count", [1, 2, 10])
def test_replica_count_is_three_to_nine(count: int) -> None:
    """A cell file lists 3 to 9 replicas (a new cell starts with 3 or 5: serve checks)."""
    replicas = [
        {"id": f"r{n}", "peer": f"tcp:71{n:02}", "client": f"tcp:72{n:02}", "admin": f"unix:/a{n}"}
        for n in range(count)
    ]
    assert only_problem(config(replicas=replicas)) == (
        f"replicas: has {count} replicas: a cell file lists 3 to 9 (a new cell starts with 3 or 5)"
    )


def test_replicas_must_be_a_list() -> None:
    """A replicas value that is not a list is refused."""
    assert only_problem(config(replicas={"r1": {}})) == (
        "replicas: expected a list of 3 to 9 replicas, got a mapping"
    )


@pytest.mark.parametrize("replica_id", ["R1", "1r", "r 1", "r" * 33, ""])
def test_invalid_replica_ids(replica_id: str) -> None:
    """A replica id that cannot be a directory name is refused by its path."""
    mapping = config()
    mapping["replicas"][2]["id"] = replica_id
    assert only_problem(mapping).startswith(
        f"replicas[2].id: {replica_id!r} is not a valid replica id"
    )


def test_duplicate_replica_ids() -> None:
    """A replica id used twice is refused, naming the first use."""
    mapping = config()
    mapping["replicas"][2]["id"] = "r1"
    assert only_problem(mapping) == (
        "replicas[2].id: 'r1' is already the id of replicas[0]: ids must be unique"
    )


def test_duplicate_endpoints() -> None:
    """An endpoint string used twice anywhere in the cell is refused, naming the first use."""
    mapping = config()
    mapping["replicas"][1]["admin"] = mapping["replicas"][0]["peer"]
    assert only_problem(mapping) == (
        "replicas[1].admin: 'tcp:7101:interface=127.0.0.1' is already used by "
        "replicas[0].peer: endpoints must differ"
    )


@pytest.mark.parametrize("endpoint", ["7101", "http://localhost:7101", "tcp:", "127.0.0.1:7101"])
def test_invalid_endpoints(endpoint: str) -> None:
    """An endpoint that is not a tcp:, ssl: or unix: string is refused by its path."""
    mapping = config()
    mapping["replicas"][1]["peer"] = endpoint
    assert only_problem(mapping).startswith(
        f"replicas[1].peer: {endpoint!r} is not a Twisted server endpoint string"
    )


def test_ssl_and_unix_endpoints_are_accepted() -> None:
    """ssl: (with a tls: section) and unix: endpoint strings pass the syntactic check."""
    mapping = config(tls={})
    mapping["replicas"][0]["client"] = "ssl:7443:interface=127.0.0.1"
    mapping["replicas"][0]["admin"] = "unix:/run/chubby/r1.sock"
    assert parse_config(mapping).replica("r1").admin == "unix:/run/chubby/r1.sock"


def test_an_ssl_client_endpoint_needs_the_tls_section() -> None:
    """Without tls: an ssl: client endpoint has no certificate to serve: refused."""
    mapping = config()
    mapping["replicas"][0]["client"] = "ssl:7443"
    assert only_problem(mapping).startswith("replicas[0].client: an ssl: endpoint needs the tls:")


def test_an_ssl_endpoint_names_no_files_of_its_own() -> None:
    """The certificate and key come from tls:, never from Twisted's endpoint options."""
    mapping = config(tls={})
    mapping["replicas"][0]["client"] = "ssl:7443:privateKey=key.pem:certKey=cert.pem"
    assert "leave out privateKey" in only_problem(mapping)


@pytest.mark.parametrize("kind", ["peer", "admin"])
def test_ssl_is_for_client_endpoints_only(kind: str) -> None:
    """Peers use the tls: section (or the peer key) over tcp:; the admin port is http."""
    mapping = config(tls={})
    mapping["replicas"][1][kind] = "ssl:7999"
    assert only_problem(mapping).startswith(f"replicas[1].{kind}: ssl: is for client endpoints")


def test_storage_url_needs_the_replica_placeholder() -> None:
    """A storage_url without {replica} would share one store among replicas, so it is refused."""
    assert only_problem(config(storage_url="sqlite:////srv/one.sqlite")).startswith(
        "storage_url: 'sqlite:////srv/one.sqlite' has no {replica}"
    )


def test_storage_url_must_parse() -> None:
    """A storage_url SQLAlchemy cannot parse is refused."""
    assert only_problem(config(storage_url="not a url {replica}")).startswith(
        "storage_url: 'not a url {replica}' is not a SQLAlchemy URL"
    )


def test_data_dir_must_be_a_nonempty_string() -> None:
    """An empty or non-string data_dir is refused."""
    assert only_problem(config(data_dir="")) == "data_dir: is empty: expected a directory path"
    assert only_problem(config(data_dir=1)) == "data_dir: expected a string, got integer 1"


# --- Reporting -------------------------------------------------------------------------------


def test_every_problem_is_reported_together() -> None:
    """Several mistakes give one line each, in file order, instead of stopping at the first."""
    mapping = config(cell="Bad", paxos={"heartbeat_seconds": 5, "batch_entrys_max": 3})
    mapping["replicas"][1]["peer"] = "7102"
    found = problems(mapping)
    assert [line.split(":", 1)[0] for line in found] == [
        "cell",
        "replicas[1].peer",
        "paxos.batch_entrys_max",
        "paxos.heartbeat_seconds",
    ]


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    """Problems found in a file are prefixed with the file's path."""
    path = tmp_path / "cell.yaml"
    text = (ETC / "cell.yaml").read_text().replace("tick_seconds: 0.025", "tick_seconds: -1")
    path.write_text(text.replace("cell: local", "cell: Local"))
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert raised.value.problems == (
        f"{path}: cell: 'Local' is not a valid cell name: expected a lowercase letter, then up "
        "to 63 lowercase letters, digits, '_' or '-' (it is a path component: /ls/<cell>/)",
        f"{path}: paxos.tick_seconds: -1 is not a duration: expected a number of seconds above 0",
    )


def test_yaml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    """A YAML syntax error becomes a ConfigError with the file, line and column."""
    path = tmp_path / "cell.yaml"
    path.write_text("cell: local\nreplicas: [\n  {id: r1\ndata_dir: x\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: line 4, column 9: "):
        load_config(path)


def test_duplicate_yaml_key_gives_the_line(tmp_path: Path) -> None:
    """A key given twice in one mapping is refused with its line, not silently overridden."""
    path = tmp_path / "cell.yaml"
    text = (ETC / "cell.yaml").read_text()
    path.write_text(text.replace("  retry_seconds:", "  heartbeat_seconds: 9\n  retry_seconds:"))
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    line = text.splitlines().index(
        next(x for x in text.splitlines() if x.startswith("  retry_seconds:"))
    )
    assert str(raised.value) == (
        f"{path}: line {line + 1}, column 3: key 'heartbeat_seconds' appears twice in this mapping"
    )


def test_unreadable_and_empty_files(tmp_path: Path) -> None:
    """A missing file and an empty file are ConfigErrors naming the file."""
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read the file"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match=r"empty\.yaml: the file is empty"):
        load_config(tmp_path / "empty.yaml")


def test_a_loaded_config_is_frozen() -> None:
    """A CellConfig cannot be changed after it is checked."""
    cell: CellConfig = load_config(ETC / "cell.yaml")
    with pytest.raises(AttributeError):
        cell.cell = "other"  # type: ignore[misc]


def test_a_keepalive_answered_no_earlier_than_the_lease_is_refused() -> None:
    """sessions.keepalive_answer_before_seconds must be shorter than sessions.lease_seconds."""
    document = config(sessions={"lease_seconds": 5, "keepalive_answer_before_seconds": 5})
    with pytest.raises(ConfigError, match=r"sessions\.keepalive_answer_before_seconds: 5 is not"):
        parse_config(document)


# --- auth ------------------------------------------------------------------------------------


def test_auth_reads_principals_anonymous_and_the_handle_key() -> None:
    """auth: principals with their tokens, whether anonymous clients are served, the key."""
    document = config(
        auth={
            "principals": {"alice": "a" * 16, "bob": "b" * 20},
            "anonymous": False,
            "handle_key": "k" * 32,
        }
    )
    auth = parse_config(document).auth
    assert auth.token_of("alice") == "a" * 16
    assert auth.token_of("carol") is None
    assert not auth.anonymous
    assert auth.handle_key == "k" * 32
    assert parse_config(config()).auth == AuthConfig()


def test_tokens_and_keys_may_live_in_files_inside_the_data_dir() -> None:
    """token_file:, handle_key_file: and peer_key_file: name files, relative to data_dir."""
    document = config(
        auth={
            "principals": {"ops": {"token_file": "ops.token"}, "alice": "a" * 16},
            "handle_key_file": "/etc/chubby/handle.key",
            "peer_key_file": "keys/peer.key",
        }
    )
    loaded = parse_config(document)
    assert loaded.auth.token_files == (("ops", "ops.token"),)
    assert loaded.auth.principals == (("alice", "a" * 16),)
    assert loaded.secret_path(loaded.auth.token_files[0][1]) == loaded.data_dir / "ops.token"
    assert loaded.secret_path(loaded.auth.handle_key_file) == Path("/etc/chubby/handle.key")
    assert loaded.secret_path(loaded.auth.peer_key_file) == loaded.data_dir / "keys/peer.key"


def test_by_default_the_keys_are_in_the_data_dirs_secrets() -> None:
    """Unset, the handle and peer keys are <data_dir>/_secrets/handle.key and peer.key."""
    loaded = parse_config(config())
    assert (
        loaded.secret_path(loaded.auth.handle_key_file) == loaded.data_dir / "_secrets/handle.key"
    )
    assert loaded.secret_path(loaded.auth.peer_key_file) == loaded.data_dir / "_secrets/peer.key"


@pytest.mark.parametrize(
    "auth",
    [
        {"handle_key": "local cell: replace with a long random secret"},
        {"principals": {"operator": "local operator token: replace me"}},
        {"principals": {"operator": "CHANGEME-CHANGEME-CHANGEME"}},
        {"handle_key": "put your placeholder secret here"},
    ],
)
def test_a_placeholder_secret_is_refused(auth: dict[str, Any]) -> None:
    """A key or token copied from an example is public: the file is refused, naming it."""
    assert "placeholder" in only_problem(config(auth=auth))


def test_a_token_file_entry_needs_its_file_name() -> None:
    """{token_file: ...} is the only mapping a principal may have, and the name is required."""
    found = problems(config(auth={"principals": {"ops": {"token": "x" * 20}}}))
    assert any("auth.principals.ops.token: unknown key" in line for line in found), found
    assert any("auth.principals.ops.token_file: is missing" in line for line in found), found


def test_the_tls_section_reads_its_files_and_replaces_the_replica_id() -> None:
    """tls: names the CA, and each replica's certificate and key by {replica}."""
    loaded = parse_config(config(tls={"ca": "/pki/ca.pem", "key": "tls/{replica}-key.pem"}))
    assert loaded.tls is not None
    assert loaded.secret_path(loaded.tls.ca) == Path("/pki/ca.pem")
    assert loaded.secret_path(loaded.tls.key, "r2") == loaded.data_dir / "tls/r2-key.pem"
    assert loaded.secret_path(loaded.tls.cert, "r3") == loaded.data_dir / "_secrets/tls/r3.pem"


def test_no_tls_section_or_an_empty_one_means_no_tls() -> None:
    """Without tls: (or with every key commented out, which reads as null) there is no TLS."""
    assert parse_config(config()).tls is None
    assert parse_config(config(tls=None)).tls is None
    assert parse_config(config(tls={})).tls is not None


def test_the_shipped_cell_files_hold_no_secret() -> None:
    """etc/*.yaml give no key or token inline: every secret is a file made per cell."""
    for name in ("cell.yaml", "cell5.yaml"):
        loaded = load_config(ETC / name)
        assert loaded.auth.handle_key is None, name
        assert loaded.auth.principals == (), name
        assert loaded.auth.token_files == (("operator", "_secrets/operator.token"),), name


def test_auth_admins_default_to_the_operator_and_reach_the_node() -> None:
    """auth.admins defaults to [operator]; the node gets them (for the ACL directory it
    makes), and the namespace exempts them from quotas, which it reads from limits:."""
    assert parse_config(config()).auth.admins == ("operator",)
    cell = parse_config(
        config(
            auth={"admins": ["ops", "anonymous"]},
            limits={"nodes_per_principal_max": 7, "bytes_per_principal_max": 4096},
        )
    )
    settings = cell.node_settings("r1")
    assert settings.admins == ("ops", "anonymous")
    assert settings.namespace_limits.quota_exempt == frozenset({"ops", "anonymous"})
    assert settings.namespace_limits.nodes_per_principal_max == 7
    assert settings.namespace_limits.bytes_per_principal_max == 4096


@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        ({"principals": {"alice": "short"}}, r"auth\.principals\.alice: the token must be"),
        ({"principals": {"alice": "t" * 1025}}, r"16 to 1024 characters"),
        ({"principals": {"anonymous": "x" * 16}}, r"reserved"),
        ({"principals": {"a b": "x" * 16}}, r"no spaces"),
        ({"principals": ["alice"]}, r"auth\.principals: expected a mapping"),
        ({"anonymous": "yes"}, r"auth\.anonymous: expected true or false"),
        ({"handle_key": "short"}, r"auth\.handle_key: expected a secret string"),
        ({"tokens": {}}, r"auth\.tokens: unknown key"),
        ({"admins": []}, r"auth\.admins: expected a non-empty list"),
        ({"admins": "operator"}, r"auth\.admins: expected a non-empty list"),
        ({"admins": ["ops", "\x1b[2J"]}, r"auth\.admins\[1\]: .* cannot be a principal"),
        ({"admins": ["ops", "ops"]}, r"auth\.admins\[1\]: 'ops' is listed twice"),
        ({"admins": ["*"]}, r"auth\.admins\[0\]: .*'\*' is not a principal"),
    ],
)
def test_bad_auth_is_refused_with_its_key_path(auth: dict[str, Any], expected: str) -> None:
    """Weak tokens, reserved or malformed principals, wrong types: each named."""
    with pytest.raises(ConfigError, match=expected):
        parse_config(config(auth=auth))


# --- Limits that hold under floods (issue 13, item 5) ----------------------------------------


def test_flood_limits_default_and_reach_the_node() -> None:
    """Without the keys, the flood limits take their documented defaults; the node gets
    the authentication limits with the window in ticks, the master the per-session
    bound."""
    cell = parse_config(config())
    limits = cell.limits
    assert (limits.client_connections_max, limits.requests_pending_per_connection_max) == (
        10_000,
        1_024,
    )
    assert (limits.hello_timeout_seconds, limits.frame_timeout_seconds) == (5.0, 10.0)
    assert limits.idle_timeout_seconds == 300.0
    assert (limits.client_requests_per_turn, limits.client_reads_per_turn) == (128, 64)
    settings = cell.node_settings("r1")
    assert settings.auth_limits.failures_per_connection_max == 3
    assert settings.auth_limits.failures_per_address_max == 20
    assert settings.auth_limits.window_ticks == round(60 / cell.paxos.tick_seconds)
    assert settings.log_lines_per_minute == 10
    assert settings.master_timing.calls_waiting_per_session_max == 1_000
    assert settings.master_timing.handles_per_session_max == 10_000
    assert settings.master_timing.cached_names_per_session_max == 10_000
    assert (limits.peer_handshakes_max, limits.peer_handshakes_per_address_max) == (64, 8)
    assert (limits.admin_connections_max, limits.admin_idle_timeout_seconds) == (64, 30.0)
    assert limits.http_request_bytes_max == 16_384
    assert limits.admin_connections_per_address_max == 16
    assert (limits.admin_request_head_seconds, limits.admin_request_head_bytes_max) == (5.0, 8192)
    assert (limits.hello_frame_bytes_max, limits.request_arrays_max) == (4096, 16_384)
    assert limits.client_bytes_per_turn == 1 << 20
    assert (limits.snapshot_chunk_bytes, limits.snapshot_held_seconds) == (256 << 10, 30.0)
    assert settings.snapshot_chunk_bytes == 256 << 10
    assert settings.snapshot_held_ticks == round(30 / cell.paxos.tick_seconds)
    assert (limits.reply_bytes_buffered_max, limits.reply_bytes_buffered_total_max) == (
        4 << 20,
        256 << 20,
    )


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("hello_timeout_seconds", 0, "0 is not a duration"),
        ("frame_timeout_seconds", -1, "-1 is not a duration"),
        ("idle_timeout_seconds", "5 min", "give a plain number"),
        ("client_connections_max", 0, "expected at least 1"),
        ("requests_pending_per_connection_max", 64, "expected at least 128"),
        ("client_requests_per_turn", 0, "expected at least 1"),
        ("client_reads_per_turn", 1.5, "expected an integer"),
        ("auth_failures_per_connection_max", 0, "expected at least 1"),
        ("auth_failures_window_seconds", 0, "0 is not a duration"),
        ("calls_waiting_per_session_max", 0, "expected at least 1"),
        ("log_lines_per_minute", 0, "expected at least 1"),
        ("peer_handshakes_max", 0, "expected at least 1"),
        ("peer_handshakes_per_address_max", 0, "expected at least 1"),
        ("admin_connections_max", 0, "expected at least 1"),
        ("admin_idle_timeout_seconds", 0, "0 is not a duration"),
        ("http_request_bytes_max", -1, "expected at least 0"),
        ("admin_connections_per_address_max", 0, "expected at least 1"),
        ("admin_request_head_seconds", 0, "0 is not a duration"),
        ("admin_request_head_bytes_max", 1023, "expected at least 1024"),
        ("handles_per_session_max", 0, "expected at least 1"),
        ("cached_names_per_session_max", -1, "expected at least 0"),
        ("hello_frame_bytes_max", 1000, "expected 1294 to 4294967295 (the largest Hello"),
        ("client_bytes_per_turn", 0, "expected at least 1"),
        ("request_arrays_max", 63, "expected at least 64"),
        ("reply_bytes_buffered_max", 0, "expected at least 1"),
        ("reply_bytes_buffered_total_max", 0, "expected at least 1"),
        ("snapshot_chunk_bytes", 4095, "expected 4096 to 4194304 (the most one answer"),
        ("snapshot_chunk_bytes", (4 << 20) + 1, "expected 4096 to 4194304"),
        ("snapshot_held_seconds", 0, "0 is not a duration"),
    ],
)
def test_flood_limits_out_of_range_are_refused(key: str, value: object, expected: str) -> None:
    """Each flood limit out of its range is one problem naming the key."""
    message = only_problem(config(limits={key: value}))
    assert message.startswith(f"limits.{key}: "), message
    assert expected in message, message


@pytest.mark.parametrize(
    ("part", "whole"),
    [
        ("hello_frame_bytes_max", "frame_bytes_max"),
        ("reply_bytes_buffered_max", "reply_bytes_buffered_total_max"),
        ("snapshot_chunk_bytes", "reply_bytes_buffered_max"),
        ("admin_connections_per_address_max", "admin_connections_max"),
    ],
)
def test_a_limit_on_a_part_above_its_whole_is_refused(part: str, whole: str) -> None:
    """The pre-Hello frame limit above the frame limit, one connection's unread replies
    above all connections', or one address's admin connections above all of them, is one
    problem naming both keys."""
    message = only_problem(config(limits={part: 1 << 21, whole: 1 << 20}))
    assert message.startswith(
        f"limits.{part}: 2.09715e+06 is above limits.{whole} (1.04858e+06)"
    ), message


def test_a_share_not_given_follows_its_whole_down() -> None:
    """Lowering admin_connections_max (or web.connections_max, web.logins_max) alone stays
    valid: the per-address (per-principal) share not given takes the smaller value."""
    cell = parse_config(
        config(limits={"admin_connections_max": 4}, web={"connections_max": 8, "logins_max": 2})
    )
    assert cell.limits.admin_connections_per_address_max == 4
    assert (cell.web.connections_per_address_max, cell.web.logins_per_principal_max) == (8, 2)
    assert cell.web.logins_per_address_max == 2


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("login_failures_per_principal_max", 0, "expected at least 1"),
        ("logins_per_principal_max", 0, "expected at least 1"),
        ("logins_per_address_max", 0, "expected at least 1"),
        ("connections_per_address_max", 0, "expected at least 1"),
        ("request_head_seconds", 0, "0 is not a duration"),
        ("request_head_bytes_max", 1000, "expected at least 1024"),
    ],
)
def test_web_hardening_keys_out_of_range_are_refused(
    key: str, value: object, expected: str
) -> None:
    """Each of the web page's bounds on logins, connections and request heads out of its
    range is one problem naming the key."""
    message = only_problem(config(web={key: value}))
    assert message.startswith(f"web.{key}: "), message
    assert expected in message, message


def test_web_hardening_keys_default() -> None:
    """Without the keys: 5 failed logins per principal, 16 logins per principal and per
    address, 64 connections per address, a 5 s deadline and 16 KiB for a request head."""
    web = parse_config(config()).web
    assert web.login_failures_per_principal_max == 5
    assert (web.logins_per_principal_max, web.logins_per_address_max) == (16, 16)
    assert web.connections_per_address_max == 64
    assert (web.request_head_seconds, web.request_head_bytes_max) == (5.0, 16_384)


@pytest.mark.parametrize(
    ("part", "whole"),
    [
        ("connections_per_address_max", "connections_max"),
        ("logins_per_principal_max", "logins_max"),
        ("logins_per_address_max", "logins_max"),
    ],
)
def test_a_web_share_above_its_whole_is_refused(part: str, whole: str) -> None:
    """One address's (or principal's) share above everyone's is one problem naming both."""
    message = only_problem(config(web={part: 9, whole: 8}))
    assert message.startswith(f"web.{part}: 9 is above web.{whole} (8)"), message


def test_web_login_failures_must_stay_below_the_cells_budget() -> None:
    """web.login_failures_per_principal_max at or above limits.auth_failures_per_address_max
    is refused, saying the failed web logins would lock the principal out of the cell; when
    not given it stays below whatever the cell's budget is."""
    message = only_problem(
        config(
            limits={"auth_failures_per_address_max": 5}, web={"login_failures_per_principal_max": 5}
        )
    )
    assert message.startswith(
        "web.login_failures_per_principal_max: 5 is not below "
        "limits.auth_failures_per_address_max (5)"
    ), message
    assert "lock it out of the cell there, the CLI included" in message
    low = parse_config(config(limits={"auth_failures_per_address_max": 3}))
    assert low.web.login_failures_per_principal_max == 2


def test_a_session_waiting_calls_must_not_fill_a_connection_pipeline() -> None:
    """requests_pending_per_connection_max must exceed calls_waiting_per_session_max + 1
    (a session's waiting acquires and its KeepAlive), else one problem naming both."""
    message = only_problem(
        config(
            limits={
                "requests_pending_per_connection_max": 500,
                "calls_waiting_per_session_max": 499,
            }
        )
    )
    assert message.startswith("limits.requests_pending_per_connection_max: 500 is not above")
    assert "limits.calls_waiting_per_session_max (499)" in message
    parse_config(
        config(
            limits={
                "requests_pending_per_connection_max": 500,
                "calls_waiting_per_session_max": 498,
            }
        )
    )


# --- The supervisor of `chubbypy cell` --------------------------------------------------------


def test_supervisor_keys_are_read_and_default() -> None:
    """Without supervisor: every key takes its default; given, each is read by its type."""
    assert parse_config(config()).supervisor == SupervisorConfig(0.5, 30.0, 30.0, 5)
    section = {
        "restart_delay_seconds": 1,
        "restart_delay_max_seconds": 8,
        "quick_exit_seconds": 2.5,
        "quick_exits_max": 3,
    }
    assert parse_config(config(supervisor=section)).supervisor == SupervisorConfig(1, 8, 2.5, 3)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("restart_delay_seconds", 0, "0 is not a duration"),
        ("restart_delay_max_seconds", -1, "-1 is not a duration"),
        ("quick_exit_seconds", 0, "0 is not a duration"),
        ("quick_exits_max", 0, "0 is too small: expected at least 1"),
        ("quick_exits_max", 2.5, "expected an integer, got number 2.5"),
        ("restart_delay", 1, "unknown key"),
    ],
)
def test_supervisor_values_out_of_range_are_refused(key: str, value: object, expected: str) -> None:
    """Each supervisor value out of its range is one problem naming the key."""
    message = only_problem(config(supervisor={key: value}))
    assert message.startswith(f"supervisor.{key}: "), message
    assert expected in message, message


def test_the_longest_back_off_cannot_be_below_the_first() -> None:
    """restart_delay_max_seconds below restart_delay_seconds is one problem naming both."""
    section = {"restart_delay_seconds": 2, "restart_delay_max_seconds": 1}
    assert only_problem(config(supervisor=section)) == (
        "supervisor.restart_delay_max_seconds: 1 s is below supervisor.restart_delay_seconds "
        "(2 s): the back-off only grows"
    )
