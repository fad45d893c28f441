"""The ``web:`` section of a cell file: defaults, every key checked, relations between keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from attrs import fields

from chubbypy.config import ConfigError, WebConfig, load_config, parse_config

ETC = Path(__file__).resolve().parents[3] / "etc"

BASE: dict[str, Any] = {
    "cell": "test",
    "replicas": [
        {"id": f"r{n}", "peer": f"tcp:710{n}", "client": f"tcp:720{n}", "admin": f"tcp:730{n}"}
        for n in (1, 2, 3)
    ],
    "data_dir": "/srv/chubby",
}


def with_web(web: object, **top: Any) -> dict[str, Any]:
    return {**BASE, "web": web, **top}


def problems(mapping: object) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse_config(mapping)
    return list(raised.value.problems)


def test_missing_section_takes_the_defaults() -> None:
    """A cell file without ``web:`` gets every default (loopback port 7400)."""
    assert parse_config(BASE).web == WebConfig()
    assert WebConfig().listen == "tcp:7400:interface=127.0.0.1"


@pytest.mark.parametrize("name", ["cell.yaml", "cell5.yaml"])
def test_etc_files_list_every_web_key(name: str) -> None:
    """The example files name every web key with its default value (the listening port aside)."""
    document = yaml.safe_load((ETC / name).read_text())
    assert set(document["web"]) == {a.name for a in fields(WebConfig)}
    loaded = load_config(ETC / name).web
    assert {a.name: getattr(loaded, a.name) for a in fields(WebConfig) if a.name != "listen"} == {
        a.name: getattr(WebConfig(), a.name) for a in fields(WebConfig) if a.name != "listen"
    }


def test_values_are_read() -> None:
    """Given values replace the defaults, host names included."""
    web = parse_config(
        with_web({"listen": "ssl:8443", "hosts": ["chubby.example.com"], "logins_max": 3})
    ).web
    assert (web.listen, web.hosts, web.logins_max) == ("ssl:8443", ("chubby.example.com",), 3)


@pytest.mark.parametrize(
    ("web", "expected"),
    [
        ({"listen": "unix:/tmp/x"}, "web.listen: 'unix:/tmp/x' is not a tcp: or ssl:"),
        ({"listen": 7400}, "web.listen: expected a string, got integer 7400"),
        ({"hosts": "a.example"}, "web.hosts: expected a list of host names"),
        ({"hosts": ["Evil.example"]}, "web.hosts[0]: string 'Evil.example' is not a host name"),
        ({"hosts": ["a.example:80"]}, "web.hosts[0]: string 'a.example:80' is not a host name"),
        ({"children_per_page": 1001}, "web.children_per_page: 1001 is out of range"),
        ({"json_depth_max": 0}, "web.json_depth_max: 0 is out of range"),
        ({"logins_max": 0}, "web.logins_max: 0 is too small"),
        ({"login_idle_seconds": 0}, "web.login_idle_seconds: 0 is not a duration"),
        ({"chart_points": "120"}, "web.chart_points: expected an integer, got string '120'"),
        ({"colour": "blue"}, "web.colour: unknown key"),
        ("yes", "web: expected a mapping of keys, got string 'yes'"),
    ],
)
def test_mistakes_are_named_by_key(web: object, expected: str) -> None:
    """Each mistake in the web section is one line naming its key."""
    found = problems(with_web(web))
    assert len(found) == 1, found
    assert found[0].startswith(expected), found


def test_body_limit_must_carry_the_largest_file() -> None:
    """request_body_bytes_max must carry a whole file as base64; when not given it grows with
    limits.file_bytes_max, so raising that alone stays valid."""
    (problem,) = problems(with_web({"request_body_bytes_max": 100_000}))
    assert problem.startswith("web.request_body_bytes_max: 100000 cannot carry a file of")
    limits = {"file_bytes_max": 900_000, "frame_bytes_max": 2_000_000}
    big = parse_config({**BASE, "limits": limits, "paxos": {"batch_bytes_max": 2_000_000}})
    assert big.web.request_body_bytes_max >= 4 * 300_000


def test_a_logins_streams_cannot_exceed_everyones() -> None:
    """event_streams_per_login_max above event_streams_max is a mistake."""
    (problem,) = problems(with_web({"event_streams_per_login_max": 9, "event_streams_max": 8}))
    assert problem.startswith("web.event_streams_per_login_max: 9 is above web.event_streams_max")
