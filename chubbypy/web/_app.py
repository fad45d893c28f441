"""The web page's request handling: who a request acts as, CSRF, routes, errors.

Shell (STYLE §1, §6), on twisted.web. `WebApp` is the one resource of the site: every
request goes through `WebApp.render`, in this order, so that no route can skip a step:

1. the ``Host`` header must name this server (`chubbypy.web._http.HostCheck`), and a
   request a browser marks as sent by another site (``Origin``, ``Sec-Fetch-Site``) is
   refused;
2. every answer gets the security headers and ``Cache-Control: no-store``;
3. the route is found by method and path (404, 405 otherwise);
4. the visitor is found: the login of the ``chubby_login`` cookie, or anonymous (with a
   ``chubby_csrf`` cookie made on first visit, for the double-submit check);
5. a POST must carry the visitor's CSRF token (form field ``csrf`` or header
   ``X-CSRF-Token``), compared in constant time; GETs change nothing;
6. a POST's body must be a form (pages) or JSON (the API), JSON no deeper than
   ``web.json_depth_max``;
7. the handler runs as a coroutine; operating errors of the cell become
   ``{"error": CODE, "message": ...}`` (API) or an error page, with the HTTP status of
   `http_status`.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

from attrs import define, frozen
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure as TwistedFailure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from chubbypy.client import Cell
from chubbypy.config import CellConfig
from chubbypy.protocol.errors import ChubbyError, ErrorCode
from chubbypy.protocol.session import SessionInfo
from chubbypy.web._cellstatus import CellHistory
from chubbypy.web._http import HostCheck, json_depth, secure_headers
from chubbypy.web._live import LiveUpdates
from chubbypy.web._logins import Login, Logins

__all__ = [
    "ANONYMOUS",
    "Answer",
    "Context",
    "Html",
    "Json",
    "Redirect",
    "Route",
    "Server",
    "Streaming",
    "Visitor",
    "WebApp",
    "WebError",
    "http_status",
]

ANONYMOUS: Final = "anonymous"
LOGIN_COOKIE: Final = b"chubby_login"
CSRF_COOKIE: Final = b"chubby_csrf"
CSRF_FIELD: Final = "csrf"
CSRF_HEADER: Final = b"x-csrf-token"
FORM_TYPE: Final = "application/x-www-form-urlencoded"
JSON_TYPE: Final = "application/json"
QUERY_VALUES_MAX: Final = 256
"""Values in one request's query and form together (a stream's paths are bounded lower)."""

STATUS_OF_CODE: Final[Mapping[str, int]] = {
    "NO_SUCH_NODE": 404,
    "EXISTS": 409,
    "NOT_A_DIRECTORY": 409,
    "IS_A_DIRECTORY": 409,
    "NOT_EMPTY": 409,
    "GENERATION_MISMATCH": 409,
    "TOO_LARGE": 413,
    "INVALID_NAME": 400,
    "PERMISSION_DENIED": 403,
    "LOCK_HELD": 409,
    "LOCK_NOT_HELD": 409,
    "LOCK_DELAYED": 409,
    "SESSION_EXPIRED": 410,
    "INVALID_SEQUENCER": 409,
    "SESSION_REQUIRED": 400,
    "INVALID_HANDLE": 400,
    "NOT_MASTER": 503,
    "EPOCH_CHANGED": 503,
    "BUSY": 503,
    "UNKNOWN_CLIENT": 503,
    "STALE_REQUEST": 503,
    "UNAVAILABLE": 503,
    "RESOURCE_EXHAUSTED": 429,
    "SNAPSHOT_GONE": 503,
    "BAD_REQUEST": 400,
    # The web page's own codes (docs/web-api.md lists them).
    "NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "CSRF_REFUSED": 403,
    "CROSS_SITE_REFUSED": 403,
    "HOST_REFUSED": 421,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "TOO_MANY_REQUESTS": 429,
    "LOGIN_REQUIRED": 401,
    "LOGIN_ENDED": 401,
}
WEB_CODES: Final = tuple(code for code in STATUS_OF_CODE if code not in ErrorCode.__members__)


def http_status(code: str) -> int:
    """The HTTP status of an error code (the cell's or the page's)."""
    return STATUS_OF_CODE.get(code, 500 if code == "INTERNAL" else 502)


class WebError(Exception):
    """A request refused by the web page itself, with an API error code."""

    def __init__(self, code: str, message: str, *, draft: str | None = None) -> None:
        assert code in STATUS_OF_CODE, code
        super().__init__(message)
        self.code, self.message = code, message
        self.draft = draft
        """Text the visitor typed into the refused form, shown back so that none is lost."""


@frozen
class Visitor:
    """Who a request acts as."""

    principal: str
    cell: Cell | None
    """Their client of the cell; None for anonymous visitors of a cell that serves none."""
    login: Login | None
    csrf: str
    """The token a change must carry: the login's, or the anonymous visitor's cookie."""
    address: str
    login_ended: bool = False
    """The request carried a login cookie of a login that has ended (logged out elsewhere,
    or idle past web.login_idle_seconds): it acts as anonymous."""

    @property
    def logged_in(self) -> bool:
        return self.login is not None

    @property
    def owner(self) -> str:
        """Whose bounds (event streams) a request counts against."""
        return f"login:{self.login.login_id}" if self.login else f"address:{self.address}"

    def client(self) -> Cell:
        """The client to act through; `WebError` LOGIN_REQUIRED if there is none."""
        if self.cell is None:
            raise WebError(
                "LOGIN_REQUIRED", "this cell serves no anonymous clients (auth.anonymous): log in"
            )
        return self.cell


@frozen
class Json:
    document: Any
    status: int = 200


@frozen
class Html:
    body: bytes
    status: int = 200


@frozen
class Redirect:
    location: str


@frozen
class Streaming:
    """The handler took the request over (an event stream) and finishes it itself."""


Answer = Json | Html | Redirect | Streaming


@define
class Context:
    """One request, as a handler sees it."""

    request: Request
    visitor: Visitor
    query: dict[str, list[str]]
    """Query (and form) values, decoded."""
    body: Any
    """A JSON body, parsed (the API's POSTs); None otherwise."""
    app: WebApp

    def arg(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[-1] if values else default

    def int_arg(self, name: str, default: int, *, low: int = 0, high: int | None = None) -> int:
        text = self.arg(name)
        if not text:
            return default
        try:
            value = int(text)
        except ValueError:
            raise WebError(
                "BAD_REQUEST", f"{name} must be a whole number, not {text!r:.40}"
            ) from None
        if value < low or (high is not None and value > high):
            limit = f"{low} to {high}" if high is not None else f"at least {low}"
            raise WebError("BAD_REQUEST", f"{name} must be {limit}, not {value}")
        return value


Handler = Callable[[Context], Awaitable[Answer]]


class Server(Protocol):
    """What the API's and the pages' handlers use of the server that wires them
    (`chubbypy.web._server.WebServer`)."""

    config: CellConfig
    app: WebApp
    live: LiveUpdates
    history: CellHistory
    anonymous: Cell | None

    def clock_now(self) -> float: ...

    async def log_in(self, context: Context, principal: str, token: str) -> Login: ...

    async def log_out(self, context: Context) -> None: ...

    async def sessions_page(
        self, cell: Cell, after: int, limit: int
    ) -> tuple[tuple[SessionInfo, ...], bool]: ...


@frozen
class Route:
    method: str
    path: str
    handler: Handler
    api: bool
    """JSON in and out (under /api/); else a page (HTML, forms)."""


LOGIN_ROUTES: Final = ("/login", "/api/login")
LOGOUT_ROUTES: Final = ("/logout", "/api/logout")

ErrorPage = Callable[[Context | None, str, str, int, str | None], Awaitable[bytes]]
"""Renders an error page: the context (None before a visitor is known), code, message,
status, and text the visitor typed into the refused form (None: none)."""


class WebApp(Resource):
    """The site's one resource; see the module docstring."""

    isLeaf = True
    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        logins: Logins,
        anonymous: Cell | None,
        *,
        cell_name: str,
        json_depth_max: int,
        tls: bool,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.clock = clock
        self.logins = logins
        self.anonymous = anonymous
        self.cell_name = cell_name
        self.json_depth_max = json_depth_max
        self.tls = tls
        self.host_check: HostCheck | None = None
        """Set once the server listens (its port is known then)."""
        self.routes: dict[str, dict[str, Route]] = {}
        self.error_page: ErrorPage | None = None
        self.static: dict[str, tuple[bytes, bytes]] = {}
        """Path -> (content type, body) of the static files."""

    def add(self, method: str, path: str, handler: Handler, *, api: bool) -> None:
        assert path not in self.routes or method not in self.routes[path], (method, path)
        self.routes.setdefault(path, {})[method] = Route(method, path, handler, api)

    # ------------------------------------------------------------------ the pipeline

    def render(self, request: Request) -> bytes | int:
        path = request.path.decode("ascii", "replace")
        api = path.startswith("/api/")
        secure_headers(request, tls=self.tls, cache=path in self.static)
        refusal = self._refusal(request)
        if refusal is not None:
            return self._refuse(request, api, *refusal)
        if path in self.static and request.method in (b"GET", b"HEAD"):
            content_type, body = self.static[path]
            request.setHeader(b"content-type", content_type)
            return body
        methods = self.routes.get(path)
        method = request.method.decode("ascii", "replace")
        if method == "HEAD":
            method = "GET"  # twisted.web writes a HEAD's headers and leaves out the body
        route: Route | None
        if methods is None and not api and method == "GET":
            route = Route("GET", path, self._not_found, api=False)  # in the page's layout
        elif methods is None:
            return self._refuse(request, api, "NOT_FOUND", f"no page {path!r:.200}")
        else:
            route = methods.get(method)
        if route is None:
            assert methods is not None
            request.setHeader(b"allow", ", ".join(sorted(methods)).encode())
            return self._refuse(request, api, "METHOD_NOT_ALLOWED", "not with this method")
        Deferred.fromCoroutine(self._serve(request, route))
        return NOT_DONE_YET

    async def _not_found(self, context: Context) -> Answer:
        path = context.request.path.decode("ascii", "replace")
        raise WebError("NOT_FOUND", f"no page {path!r:.200}")

    def _refusal(self, request: Request) -> tuple[str, str] | None:
        """Why a request is refused before its route is looked at, or None."""
        hosts = request.requestHeaders.getRawHeaders(b"host") or []
        if len(hosts) > 1:  # RFC 9112 §3.2: one Host, or the request is refused
            return "HOST_REFUSED", "a request with more than one Host header"
        if self.host_check is None or not self.host_check.admits(request.getHeader(b"host")):
            return "HOST_REFUSED", "this server does not answer to that host name"
        origin = request.getHeader(b"origin")
        if origin is not None and origin != b"null":
            host = urlsplit(origin.decode("ascii", "replace")).netloc.encode()
            if not self.host_check.admits(host):
                return "CROSS_SITE_REFUSED", "a request sent by another site"
        if request.getHeader(b"sec-fetch-site") == b"cross-site":
            return "CROSS_SITE_REFUSED", "a request sent by another site"
        return None

    async def _serve(self, request: Request, route: Route) -> None:
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        context: Context | None = None
        try:
            context = self._context(request, route)
            answer = await route.handler(context)
        except WebError as error:
            answer = await self._error(context, route.api, error.code, error.message, error.draft)
        except ChubbyError as error:
            answer = await self._error(context, route.api, error.code.name, error.message)
        except CancelledError:
            return
        except Exception:
            self.log.failure("a request failed", TwistedFailure())  # type: ignore[no-untyped-call]
            answer = Json({"error": "INTERNAL", "message": "the page failed: see its log"}, 500)
        if gone or isinstance(answer, Streaming):
            return
        self._write(request, answer)

    def _context(self, request: Request, route: Route) -> Context:
        visitor = self._visitor(request)
        query = _decoded(request.args)
        body = None
        if request.method == b"POST":
            body = self._body(request, route)
            if visitor.login_ended and route.path in LOGOUT_ROUTES:
                return Context(request, visitor, query, body, self)  # nothing left to end
            if visitor.login_ended and route.path not in LOGIN_ROUTES:
                # Before the CSRF check, which the ended login's token would fail: say why.
                raise WebError(
                    "LOGIN_ENDED",
                    "your login has ended (you logged out elsewhere, or it was unused for "
                    "web.login_idle_seconds): this change was not made; log in again",
                    draft=None if route.api else query.get("contents", [None])[-1],
                )
            sent = (request.getHeader(CSRF_HEADER) or b"").decode("ascii", "replace")
            if not route.api and not sent:
                sent = query.get(CSRF_FIELD, [""])[-1]
            if not hmac.compare_digest(sent.encode(), visitor.csrf.encode()):
                raise WebError(
                    "CSRF_REFUSED",
                    "this change does not carry your page's CSRF token: reload the page and "
                    "try again (scripts: send the token of GET /api/whoami as X-CSRF-Token)",
                )
        return Context(request, visitor, query, body, self)

    def _visitor(self, request: Request) -> Visitor:
        address = _address(request)
        login = self.logins.find(_cookie(request, LOGIN_COOKIE))
        if login is not None:
            return Visitor(login.principal, login.cell, login, login.csrf, address)
        ended = bool(request.getCookie(LOGIN_COOKIE))
        if ended:
            self.clear_login_cookie(request)  # ended (idle or logged out elsewhere)
        csrf = _cookie(request, CSRF_COOKIE)
        if csrf is None or len(csrf) < 32:
            csrf = secrets.token_urlsafe(32)
            self._set_cookie(request, CSRF_COOKIE, csrf.encode())
        return Visitor(ANONYMOUS, self.anonymous, None, csrf, address, login_ended=ended)

    def _body(self, request: Request, route: Route) -> Any:
        content_type = (request.getHeader(b"content-type") or b"").decode("ascii", "replace")
        media = content_type.split(";", 1)[0].strip().lower()
        expected = JSON_TYPE if route.api else FORM_TYPE
        if media != expected:
            raise WebError("UNSUPPORTED_MEDIA_TYPE", f"send {expected}, not {media or 'nothing'}")
        if not route.api:
            return None  # twisted.web parsed the form into request.args
        text = request.content.read() if request.content is not None else b""
        if not text.strip():
            return {}
        if json_depth(text) > self.json_depth_max:
            raise WebError(
                "BAD_REQUEST", f"JSON nested deeper than {self.json_depth_max} (web.json_depth_max)"
            )
        try:
            return json.loads(text)
        except (ValueError, RecursionError) as error:
            raise WebError("BAD_REQUEST", f"the body is not JSON: {error}") from None

    # ------------------------------------------------------------------ answers

    async def _error(
        self, context: Context | None, api: bool, code: str, message: str, draft: str | None = None
    ) -> Answer:
        status = http_status(code)
        if api or self.error_page is None:
            return Json({"error": code, "message": message}, status)
        try:
            return Html(await self.error_page(context, code, message, status, draft), status)
        except Exception:  # the error page itself failed: answer plainly rather than hang
            self.log.failure("an error page failed", TwistedFailure())  # type: ignore[no-untyped-call]
            return Json({"error": code, "message": message}, status)

    def _refuse(self, request: Request, api: bool, code: str, message: str) -> bytes:
        request.setResponseCode(http_status(code))
        if api or code in ("HOST_REFUSED", "CROSS_SITE_REFUSED"):
            request.setHeader(b"content-type", b"application/json")
            return json.dumps({"error": code, "message": message}).encode()
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return f"{code}: {message}\n".encode()

    def _write(self, request: Request, answer: Answer) -> None:
        match answer:
            case Json(document, status):
                request.setResponseCode(status)
                request.setHeader(b"content-type", b"application/json")
                request.write(json.dumps(document, ensure_ascii=False).encode())
            case Html(body, status):
                request.setResponseCode(status)
                request.setHeader(b"content-type", b"text/html; charset=utf-8")
                request.write(body)
            case Redirect(location):
                request.setResponseCode(303)
                request.setHeader(b"location", location.encode())
            case Streaming():
                return
        request.finish()

    # ------------------------------------------------------------------ cookies

    def set_login_cookie(self, request: Request, login: Login) -> None:
        self._set_cookie(request, LOGIN_COOKIE, login.login_id.encode())

    def clear_login_cookie(self, request: Request) -> None:
        self._set_cookie(request, LOGIN_COOKIE, b"", max_age=0)

    def _set_cookie(
        self, request: Request, name: bytes, value: bytes, max_age: int | None = None
    ) -> None:
        request.addCookie(
            name,
            value,
            path=b"/",
            max_age=None if max_age is None else str(max_age).encode(),
            secure=self.tls or None,
            httpOnly=True,
            sameSite=b"strict",
        )


def _cookie(request: Request, name: bytes) -> str | None:
    value: bytes | None = request.getCookie(name)
    if not value:
        return None
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        return None


def _address(request: Request) -> str:
    client = request.getClientAddress()
    return str(getattr(client, "host", "unknown"))


def _decoded(args: Mapping[bytes, list[bytes]]) -> dict[str, list[str]]:
    """Query and form values as text; `WebError` for bytes that are not UTF-8 or too many."""
    if sum(len(values) for values in args.values()) > QUERY_VALUES_MAX:
        raise WebError("BAD_REQUEST", f"more than {QUERY_VALUES_MAX} query and form values")
    try:
        return {
            key.decode("utf-8"): [value.decode("utf-8") for value in values]
            for key, values in args.items()
        }
    except UnicodeDecodeError:
        raise WebError("BAD_REQUEST", "query or form values that are not UTF-8") from None
