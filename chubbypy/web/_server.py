"""`chubbypy web`: the admin namespace browser, built and wired in one place.

Shell (STYLE §1, §6). `WebServer` makes every part from the cell file and the reactor and
wires them with typed calls: the shared anonymous client of the cell (when the cell serves
anonymous clients), the `Logins` (each with a client of its own), the `LiveUpdates` (event
streams and the handles they watch through), the `StatusPoller` (the replicas' admin
ports, for the cell page), and the `WebApp` resource with the API's and the pages'
routes, behind the bounded `WebSite` and `ConnectionLimit`. The server is a client of the
cell like any other: it never reads a replica's state but through the client port and the
admin port's public ``/status`` and ``/metrics``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from importlib import resources
from typing import Any, Final

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)

from chubbypy.client import Cell
from chubbypy.config import CellConfig, ConfigError, load_config
from chubbypy.protocol.client import PRINCIPAL_CHARS_MAX, TOKEN_CHARS_MAX
from chubbypy.protocol.session import SessionInfo
from chubbypy.server._endpoints import http_url, server_endpoint
from chubbypy.server._framed import ShellWarnings
from chubbypy.server._http import BoundedSite, HttpLimits
from chubbypy.server._serve import CELL_CHILD
from chubbypy.web._api import Api
from chubbypy.web._app import STATUS_OF_CODE, Context, WebApp, WebError
from chubbypy.web._cellstatus import CellHistory, StatusPoller
from chubbypy.web._http import HostCheck
from chubbypy.web._live import LiveUpdates
from chubbypy.web._logins import AttemptLimiter, Login, LoginBounds, LoginRefused, Logins
from chubbypy.web._pages import Pages

__all__ = ["WebServer", "web_main", "web_parser", "web_url"]

IDLE_SECONDS: Final = 60.0
"""An HTTP connection with no request in progress that sends nothing this long is closed
(an event stream is a request in progress: it stays open)."""
STOP_SECONDS: Final = 5.0
"""How long closing the clients of the cell may take at shutdown (their sessions end at
their leases anyway): SIGTERM always ends the process."""
CELL_TIMEOUT_SECONDS: Final = 5.0
"""How long one page's call to the cell may take: a page says the cell is unavailable
rather than hang (the client library retries within it, across a fail-over)."""
STATIC: Final = {
    "/static/app.js": b"text/javascript; charset=utf-8",
    "/static/style.css": b"text/css; charset=utf-8",
    "/static/favicon.svg": b"image/svg+xml",
}
NAME_CHARS_MAX: Final = 255


def web_url(listen: str, port: int | None = None) -> str:
    """The URL of a page listening on `listen` (a tcp: or ssl: endpoint string), on
    `port` when given (the port it got, for a listen string of port 0)."""
    scheme = "https" if listen.startswith("ssl:") else "http"
    return f"{scheme}://{_interface(listen)}:{port if port is not None else _port(listen)}/"


def _parts(listen: str) -> tuple[list[str], dict[str, str]]:
    positional, named = [], {}
    for part in listen.split(":")[1:]:
        key, equals, value = part.partition("=")
        if equals:
            named[key] = value
        else:
            positional.append(part)
    return positional, named


def _port(listen: str) -> str:
    positional, named = _parts(listen)
    return named.get("port") or (positional[0] if positional else "0")


def _interface(listen: str) -> str:
    """The host to put in a URL of the page (loopback for a wildcard interface)."""
    value = _parts(listen)[1].get("interface", "")
    if value in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{value}]" if ":" in value else value


class WebServer:
    """The whole web page of one cell; see the module docstring."""

    log = Logger()

    def __init__(self, reactor: Any, config: CellConfig, *, listen: str | None = None) -> None:
        web = config.web
        self.reactor = reactor
        self.config = config
        self.listen_on = listen or web.listen
        self.tls = self.listen_on.startswith("ssl:")
        self.anonymous = (
            self._client(None, None, "anonymous visitors") if config.auth.anonymous else None
        )
        self.logins = Logins(
            reactor,
            self._login_client,
            LoginBounds(
                logins_max=web.logins_max,
                logins_per_principal_max=web.logins_per_principal_max,
                logins_per_address_max=web.logins_per_address_max,
                idle_seconds=web.login_idle_seconds,
            ),
            attempts=AttemptLimiter(
                web.login_attempts_per_address_max, web.login_attempts_window_seconds
            ),
            failures=AttemptLimiter(
                web.login_failures_per_principal_max,
                config.limits.auth_failures_window_seconds,
                keep_spent=True,
            ),
            warnings=ShellWarnings(config.limits.log_lines_per_minute, reactor.seconds),
        )
        self.live = LiveUpdates(
            reactor,
            streams_max=web.event_streams_max,
            streams_per_owner_max=web.event_streams_per_login_max,
            paths_per_stream_max=web.watched_paths_per_stream_max,
        )
        self.logins.on_ended.append(lambda login: self.live.client_gone(login.login_id))
        self.history = CellHistory(config.replica_ids, web.chart_points)
        admin_urls = {str(replica.id): http_url(replica.admin) for replica in config.replicas}
        self.poller = StatusPoller(reactor, admin_urls, self.history, web.status_poll_seconds)
        self.poller.on_master_changed.append(self.live.master_changed)
        self.app = WebApp(
            reactor,
            self.logins,
            self.anonymous,
            cell_name=config.cell,
            json_depth_max=web.json_depth_max,
            tls=self.tls,
        )
        self.app.static = {path: (kind, _static(path)) for path, kind in STATIC.items()}
        Api(self).register()
        Pages(self).register()
        limits = HttpLimits(
            connections_max=web.connections_max,
            request_bytes_max=web.request_body_bytes_max,
            idle_timeout_seconds=IDLE_SECONDS,
            connections_key="connections_max",
            request_bytes_key="request_body_bytes_max",
            connections_per_address_max=web.connections_per_address_max,
            connections_per_address_key="connections_per_address_max",
            request_head_seconds=web.request_head_seconds,
            request_head_seconds_key="request_head_seconds",
            request_head_bytes_max=web.request_head_bytes_max,
            request_head_bytes_key="request_head_bytes_max",
            section="web",
            log_lines_per_minute=config.limits.log_lines_per_minute,
        )
        self.site = BoundedSite(self.app, limits, reactor=reactor)
        self.site.displayTracebacks = False
        self.port: IListeningPort | None = None
        self.url = web_url(self.listen_on)

    def clock_now(self) -> float:
        clock: IReactorTime = self.reactor
        return clock.seconds()

    def _client(self, principal: str | None, token: str | None, who: str) -> Cell:
        name = f"chubbypy web for {who}"[:NAME_CHARS_MAX]
        return Cell.from_config(
            self.reactor, self.config, principal=principal, token=token, name=name,
            timeout_seconds=CELL_TIMEOUT_SECONDS,
        )  # fmt: skip

    def _login_client(self, principal: str, token: str, address: str) -> Cell:
        return self._client(principal, token, f"{principal} from {address}")

    # ------------------------------------------------------------------ running

    async def start(self) -> str:
        """Listen and start polling; the page's URL."""
        endpoint = server_endpoint(self.reactor, self.listen_on)
        self.port = await endpoint.listen(self.site)
        port_number = int(getattr(self.port.getHost(), "port", 0))
        self.app.host_check = HostCheck(
            _interface(self.listen_on).strip("[]"), port_number, self.config.web.hosts, tls=self.tls
        )
        self.url = web_url(self.listen_on, port_number)
        self.poller.start()
        return self.url

    async def stop(self) -> None:
        """Stop listening, end every stream and login, close the clients of the cell."""
        self.poller.stop()
        if self.port is not None:
            stopped = self.port.stopListening()
            if stopped is not None:
                await stopped
        self.live.close()
        closing = [self.logins.close()]
        if self.anonymous is not None:
            closing.append(self.anonymous.close())
        for deferred in closing:
            deferred.addTimeout(STOP_SECONDS, self.reactor)
            with contextlib.suppress(Exception):
                await deferred

    # ------------------------------------------------------------------ logins

    async def log_in(self, context: Context, principal: str, token: str) -> Login:
        """Log the visitor in (ending the login they had); `WebError` if refused."""
        address = context.visitor.address
        bad = None
        if (
            not 0 < len(principal) <= PRINCIPAL_CHARS_MAX
            or not principal.isprintable()
            or any(c.isspace() for c in principal)
        ):
            bad = "a principal is a name of printable characters, no spaces"
        elif not 0 < len(token) <= TOKEN_CHARS_MAX:
            bad = f"a token has 1 to {TOKEN_CHARS_MAX} characters"
        if bad is not None:
            self.logins.refused(principal, address, LoginRefused("BAD_REQUEST", bad))
            raise WebError("BAD_REQUEST", bad)
        try:
            login = await self.logins.login(principal, token, address, context.visitor.login)
        except LoginRefused as refused:
            code = refused.code if refused.code in STATUS_OF_CODE else "UNAVAILABLE"
            if refused.retry_seconds is not None:
                context.request.setHeader(b"retry-after", str(refused.retry_seconds).encode())
            raise WebError(code, _without(refused.message, token)) from None
        if context.visitor.login is not None:
            self.logins.logout(context.visitor.login)
        self.app.set_login_cookie(context.request, login)
        return login

    async def log_out(self, context: Context) -> None:
        login = context.visitor.login
        self.app.clear_login_cookie(context.request)
        if login is not None:
            await self.logins.logout(login)

    # ------------------------------------------------------------------ sessions

    async def sessions_page(
        self, cell: Cell, after: int, limit: int
    ) -> tuple[tuple[SessionInfo, ...], bool]:
        """The sessions with ids above `after`, at most `limit`, and whether more follow
        (the client reads the master's whole list, a page at a time)."""
        every = await cell.list_sessions()
        later = [info for info in every if info.session_id > after]
        return tuple(later[:limit]), len(later) > limit


def _without(message: str, token: str) -> str:
    """`message` with the token taken out, should a replica ever have echoed it."""
    return message.replace(token, "[token]") if token else message


def _static(path: str) -> bytes:
    name = path.rpartition("/")[2]
    return resources.files("chubbypy.web").joinpath("static", name).read_bytes()


# ----------------------------------------------------------------------------- the command


def web_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--config", help="the cell's YAML file (default etc/cell.yaml)")
    parser.add_argument(
        "--listen",
        metavar="ENDPOINT",
        help="a Twisted endpoint string (default: the cell file's web.listen, "
        '"tcp:7400:interface=127.0.0.1")',
    )
    return parser


def web_main(args: argparse.Namespace) -> int:
    """Serve the page until SIGINT or SIGTERM; the exit status."""
    path = args.config or os.environ.get("CHUBBY_CELL") or "etc/cell.yaml"
    try:
        config = load_config(path)
    except ConfigError as error:
        print(f"chubbypy web: {error}", file=sys.stderr)
        return 2
    listen = args.listen or config.web.listen
    if not listen.startswith(("tcp:", "ssl:")):
        print(f"chubbypy web: --listen {listen!r}: a tcp: or ssl: endpoint string", file=sys.stderr)
        return 2
    from twisted.internet import reactor

    _start_logging()
    server = WebServer(reactor, config, listen=listen)
    status: list[int] = []

    def started(url: str) -> None:
        print(f"chubbypy web: the page of cell {config.cell!r} is at {url}", flush=True)

    def failed(failure: Any) -> None:
        print(
            f"chubbypy web: cannot listen on {listen}: {failure.getErrorMessage()}", file=sys.stderr
        )
        status.append(1)
        if reactor.running:
            reactor.stop()
        else:  # a port taken is refused at once, before the reactor runs
            reactor.callWhenRunning(reactor.stop)

    if os.environ.get(CELL_CHILD) == "1":
        # Under `chubbypy cell` a Ctrl-C reaches every process; the cell stops its children
        # one way only (SIGTERM), so the page leaves the Ctrl-C to it, like the replicas.
        reactor.callWhenRunning(signal.signal, signal.SIGINT, signal.SIG_IGN)
    Deferred.fromCoroutine(server.start()).addCallbacks(started, failed)
    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: Deferred.fromCoroutine(server.stop())
    )
    reactor.run()
    return status[0] if status else 0


QUIET_NAMESPACES: Final = ("twisted.web.client", "chubbypy.server._http", "twisted.web.server")
"""Their info lines (a factory started for each poll of an admin port) would drown the log."""


def _start_logging() -> None:
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
    for namespace in QUIET_NAMESPACES:
        predicate.setLogLevelForNamespace(namespace, LogLevel.warn)
    observer = FilteringLogObserver(textFileLogObserver(sys.stdout), [predicate])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
