"""A `chubbypy web` process beside a `LiveCell`, and an HTTP client for it (cookies kept).

Test support for the web page's integration and browser tests. `WebProcess` writes a copy
of the cell's file with a ``web:`` section of the test's own (its port, its limits), runs
``chubbypy web`` on it as a child (output to a log beside the cell's), and waits for the
line that gives its URL. `WebClient` speaks to it as a browser or a script would: a
cookie jar, the CSRF token from ``GET /api/whoami``, JSON in and out, and the raw status
and headers of every answer.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import ssl
import subprocess
import time
from collections.abc import Mapping
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any, Final
from urllib.error import HTTPError
from urllib.parse import urlencode
from urllib.request import HTTPCookieProcessor, HTTPSHandler, Request, build_opener

import yaml
from attrs import frozen

from tests.integration.harness import LiveCell, child_environment, chubbypy_command, poll, tail

__all__ = ["Answer", "EventReader", "WebClient", "WebProcess", "cookie_header", "raw_request"]

START_SECONDS: Final = 20.0
STOP_SECONDS: Final = 10.0


class WebProcess:
    """``chubbypy web`` for `cell` on a loopback port the kernel picks as it listens (so
    that tests running at once never race for one), with the ``web:`` keys `web`."""

    def __init__(
        self,
        cell: LiveCell,
        *,
        web: Mapping[str, Any] | None = None,
        name: str = "web",
        listen: str = "tcp:0:interface=127.0.0.1",
    ) -> None:
        self.cell = cell
        self.port = 0
        self.base = ""
        document = yaml.safe_load(cell.config_path.read_text())
        document["web"] = {**(web or {}), "listen": listen}
        self.config_path = cell.directory / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(document, sort_keys=False))
        self.log_path = cell.directory / f"{name}.log"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*chubbypy_command(), "web", "--config", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cell.directory,
                env=child_environment(),
                start_new_session=True,
            )
        try:
            poll(self._started, "chubbypy web listens", START_SECONDS, self.logs)
        except BaseException:
            self.stop()  # never leave a page running behind a failed start
            raise

    def _started(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"chubbypy web exited ({self.process.returncode})\n{self.logs()}")
        said = re.search(
            r" is at (https?)://127\.0\.0\.1:(\d+)/", self.log_path.read_text(errors="replace")
        )
        if said is None:
            return False
        self.port = int(said.group(2))
        self.base = f"{said.group(1)}://127.0.0.1:{self.port}"
        return True

    def logs(self) -> str:
        return f"--- {self.log_path.name}\n{tail(self.log_path, 60)}"

    def client(self) -> WebClient:
        return WebClient(self.base)

    def stop(self) -> int | None:
        """SIGTERM and wait; the exit status (None if it had to be killed)."""
        if self.process.poll() is not None:
            return self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None


@frozen
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes
    cookies: tuple[str, ...] = ()
    """The Set-Cookie headers, whole."""

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class WebClient:
    """A visitor of the page: its cookies, its CSRF token, its requests."""

    def __init__(self, base: str, ca: Path | None = None) -> None:
        """`ca`: the certificate authority to verify an https page against."""
        self.base = base
        self.jar = CookieJar()
        handlers: list[Any] = [HTTPCookieProcessor(self.jar)]
        if ca is not None:
            handlers.append(HTTPSHandler(context=ssl.create_default_context(cafile=str(ca))))
        self._opener = build_opener(*handlers)

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 15.0,
    ) -> Answer:
        request = Request(self.base + path, data=body, method=method, headers=dict(headers or {}))
        try:
            with self._opener.open(request, timeout=timeout) as response:
                return _answer(response.status, response.headers, response.read())
        except HTTPError as error:
            return _answer(error.code, error.headers, error.read())

    def get(self, route: str, /, **params: Any) -> Answer:
        query = urlencode(params, doseq=True)
        return self.request("GET", f"{route}?{query}" if query else route)

    def csrf(self) -> str:
        token: str = self.get("/api/whoami").json()["csrf"]
        return token

    def post(
        self, path: str, document: Any, *, csrf: str | None = None, token: bool = True
    ) -> Answer:
        """POST `document` as JSON, with the visitor's CSRF token (or `csrf`, or none)."""
        headers = {"Content-Type": "application/json"}
        if token:
            headers["X-CSRF-Token"] = csrf if csrf is not None else self.csrf()
        return self.request("POST", path, body=json.dumps(document).encode(), headers=headers)

    def form(self, path: str, fields: Mapping[str, str], *, token: bool = True) -> Answer:
        """POST a form as the page's forms do (with the hidden csrf field)."""
        values = dict(fields)
        if token:
            values["csrf"] = self.csrf()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        return self.request("POST", path, body=urlencode(values).encode(), headers=headers)

    def login(self, principal: str, token: str) -> Answer:
        return self.post("/api/login", {"principal": principal, "token": token})


def _answer(status: int, headers: Any, body: bytes) -> Answer:
    cookies = tuple(headers.get_all("Set-Cookie") or ())
    return Answer(status, {k.lower(): v for k, v in headers.items()}, body, cookies)


def raw_request(
    port: int, method: str, path: str, headers: Mapping[str, str], body: bytes = b""
) -> tuple[int, bytes]:
    """One request with exactly these headers (a forged Host, say): status and body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        if body:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body or None)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


class EventReader:
    """An open ``/api/events`` stream, read event by event with a deadline."""

    def __init__(self, port: int, paths: list[str], cookie: str = "") -> None:
        query = urlencode([("path", p) for p in paths])
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        headers = {"Accept": "text/event-stream"}
        if cookie:
            headers["Cookie"] = cookie
        self.connection.request("GET", f"/api/events?{query}", headers=headers)
        self.response = self.connection.getresponse()
        self.status = self.response.status

    def next_event(
        self, timeout: float = 15.0, skip: tuple[str, ...] = ("session",)
    ) -> tuple[str, Any]:
        """The next event (name and data) not named in `skip` (by default the session's
        state changes), skipping comments; fails after `timeout`."""
        deadline = time.monotonic() + timeout
        name, data = "message", ""
        while time.monotonic() < deadline:
            line = self.response.fp.readline().decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
            elif line == "" and data:
                if name not in skip:
                    return name, json.loads(data)
                name, data = "message", ""
        raise AssertionError(f"no event within {timeout} s")

    def close(self) -> None:
        self.connection.close()


def cookie_header(client: WebClient) -> str:
    """The Cookie header `client`'s jar sends."""
    return "; ".join(f"{c.name}={c.value}" for c in client.jar)
