"""The JSON API under ``/api/``: what the page's script uses, and what scripts can use too.

Shell (STYLE §1). Each handler reads its parameters (strictly: a wrong type is a
``BAD_REQUEST`` naming the field), makes the visitor's client calls through
`chubbypy.web._reads` or the client's writes, and answers JSON. ``docs/web-api.md``
documents every route (a test keeps it in step with `API_ROUTES`); errors are
``{"error": CODE, "message": ...}`` with the cell's error codes and a few of the page's own.
"""

from __future__ import annotations

import base64
import binascii
import difflib
from collections.abc import Iterable
from typing import Any, Final

from chubbypy.cli import bytes_json, lock_json, session_json, stat_json
from chubbypy.protocol.errors import GenerationMismatch
from chubbypy.protocol.namespace import AclNames, Stat
from chubbypy.web._app import Answer, Context, Json, Server, Streaming, WebError
from chubbypy.web._cellstatus import CellHistory
from chubbypy.web._live import StreamRefused, refuse_stream
from chubbypy.web._reads import (
    acl_view,
    contents_page,
    directory_page,
    lock_modes,
    node_view,
    unknown_acl_names,
)

__all__ = ["API_ROUTES", "Api", "conflict_diff", "entry_json"]

API_ROUTES: Final = (
    ("GET", "/api/whoami"),
    ("POST", "/api/login"),
    ("POST", "/api/logout"),
    ("GET", "/api/dir"),
    ("GET", "/api/node"),
    ("GET", "/api/acl"),
    ("GET", "/api/lock"),
    ("GET", "/api/sessions"),
    ("GET", "/api/cell"),
    ("GET", "/api/events"),
    ("POST", "/api/create"),
    ("POST", "/api/set-contents"),
    ("POST", "/api/delete"),
    ("POST", "/api/set-acl"),
    ("POST", "/api/end-session"),
)
"""Every route of the API, as ``docs/web-api.md`` lists them."""

DIFF_LINES_MAX: Final = 2000


def entry_json(
    directory: str, name: str, stat: Stat | None, lock_mode: str = "free"
) -> dict[str, Any]:
    return {
        "name": name,
        "path": f"{directory}/{name}",
        "stat": None if stat is None else stat_json(stat),
        "lock_mode": lock_mode,
    }


def conflict_diff(current: bytes, yours: bytes, generation: int) -> str | None:
    """A unified diff from what the cell holds now to an edit of an older version (None
    unless both are text), at most `DIFF_LINES_MAX` lines."""
    try:
        now, edited = current.decode("utf-8"), yours.decode("utf-8")
    except UnicodeDecodeError:
        return None
    lines = difflib.unified_diff(
        now.splitlines(keepends=True),
        edited.splitlines(keepends=True),
        fromfile=f"in the cell now (content generation {generation})",
        tofile="your edit",
    )
    shown = []
    for count, line in enumerate(lines):
        if count == DIFF_LINES_MAX:
            shown.append(f"... (the diff goes on; {DIFF_LINES_MAX} lines shown)\n")
            break
        shown.append(line if line.endswith("\n") else line + "\n")
    return "".join(shown)


def _string(body: Any, name: str, *, required: bool = True, default: str = "") -> str:
    value = body.get(name, None) if isinstance(body, dict) else None
    if value is None:
        if required:
            raise WebError("BAD_REQUEST", f"{name} is missing: a string is expected")
        return default
    if not isinstance(value, str):
        raise WebError("BAD_REQUEST", f"{name} must be a string")
    return value


def _integer(body: Any, name: str) -> int | None:
    value = body.get(name) if isinstance(body, dict) else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise WebError("BAD_REQUEST", f"{name} must be a whole number or null")
    if not 0 <= value < 1 << 63:
        raise WebError("BAD_REQUEST", f"{name} is out of range")
    return value


def _boolean(body: Any, name: str) -> bool:
    value = body.get(name, False) if isinstance(body, dict) else False
    if not isinstance(value, bool):
        raise WebError("BAD_REQUEST", f"{name} must be true or false")
    return value


def _contents(body: Any) -> bytes:
    """The ``contents`` of a write, in its ``encoding`` (utf-8, the default, or base64)."""
    text = _string(body, "contents", required=False)
    encoding = _string(body, "encoding", required=False, default="utf-8")
    if encoding == "utf-8":
        return text.encode("utf-8", "surrogatepass")
    if encoding == "base64":
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise WebError("BAD_REQUEST", "contents are not valid base64") from None
    raise WebError("BAD_REQUEST", f"encoding must be utf-8 or base64, not {encoding!r:.40}")


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise WebError("BAD_REQUEST", "the body must be a JSON object")
    return body


class Api:
    """The handlers of `API_ROUTES`."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.web = server.config.web

    def register(self) -> None:
        handlers = {
            "/api/whoami": self.whoami,
            "/api/login": self.login,
            "/api/logout": self.logout,
            "/api/dir": self.directory,
            "/api/node": self.node,
            "/api/acl": self.acl,
            "/api/lock": self.lock,
            "/api/sessions": self.sessions,
            "/api/cell": self.cell,
            "/api/events": self.events,
            "/api/create": self.create,
            "/api/set-contents": self.set_contents,
            "/api/delete": self.delete,
            "/api/set-acl": self.set_acl,
            "/api/end-session": self.end_session,
        }
        for method, path in API_ROUTES:
            self.server.app.add(method, path, handlers[path], api=True)

    def _path(self, context: Context) -> str:
        return context.arg("path") or f"/ls/{self.server.config.cell}"

    # ------------------------------------------------------------------ who

    async def whoami(self, context: Context) -> Answer:
        visitor = context.visitor
        return Json(
            {
                "principal": visitor.principal,
                "logged_in": visitor.logged_in,
                "csrf": visitor.csrf,
                "anonymous_allowed": self.server.anonymous is not None,
                "cell": self.server.config.cell,
            }
        )

    async def login(self, context: Context) -> Answer:
        body = _object(context.body)
        login = await self.server.log_in(
            context, _string(body, "principal"), _string(body, "token")
        )
        return Json({"principal": login.principal, "csrf": login.csrf})

    async def logout(self, context: Context) -> Answer:
        await self.server.log_out(context)
        return Json({"logged_out": True})

    # ------------------------------------------------------------------ reads

    async def directory(self, context: Context) -> Answer:
        page = await directory_page(
            context.visitor.client(),
            self._path(context),
            after=context.arg("after"),
            prefix=context.arg("prefix"),
            limit=context.int_arg(
                "limit", self.web.children_per_page, low=1, high=self.web.children_per_page
            ),
        )
        modes = await lock_modes(context.visitor.client(), page)
        entries = [
            entry_json(page.path, e.name, e.stat, modes.get(e.name, "free")) for e in page.entries
        ]
        return Json(
            {
                "path": page.path,
                "stat": stat_json(page.stat),
                "entries": entries,
                "more": page.more,
                "next_after": page.next_after,
            }
        )

    async def node(self, context: Context) -> Answer:
        view = await node_view(context.visitor.client(), self._path(context))
        shown = self.web.contents_shown_bytes_max
        document: dict[str, Any] = {"path": view.path, "stat": stat_json(view.stat)}
        if view.contents is None:
            document["contents"] = None
            return Json(document)
        page = contents_page(
            view.contents,
            context.int_arg("offset", 0),
            context.int_arg("length", shown, low=1, high=shown),
        )
        document["contents"] = {
            **(bytes_json(page.data) if page.is_text else _base64(page.data)),
            "offset": page.offset,
            "length": len(page.data),
            "size": page.size,
            "more": page.more,
        }
        return Json(document)

    async def acl(self, context: Context) -> Answer:
        cell = context.visitor.client()
        path = self._path(context)
        stat = await cell.get_stat(path)
        views = await acl_view(cell, stat.acl)
        return Json(
            {
                "path": path,
                "acl_generation": stat.acl_generation,
                "acl": [
                    {
                        "role": v.role,
                        "name": v.name,
                        "file": v.path,
                        "principals": None if v.principals is None else list(v.principals),
                        "admits": v.note,
                    }
                    for v in views
                ],
            }
        )

    async def lock(self, context: Context) -> Answer:
        path = self._path(context)
        info = await context.visitor.client().lock_info(path)
        return Json({"path": path, **lock_json(info)})

    async def sessions(self, context: Context) -> Answer:
        after = context.int_arg("after", 0)
        per_page = self.web.sessions_per_page
        limit = context.int_arg("limit", per_page, low=1, high=per_page)
        listed, more = await self.server.sessions_page(context.visitor.client(), after, limit)
        return Json(
            {
                "sessions": [session_json(info) for info in listed],
                "more": more,
                "next_after": listed[-1].session_id if more and listed else None,
            }
        )

    async def cell(self, context: Context) -> Answer:
        return Json(
            cell_json(self.server.history, self.server.config.cell, self.server.clock_now())
        )

    async def events(self, context: Context) -> Answer:
        visitor = context.visitor
        try:
            cell = visitor.client()
            paths = self.server.live.check(visitor.owner, context.query.get("path", []))
        except (WebError, StreamRefused) as refused:
            if refused.code == "BAD_REQUEST":  # a script's mistake: retrying will not help
                raise WebError(refused.code, refused.message) from None
            refuse_stream(context.request, refused.code, refused.message)
            return Streaming()
        key = visitor.login.login_id if visitor.login is not None else "anonymous"
        self.server.live.open(context.request, visitor.owner, key, cell, paths)
        return Streaming()

    # ------------------------------------------------------------------ writes

    async def create(self, context: Context) -> Answer:
        body = _object(context.body)
        acl = body.get("acl")
        names = None
        if acl is not None:
            names = AclNames(_string(acl, "read"), _string(acl, "write"), _string(acl, "change"))
        path = _string(body, "path")
        stat = await context.visitor.client().create(
            path, _contents(body), directory=_boolean(body, "directory"), acl=names
        )
        return Json({"path": path, "stat": stat_json(stat)})

    async def set_contents(self, context: Context) -> Answer:
        body = _object(context.body)
        path = _string(body, "path")
        contents = _contents(body)
        expected = _integer(body, "expected_generation")
        cell = context.visitor.client()
        try:
            stat = await cell.set_contents(path, contents, expected)
        except GenerationMismatch as mismatch:
            return await self._conflict(context, path, contents, mismatch)
        return Json({"path": path, "stat": stat_json(stat)})

    async def _conflict(
        self, context: Context, path: str, yours: bytes, mismatch: GenerationMismatch
    ) -> Answer:
        now = await context.visitor.client().get_contents_and_stat(path)
        shown = contents_page(now.contents, 0, self.web.contents_shown_bytes_max)
        return Json(
            {
                "error": "GENERATION_MISMATCH",
                "message": mismatch.message,
                "current": {
                    "stat": stat_json(now.stat),
                    "contents": {
                        **(bytes_json(shown.data) if shown.is_text else _base64(shown.data)),
                        "size": shown.size,
                        "more": shown.more,
                    },
                },
                "diff": conflict_diff(now.contents, yours, now.stat.content_generation),
            },
            409,
        )

    async def delete(self, context: Context) -> Answer:
        body = _object(context.body)
        path = _string(body, "path")
        await context.visitor.client().delete(path, _integer(body, "expected_instance"))
        return Json({"path": path, "deleted": True})

    async def set_acl(self, context: Context) -> Answer:
        body = _object(context.body)
        path = _string(body, "path")
        names = AclNames(_string(body, "read"), _string(body, "write"), _string(body, "change"))
        cell = context.visitor.client()
        stat = await cell.set_acl(path, names, _integer(body, "expected_generation"))
        warnings = await unknown_acl_names(cell, names)
        return Json({"path": path, "stat": stat_json(stat), "warnings": list(warnings)})

    async def end_session(self, context: Context) -> Answer:
        body = _object(context.body)
        session_id = _integer(body, "session_id")
        if session_id is None:
            raise WebError("BAD_REQUEST", "session_id is missing: a whole number is expected")
        ending = await context.visitor.client().end_session(session_id)
        return Json(
            {
                "session_id": session_id,
                "found": ending.found,
                "already": ending.already,
                "ends_in_ms": ending.ends_in_ms,
            }
        )


def _base64(data: bytes) -> dict[str, str]:
    return {"encoding": "base64", "data": base64.b64encode(data).decode("ascii")}


def cell_json(history: CellHistory, cell: str, now: float) -> dict[str, Any]:
    """The cell page's figures: each replica as its admin port last said, and the charts."""
    latest = history.latest
    replicas = []
    applied = [
        int(s.status.get("applied_index", 0))
        for s in (latest.replicas.values() if latest else ())
        if s.status is not None
    ]
    top = max(applied, default=0)
    serving = latest.master() if latest else None
    by_master = history.last_compared(latest, serving[0]) if serving else {}
    for rid in history.replica_ids:
        sample = latest.replicas.get(rid) if latest else None
        status = sample.status if sample else None
        metrics = sample.metrics if sample else None
        compared_at = history.compared_at(rid)
        ago = None if compared_at is None else round(now - compared_at, 1)
        summary, bad = checksum_summary(
            rid, serving[0] if serving else None, by_master, metrics, status, ago
        )
        replicas.append(
            {
                "replica_id": rid,
                "reachable": status is not None,
                "problem": sample.problem if sample else "not asked yet",
                "status": dict(status) if status is not None else None,
                "lag": None if status is None else top - int(status.get("applied_index", 0)),
                "checksum_comparisons": _metric(metrics, "chubbypy_checksum_comparisons_total"),
                "checksum_mismatches": _metric(metrics, "chubbypy_checksum_mismatches_total"),
                "last_comparison_seconds_ago": ago,
                "checksum_summary": summary,
                "checksum_bad": bad,
            }
        )
    master = history.last_master()
    points = history.points()
    return {
        "cell": cell,
        "master": master[0] if master else None,
        "epoch": master[1] if master else None,
        "replicas": replicas,
        "charts": {
            "seconds_ago": [round(now - p.time, 1) for p in points],
            "writes_per_second": [round(p.writes_per_second, 2) for p in points],
            "reads_per_second": [round(p.reads_per_second, 2) for p in points],
            "write_p99_ms": _rounded(p.write_p99_ms for p in points),
            "read_p99_ms": _rounded(p.read_p99_ms for p in points),
            "fsync_p99_ms": _rounded(p.fsync_p99_ms for p in points),
            "sessions": [p.sessions for p in points],
        },
    }


def checksum_summary(
    replica: str,
    master: str | None,
    by_master: dict[str, tuple[int, bool]],
    metrics: Any,
    status: Any,
    ago: float | None,
) -> tuple[str, bool]:
    """What the cell page says of `replica`'s state checksums, and whether it is bad news:
    for the serving master, how many it compared and how many differed; for a follower, the
    master's last comparison of its checksum (the master alone compares: Paxos Made Live
    §6.2). A replica that reports a divergence (its /status) is bad whatever else."""
    when = f", {ago:g} s ago" if ago is not None else ""
    diverged = bool(status and status.get("divergence"))
    if master is None:
        text = "no master compares now"
    elif replica == master:
        compared = int(_metric(metrics, "chubbypy_checksum_comparisons_total") or 0)
        mismatched = int(_metric(metrics, "chubbypy_checksum_mismatches_total") or 0)
        text = f"master: compared {compared:,} follower checksums{when}" + (
            f"; {mismatched:,} DIFFERED" if mismatched else ""
        )
        diverged = diverged or mismatched > 0
    elif replica in by_master:
        index, matched = by_master[replica]
        text = f"{'matched' if matched else 'DIFFERED from'} the master's at index {index:,}{when}"
        diverged = diverged or not matched
    else:
        text = "not compared by this master yet"
    if diverged and "DIFFERED" not in text:
        text += "; DIVERGED (see its /status)"
    return text, diverged


def _rounded(values: Iterable[float | None]) -> list[float | None]:
    return [None if value is None else round(value, 3) for value in values]


def _metric(metrics: Any, name: str) -> float | None:
    if metrics is None or name not in metrics:
        return None
    value: float = metrics[name].get((), None)
    return value
