"""The web page's JSON API against a real cell: permissions per principal, paging, CAS,
CSRF, foreign hosts, unknown paths, huge contents, locks, sessions, live events, limits.

One cell and one ``chubbypy web`` for the module (port 7481), and a second web process
with small limits (port 7482) for the tests of the limits.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, Final
from urllib.parse import urlencode

import pytest

from chubbypy.client import HandleMode
from chubbypy.protocol.namespace import AclNames, Create
from chubbypy.server._certificates import issue_replica_certificate, new_authority
from tests.integration.harness import LiveCell, Measure
from tests.integration.web_harness import (
    EventReader,
    WebClient,
    WebProcess,
    cookie_header,
    raw_request,
)

CHILDREN: Final = 250
BIG_BYTES: Final = 256 * 1024
OPS = AclNames("ops", "ops", "ops")
LEASE_SECONDS: Final = 5.0
"""The cell's session lease (an ended session's locks pass on when it runs out)."""


@pytest.fixture(scope="module")
def cell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCell]:
    """A cell with principals operator and alice, an ACL 'ops' (operator only), a protected
    /secret, and a /public with 250 children, a 256 KiB file and a binary one."""
    live = LiveCell(
        tmp_path_factory.mktemp("web-api"),
        auth={"principals": {"alice": {"token_file": "_secrets/alice.token"}}},
        sessions={"lease_seconds": LEASE_SECONDS, "keepalive_answer_before_seconds": 1.5},
    )
    live.start()
    try:
        operator = live.client(principal=live.operator[0], token=live.operator[1])
        operator.create(live.path("acl/ops"), b"operator\n")
        operator.create(live.path("secret"), directory=True, acl=OPS)
        operator.create(live.path("secret/plan"), b"the plan", acl=OPS)
        operator.create(live.path("public"), directory=True)
        operator.create(live.path("public/many"), directory=True)
        names = [f"n{i:04d}" for i in range(CHILDREN)]
        for start in range(0, CHILDREN, 50):
            batch = [
                Create(live.path(f"public/many/{n}"), contents=n.encode())
                for n in names[start : start + 50]
            ]
            operator.multi_op([], batch)
        operator.create(live.path("public/big"), (b"0123456789abcdef" * (BIG_BYTES // 16)))
        operator.create(live.path("public/bin"), bytes(range(256)) * 4)
        operator.create(live.path("public/doc"), b"first line\nsecond line\n")
        yield live
    finally:
        live.close()


@pytest.fixture(scope="module")
def web(cell: LiveCell) -> Iterator[WebProcess]:
    process = WebProcess(cell)
    yield process
    assert process.stop() == 0, process.logs()


@pytest.fixture
def visitor(web: WebProcess) -> WebClient:
    return web.client()


def token_of(cell: LiveCell, principal: str) -> str:
    return (cell.data_dir / "_secrets" / f"{principal}.token").read_text().strip()


# ----------------------------------------------------------------------------- the edge


def test_every_answer_carries_the_security_headers(visitor: WebClient) -> None:
    """Pages, API answers, errors and static files forbid framing, sniffing, inline
    script and referrers; data is never cached; cookies are HttpOnly and SameSite=Strict."""
    for path in ("/tree", "/api/whoami", "/api/nope", "/static/app.js"):
        answer = visitor.get(path)
        headers = answer.headers
        assert headers["content-security-policy"].startswith("default-src 'self'"), path
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        if not path.startswith("/static/"):
            assert headers["cache-control"] == "no-store", path
    cookie = visitor.get("/api/whoami").cookies or WebClient(visitor.base).get("/tree").cookies
    assert cookie, "the first visit sets the CSRF cookie"
    assert all("HttpOnly" in c and "SameSite=strict" in c and "Path=/" in c for c in cookie)
    assert not any("Secure" in c for c in cookie)  # served over plain http here
    page = visitor.get("/tree").text
    assert '<script src="/static/app.js"' in page
    assert "<script>" not in page
    assert " style=" not in page


def test_a_foreign_host_or_another_sites_request_is_refused(web: WebProcess) -> None:
    """DNS rebinding (a Host that is not this server, or two Hosts) gets 421; a browser's
    cross-site request (Origin of another host, Sec-Fetch-Site cross-site) gets 403."""
    status, body = raw_request(web.port, "GET", "/api/whoami", {"Host": f"evil.example:{web.port}"})
    assert (status, json.loads(body)["error"]) == (421, "HOST_REFUSED")
    status, _ = raw_request(web.port, "GET", "/tree", {})
    assert status == 421  # no Host at all
    local = {"Host": f"127.0.0.1:{web.port}"}
    cross = {**local, "Origin": "http://evil.example", "Content-Type": "application/json"}
    status, body = raw_request(web.port, "POST", "/api/create", cross, b"{}")
    assert (status, json.loads(body)["error"]) == (403, "CROSS_SITE_REFUSED")
    status, _ = raw_request(
        web.port, "GET", "/api/whoami", {**local, "Sec-Fetch-Site": "cross-site"}
    )
    assert status == 403
    status, _ = raw_request(web.port, "GET", "/api/whoami", {"Host": f"localhost:{web.port}"})
    assert status == 200
    with socket.create_connection(("127.0.0.1", web.port), timeout=15) as two_hosts:
        two_hosts.sendall(
            f"GET /api/whoami HTTP/1.1\r\nHost: evil.example\r\nHost: 127.0.0.1:{web.port}"
            "\r\nConnection: close\r\n\r\n".encode()
        )
        assert two_hosts.makefile("rb").readline().split()[1] == b"421"  # not the last one's


def test_unknown_routes_methods_and_paths(visitor: WebClient, cell: LiveCell) -> None:
    """Unknown routes 404, wrong methods 405 with Allow, missing nodes NO_SUCH_NODE, a name
    outside the cell INVALID_NAME, a file listed as a directory NOT_A_DIRECTORY."""
    assert (visitor.get("/api/nope").status, visitor.get("/api/nope").json()["error"]) == (
        404,
        "NOT_FOUND",
    )
    wrong = visitor.request("DELETE", "/api/node")
    assert (wrong.status, wrong.headers["allow"]) == (405, "GET")
    missing = visitor.get("/api/node", path=cell.path("public/absent"))
    assert (missing.status, missing.json()["error"]) == (404, "NO_SUCH_NODE")
    other = visitor.get("/api/node", path="/ls/othercell/x")
    assert (other.status, other.json()["error"]) == (400, "INVALID_NAME")
    file_as_dir = visitor.get("/api/dir", path=cell.path("public/doc"))
    assert (file_as_dir.status, file_as_dir.json()["error"]) == (409, "NOT_A_DIRECTORY")
    bad_number = visitor.get("/api/node", path=cell.path("public/doc"), offset="x")
    assert (bad_number.status, bad_number.json()["error"]) == (400, "BAD_REQUEST")
    page = visitor.get("/node", path=cell.path("public/absent"))
    assert page.status == 404
    assert "NO_SUCH_NODE" in page.text
    assert "<!DOCTYPE html>" in page.text


# ----------------------------------------------------------------------------- reads


def test_directories_page_and_search_by_prefix(
    visitor: WebClient, cell: LiveCell, measure: Measure
) -> None:
    """A directory pages in name order (limit, next_after) and is searched by prefix."""
    path = cell.path("public/many")
    names: list[str] = []
    after = ""
    started = time.monotonic()
    while True:
        page = visitor.get("/api/dir", path=path, after=after, limit=100).json()
        names += [entry["name"] for entry in page["entries"]]
        if not page["more"]:
            break
        after = page["next_after"]
    measure("web: 250 children in three API pages", time.monotonic() - started)
    assert names == [f"n{i:04d}" for i in range(CHILDREN)]
    assert page["stat"]["size"] == CHILDREN
    found = visitor.get("/api/dir", path=path, prefix="n012").json()
    assert [e["name"] for e in found["entries"]] == [f"n012{i}" for i in range(10)]
    assert not found["more"]
    exact = visitor.get("/api/dir", path=path, prefix="n0010", limit=1).json()
    assert ([e["name"] for e in exact["entries"]], exact["more"]) == (["n0010"], False)
    over = visitor.get("/api/dir", path=path, limit=201)
    assert (over.status, over.json()["error"]) == (400, "BAD_REQUEST")  # web.children_per_page
    assert visitor.get("/api/dir", path=path, prefix="a/b").json()["error"] == "INVALID_NAME"
    tree = visitor.get("/tree", path=path)
    assert tree.status == 200
    assert "n0199/" not in tree.text
    assert ">n0199<" in tree.text
    assert ">n0200<" not in tree.text
    assert "after=n0199" in tree.text  # the link to the next page


def test_huge_and_binary_contents_are_paged(visitor: WebClient, cell: LiveCell) -> None:
    """A 256 KiB file comes in pages of web.contents_shown_bytes_max with its size; binary
    contents come as base64; the pages put together are the file."""
    whole = b""
    offset = 0
    while True:
        node = visitor.get("/api/node", path=cell.path("public/big"), offset=offset).json()
        contents = node["contents"]
        assert contents["size"] == BIG_BYTES
        assert contents["encoding"] == "utf-8"
        assert contents["length"] <= 65536
        whole += contents["data"].encode()
        offset = contents["offset"] + contents["length"]
        if not contents["more"]:
            break
    assert whole == b"0123456789abcdef" * (BIG_BYTES // 16)
    binary = visitor.get("/api/node", path=cell.path("public/bin"), length=16).json()["contents"]
    assert (binary["encoding"], binary["data"], binary["size"]) == (
        "base64",
        "AAECAwQFBgcICQoLDA0ODw==",
        1024,
    )
    page = visitor.get("/node", path=cell.path("public/big")).text
    assert "262,144 bytes; bytes 0 to 65,536 shown" in page
    hexed = visitor.get("/node", path=cell.path("public/bin"), view="hex").text
    assert "00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f" in hexed


def test_contents_are_shown_as_text_never_as_markup(visitor: WebClient, cell: LiveCell) -> None:
    """A file of HTML and script, and a session name of markup, appear escaped."""
    attack = b'<script>alert(1)</script><img src=x onerror="alert(2)">'
    operator = cell.client(principal=cell.operator[0], token=cell.operator[1])
    operator.create(cell.path("public/attack<b>"[:-3] + "-x"), attack)  # names are [A-Za-z0-9._-]
    page = visitor.get("/node", path=cell.path("public/attack-x")).text
    assert "<script>alert(1)" not in page
    assert "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    pretty = visitor.get("/node", path=cell.path("public/attack-x"), view="json").text
    assert "not JSON" in pretty


def test_anonymous_sees_names_not_protected_metadata_or_contents(
    visitor: WebClient, cell: LiveCell
) -> None:
    """The cell's ACLs decide: a protected child is listed without metadata, its contents
    are refused, and an anonymous write into it changes nothing."""
    root = visitor.get("/api/dir", path=cell.path()).json()
    secret = next(e for e in root["entries"] if e["name"] == "secret")
    assert secret["stat"] is None
    refused = visitor.get("/api/node", path=cell.path("secret/plan"))
    assert (refused.status, refused.json()["error"]) == (403, "PERMISSION_DENIED")
    write = visitor.post("/api/create", {"path": cell.path("secret/mine"), "contents": "x"})
    assert (write.status, write.json()["error"]) == (403, "PERMISSION_DENIED")
    operator = cell.client(principal=cell.operator[0], token=cell.operator[1])
    assert [e.name for e in operator.list_dir(cell.path("secret"))] == ["plan"]
    assert visitor.get("/api/acl", path=cell.path("secret")).json()["error"] == "PERMISSION_DENIED"
    acl = visitor.get("/api/acl", path=cell.path("acl/ops")).json()["acl"]
    assert [(a["role"], a["name"], a["principals"], a["admits"]) for a in acl] == [
        ("read", "all", None, "everyone (it has no file)"),
        ("write", "admin", ["operator"], "operator"),
        ("change", "admin", ["operator"], "operator"),
    ]


def test_a_login_acts_as_its_principal(web: WebProcess, cell: LiveCell) -> None:
    """The operator's login reads what anonymous may not; alice's does not; a wrong token
    is refused by the cell; logging out ends the login and its cookie is worth nothing."""
    operator, alice = web.client(), web.client()
    wrong = operator.login("operator", "not-the-token-at-all")
    assert (wrong.status, wrong.json()["error"]) == (403, "PERMISSION_DENIED")
    assert "not-the-token-at-all" not in wrong.text  # never echoed
    assert operator.get("/api/whoami").json()["principal"] == "anonymous"
    done = operator.login("operator", token_of(cell, "operator"))
    assert done.status == 200
    assert done.json()["principal"] == "operator"
    login_cookie = next(c for c in done.cookies if c.startswith("chubby_login="))
    assert len(login_cookie.split(";")[0].split("=")[1]) == 64  # 256 random bits, in hex
    assert token_of(cell, "operator") not in "".join(done.cookies)
    assert (
        operator.get("/api/node", path=cell.path("secret/plan")).json()["contents"]["data"]
        == "the plan"
    )
    assert alice.login("alice", token_of(cell, "alice")).status == 200
    assert alice.get("/api/node", path=cell.path("secret/plan")).status == 403
    assert alice.get("/api/whoami").json()["principal"] == "alice"
    stolen = cookie_header(operator)
    assert operator.post("/api/logout", {}).json() == {"logged_out": True}
    assert operator.get("/api/whoami").json()["principal"] == "anonymous"
    status, body = raw_request(
        web.port, "GET", "/api/whoami", {"Host": f"127.0.0.1:{web.port}", "Cookie": stolen}
    )
    assert (status, json.loads(body)["principal"]) == (200, "anonymous")


# ----------------------------------------------------------------------------- changes


def test_changes_need_the_csrf_token(visitor: WebClient, cell: LiveCell) -> None:
    """A change without the token, or with another visitor's, is refused and changes
    nothing; GETs change nothing; with the token the same change is made."""
    path = cell.path("public/csrf-test")
    missing = visitor.post("/api/create", {"path": path}, token=False)
    assert (missing.status, missing.json()["error"]) == (403, "CSRF_REFUSED")
    other = WebClient(visitor.base).csrf()
    forged = visitor.post("/api/create", {"path": path}, csrf=other)
    assert forged.json()["error"] == "CSRF_REFUSED"
    form = visitor.form(
        "/create", {"parent": cell.path("public"), "name": "csrf-test"}, token=False
    )
    assert form.status == 403
    assert "CSRF_REFUSED" in form.text
    assert visitor.get("/api/node", path=path).status == 404
    assert visitor.request("GET", "/create").status == 405
    made = visitor.form(
        "/create", {"parent": cell.path("public"), "name": "csrf-test", "contents": "hi"}
    )
    assert made.status == 200
    assert "Created file" in made.text
    assert visitor.get("/api/node", path=path).json()["contents"]["data"] == "hi"
    wrong_type = visitor.request(
        "POST",
        "/api/delete",
        body=b"path=x",
        headers={"Content-Type": "text/plain", "X-CSRF-Token": visitor.csrf()},
    )
    assert (wrong_type.status, wrong_type.json()["error"]) == (415, "UNSUPPORTED_MEDIA_TYPE")


def test_a_stale_edit_is_refused_and_shows_what_changed(visitor: WebClient, cell: LiveCell) -> None:
    """Compare-and-swap on the content generation: an edit of an older version gets 409
    with the current contents and a diff, and the file keeps the other client's write."""
    path = cell.path("public/doc")
    seen = visitor.get("/api/node", path=path).json()["stat"]["content_generation"]
    other = cell.client()
    other.set_contents(path, b"first line\nchanged by another client\n")
    stale = visitor.post(
        "/api/set-contents",
        {"path": path, "contents": "first line\nmine\n", "expected_generation": seen},
    )
    assert stale.status == 409
    document = stale.json()
    assert document["error"] == "GENERATION_MISMATCH"
    assert document["current"]["contents"]["data"] == "first line\nchanged by another client\n"
    assert "-changed by another client\n+mine\n" in document["diff"]
    assert other.get_contents_and_stat(path).contents == b"first line\nchanged by another client\n"
    fresh = document["current"]["stat"]["content_generation"]
    saved = visitor.post(
        "/api/set-contents",
        {"path": path, "contents": "first line\nmine\n", "expected_generation": fresh},
    )
    assert saved.json()["stat"]["content_generation"] == fresh + 1
    form = visitor.form(
        "/edit", {"path": path, "contents": "older", "expected_generation": str(seen)}
    )
    assert form.status == 200
    assert "Not saved" in form.text
    assert 'class="diff"' in form.text


def test_writes_in_base64_deletes_and_acl_names(visitor: WebClient, cell: LiveCell) -> None:
    """Create with base64 contents, set ACL names (warned of a name without a file),
    delete only the instance expected; too large a body or too deep JSON is refused."""
    path = cell.path("public/made")
    made = visitor.post("/api/create", {"path": path, "contents": "AAEC", "encoding": "base64"})
    assert made.status == 200
    assert made.json()["stat"]["size"] == 3
    acl = visitor.post(
        "/api/set-acl", {"path": path, "read": "all", "write": "nobody-file", "change": "all"}
    )
    assert acl.status == 200
    assert acl.json()["warnings"] == [
        f"the write ACL 'nobody-file' has no file {cell.path('acl/nobody-file')}: it admits no one "
        "until that file lists principals"
    ]
    assert visitor.post("/api/delete", {"path": path}).json()["error"] == "PERMISSION_DENIED"
    operator = cell.client(principal=cell.operator[0], token=cell.operator[1])
    operator.set_acl(path, AclNames("all", "all", "all"))
    instance = made.json()["stat"]["instance"]
    assert (
        visitor.post("/api/delete", {"path": path, "expected_instance": instance + 1}).status == 409
    )
    assert visitor.post("/api/delete", {"path": path, "expected_instance": instance}).json()[
        "deleted"
    ]
    deep = visitor.request(
        "POST",
        "/api/create",
        body=b'{"path": ' + b"[" * 20 + b"]" * 20 + b"}",
        headers={"Content-Type": "application/json", "X-CSRF-Token": visitor.csrf()},
    )
    assert (deep.status, deep.json()["error"]) == (400, "BAD_REQUEST")
    assert "web.json_depth_max" in deep.json()["message"]
    wrong = visitor.post("/api/create", {"path": 7})
    assert (wrong.status, wrong.json()["message"]) == (400, "path must be a string")


def test_a_body_past_the_limit_is_refused_before_it_is_read(web: WebProcess) -> None:
    """A 2 MiB body is answered 413 as soon as its length is known; the server serves on."""
    with socket.create_connection(("127.0.0.1", web.port), timeout=10) as connection:
        head = (
            f"POST /api/create HTTP/1.1\r\nHost: 127.0.0.1:{web.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {2 << 20}\r\n\r\n"
        )
        connection.sendall(head.encode())
        answer = connection.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 413")
    assert "above web.request_body_bytes_max" in answer
    assert web.client().get("/api/whoami").status == 200


# ----------------------------------------------------------------------------- operators


def test_sessions_and_lock_info_are_an_operators_view(web: WebProcess, cell: LiveCell) -> None:
    """Anonymous may not list sessions or end one, and is not offered to; the operator sees a
    lock's holder and waiter with their principals, and ending the holder's session passes
    the lock on."""
    anonymous, operator = web.client(), web.client()
    assert anonymous.get("/api/sessions").json()["error"] == "PERMISSION_DENIED"
    assert operator.login("operator", token_of(cell, "operator")).status == 200
    path = cell.path("public/lockfile")
    holder = cell.client(principal="alice", token=token_of(cell, "alice"), name="the-holder")
    waiter = cell.client(name="the-waiter")
    held = holder.open(path, mode=HandleMode.READ | HandleMode.WRITE, create=True)
    held.acquire()
    acquired: list[bytes] = []
    waiting = threading.Thread(
        target=lambda: acquired.append(waiter.open(path).acquire()), daemon=True
    )
    waiting.start()

    def queued() -> dict[str, Any] | None:
        lock = anonymous.get("/api/lock", path=path).json()
        return lock if lock["waiter_count"] == 1 else None

    lock = cell.wait_for(queued, "the waiter is queued", 15)
    assert lock["mode"] == "exclusive"
    assert lock["holder_count"] == 1
    assert (lock["holders"][0]["client"], lock["holders"][0]["principal"]) == (
        "the-holder",
        "alice",
    )
    assert lock["waiters"][0]["client"] == "the-waiter"
    session_id = lock["holders"][0]["session_id"]
    offered = f"/end-session?id={session_id}"
    assert offered not in anonymous.get("/lock", path=path).text  # the ACL admin admits no one else
    assert offered in operator.get("/lock", path=path).text
    assert offered in operator.get("/sessions").text
    listed = operator.get("/api/sessions").json()["sessions"]
    mine = next(s for s in listed if s["session_id"] == session_id)
    assert mine["principal"] == "alice"
    assert {"path": path, "mode": "exclusive"} in mine["locks"]
    refused = anonymous.post("/api/end-session", {"session_id": session_id})
    assert (refused.status, refused.json()["error"]) == (403, "PERMISSION_DENIED")
    ending = operator.post("/api/end-session", {"session_id": session_id}).json()
    assert (ending["session_id"], ending["found"], ending["already"]) == (session_id, True, False)
    assert 0 < ending["ends_in_ms"] <= LEASE_SECONDS * 1000
    again = operator.post("/api/end-session", {"session_id": session_id}).json()
    assert (again["found"], again["already"]) == (True, True)
    waiting.join(30)  # the lock passes when the holder's lease runs out
    assert acquired, "the waiter holds the lock once the holder's session ended"
    assert anonymous.get("/api/lock", path=path).json()["waiters"] == []
    page = operator.get("/lock", path=path).text
    assert "the-waiter" in page
    assert "Waiters, in queue order" in page


def test_the_cell_figures_show_every_replica(visitor: WebClient, cell: LiveCell) -> None:
    """/api/cell names the master, each replica's status and lag, and fills the charts."""

    def charted() -> dict[str, Any] | None:
        figures = visitor.get("/api/cell").json()
        return figures if len(figures["charts"]["sessions"]) >= 2 and figures["master"] else None

    figures = cell.wait_for(charted, "two polls of every admin port", 15)
    assert figures["master"] == cell.master()
    assert [r["replica_id"] for r in figures["replicas"]] == ["r1", "r2", "r3"]
    assert all(r["reachable"] and r["lag"] is not None for r in figures["replicas"])
    assert figures["charts"]["sessions"][-1] >= 1
    assert "Writes / s" in visitor.get("/cell").text


# ----------------------------------------------------------------------------- live


def test_changes_by_another_client_arrive_as_events(
    web: WebProcess, cell: LiveCell, visitor: WebClient
) -> None:
    """An event stream hears of contents written, children added and nodes deleted by
    another client; a protected node cannot be watched anonymously."""
    visitor.get("/api/whoami")
    watched = [cell.path("public"), cell.path("public/live"), cell.path("secret/plan")]
    other = cell.client()
    other.create(cell.path("public/live"), b"v1")
    stream = EventReader(web.port, watched, cookie_header(visitor))
    try:
        assert stream.status == 200
        assert stream.next_event() == (
            "unwatched",
            {
                "path": cell.path("secret/plan"),
                "error": "PERMISSION_DENIED",
                "message": stream_message(cell),
            },
        )
        assert stream.next_event() == ("watching", {"paths": sorted(watched[:2])})
        other.set_contents(cell.path("public/live"), b"v2")
        assert stream.next_event() == (
            "change",
            {"path": cell.path("public/live"), "kind": "contents"},
        )
        other.create(cell.path("public/live2"), b"")
        assert stream.next_event() == ("change", {"path": cell.path("public"), "kind": "children"})
        other.delete(cell.path("public/live"))
        events = {stream.next_event()[1]["kind"] for _ in range(2)}
        assert events == {"deleted", "children"}
    finally:
        stream.close()


def stream_message(cell: LiveCell) -> str:
    return f"anonymous may not read {cell.path('secret/plan')}: ACL 'ops' does not admit it"


# ----------------------------------------------------------------------------- limits


@pytest.fixture(scope="module")
def limited(cell: LiveCell) -> Iterator[WebProcess]:
    process = WebProcess(
        cell,
        name="web-limited",
        web={
            "login_attempts_per_address_max": 3,
            "logins_max": 1,
            "event_streams_per_login_max": 1,
            "event_streams_max": 2,
            "watched_paths_per_stream_max": 2,
            "connections_max": 6,
            "request_head_seconds": 1.0,
        },
    )
    yield process
    assert process.stop() == 0, process.logs()


def test_login_attempts_and_live_logins_are_bounded(limited: WebProcess, cell: LiveCell) -> None:
    """Past web.logins_max a login is refused RESOURCE_EXHAUSTED; past
    web.login_attempts_per_address_max attempts even the right token is refused."""
    first, second = limited.client(), limited.client()
    assert first.login("operator", token_of(cell, "operator")).status == 200
    full = second.login("alice", token_of(cell, "alice"))
    assert (full.status, full.json()["error"]) == (429, "RESOURCE_EXHAUSTED")
    assert "web.logins_max" in full.json()["message"]
    assert first.post("/api/logout", {}).status == 200
    assert second.login("alice", "wrong-token-wrong-token").json()["error"] == "PERMISSION_DENIED"
    flooded = second.login("alice", token_of(cell, "alice"))  # the fourth attempt
    assert (flooded.status, flooded.json()["error"]) == (429, "TOO_MANY_REQUESTS")


def test_event_streams_and_connections_are_bounded(limited: WebProcess, cell: LiveCell) -> None:
    """Too many paths (400), a second stream of one visitor (one `refused` event saying
    why, then the end), or more connections than web.connections_max are refused; the
    server keeps serving."""
    visitor = limited.client()
    visitor.get("/api/whoami")
    cookie = cookie_header(visitor)
    paths = [cell.path("public"), cell.path("public/doc"), cell.path("public/bin")]
    too_many = EventReader(limited.port, paths, cookie)
    assert too_many.status == 400
    too_many.close()
    first = EventReader(limited.port, paths[:1], cookie)
    assert first.status == 200
    second = EventReader(limited.port, paths[:1], cookie)
    assert second.status == 200  # a refusal the page's script can read (docs/web-api.md)
    name, refusal = second.next_event()
    assert (name, refusal["error"], refusal["retry_seconds"]) == (
        "refused",
        "RESOURCE_EXHAUSTED",
        5,
    )
    assert refusal["message"].startswith("too many live views from your address (1 open")
    assert "web.event_streams_per_login_max): close a tab" in refusal["message"]
    tail = [second.response.fp.readline() for _ in range(3)]  # the chunked body's last chunk
    assert b"0\r\n" in tail, tail  # the stream ends
    second.close()
    first.close()
    idle = [socket.create_connection(("127.0.0.1", limited.port), timeout=5) for _ in range(6)]
    try:
        time.sleep(0.3)
        extra = socket.create_connection(("127.0.0.1", limited.port), timeout=5)
        extra.sendall(
            f"GET /api/whoami HTTP/1.1\r\nHost: 127.0.0.1:{limited.port}\r\n\r\n".encode()
        )
        try:
            answered = extra.recv(1000)
        except ConnectionResetError:
            answered = b"HTTP/1.1 503 (reset before it was read)"
        assert answered.startswith(b"HTTP/1.1 503"), answered
        assert b"web.connections_max" in answered or b"reset" in answered
        extra.close()
    finally:
        for connection in idle:
            connection.close()

    def serving() -> bool:
        return limited.client().get("/api/whoami").status == 200

    cell.wait_for(serving, "the page serves again", 10)


def test_a_request_head_must_arrive_whole_and_within_bounds(limited: WebProcess) -> None:
    """A request head dribbled in a line at a time is answered 408 at
    web.request_head_seconds (1 s here) however often it sends; a request line past
    web.request_head_bytes_max gets 414 (not a dropped connection); no answer names the
    server."""
    slow = socket.create_connection(("127.0.0.1", limited.port), timeout=5)
    started = time.monotonic()
    slow.sendall(f"GET /tree HTTP/1.1\r\nHost: 127.0.0.1:{limited.port}\r\n".encode())
    answer = b""
    with contextlib.suppress(OSError):  # the page closes the connection as it answers
        for number in range(20):
            slow.sendall(b"X-Slow-%d: 1\r\n" % number)
            slow.settimeout(0.25)
            with contextlib.suppress(TimeoutError):
                answer = slow.recv(4096)
            if answer:
                break
    took = time.monotonic() - started
    slow.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"web.request_head_seconds (1 s)" in answer
    assert 0.9 < took < 3.0, took
    long = socket.create_connection(("127.0.0.1", limited.port), timeout=5)
    long.sendall(b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n")
    answered = long.recv(4096)
    long.close()
    assert answered.startswith(b"HTTP/1.1 414"), answered
    assert b"web.request_head_bytes_max (16384)" in answered
    assert "server" not in limited.client().get("/api/whoami").headers


# ----------------------------------------------------------------------------- TLS


def test_over_tls_cookies_are_secure(cell: LiveCell) -> None:
    """On an ssl: endpoint the page is https, its cookies Secure, and HSTS is sent."""
    authority = new_authority(cell.name)
    certificate, key = issue_replica_certificate(authority, "web", ["127.0.0.1", "localhost"])
    folder = cell.directory / "web-tls"
    folder.mkdir(exist_ok=True)
    for name, pem in (("ca.pem", authority[0]), ("web.pem", certificate), ("web.key", key)):
        (folder / name).write_bytes(pem)
    listen = (
        f"ssl:0:interface=127.0.0.1:privateKey={folder / 'web.key'}:certKey={folder / 'web.pem'}"
    )
    web = WebProcess(cell, name="web-tls", listen=listen)
    try:
        assert web.base.startswith("https://127.0.0.1:")
        visitor = WebClient(web.base, ca=folder / "ca.pem")
        answer = visitor.get("/tree")
        assert answer.status == 200
        assert answer.headers["strict-transport-security"] == "max-age=31536000"
        assert answer.cookies
        assert all("; Secure" in cookie for cookie in answer.cookies)
        assert visitor.login("operator", token_of(cell, "operator")).status == 200
        assert visitor.get("/api/node", path=cell.path("secret/plan")).status == 200
    finally:
        assert web.stop() == 0, web.logs()


# ------------------------------------------------------------------------ the review's papercuts


def test_an_unedited_save_keeps_the_bytes_and_typed_line_breaks_are_lf(
    visitor: WebClient, cell: LiveCell
) -> None:
    """A file that begins with a newline keeps it through an untouched save (HTML drops one
    after <textarea>, so the page writes one more); one holding CRs is not offered for
    editing; the CR LF a browser sends for typed line breaks is stored as LF, on create
    too."""
    writer = cell.client()
    path, crlf = cell.path("public/leading"), cell.path("public/crlf")
    writer.create(path, b"\n[section]\nkey=value\n")
    writer.create(crlf, b"a\r\nb\r\n")
    page = visitor.get("/node", path=path).text
    assert 'id="edit-contents">\n\n[section]' in page
    generation = visitor.get("/api/node", path=path).json()["stat"]["content_generation"]
    browser_sent = "\r\n[section]\r\nkey=value\r\n"  # what a browser posts for that textarea
    saved = visitor.form(
        "/edit", {"path": path, "contents": browser_sent, "expected_generation": str(generation)}
    )
    assert "Saved" in saved.text
    assert writer.get_contents_and_stat(path).contents == b"\n[section]\nkey=value\n"
    assert "carriage returns" in visitor.get("/node", path=crlf).text
    visitor.form("/create", {"parent": cell.path("public"), "name": "typed", "contents": "x\r\ny"})
    assert writer.get_contents_and_stat(cell.path("public/typed")).contents == b"x\ny"


def test_an_ended_login_says_so_and_keeps_the_text_of_a_refused_edit(
    web: WebProcess, cell: LiveCell
) -> None:
    """A change sent with an ended login's cookie (logged out elsewhere) is refused
    LOGIN_ENDED, not CSRF_REFUSED, changes nothing, and the page shows the edit's text."""
    operator = web.client()
    assert operator.login("operator", token_of(cell, "operator")).status == 200
    csrf = operator.csrf()
    cookies = list(operator.jar)
    stale = web.client()
    for cookie in cookies:
        stale.jar.set_cookie(cookie)
    assert stale.post("/api/logout", {}).status == 200  # the login ends
    path = cell.path("public/doc")
    before = cell.client().get_contents_and_stat(path).stat.content_generation
    refused = operator.post("/api/set-contents", {"path": path, "contents": "x"}, csrf=csrf)
    assert (refused.status, refused.json()["error"]) == (401, "LOGIN_ENDED")
    for cookie in cookies:  # the answer cleared the ended login's cookie: a second tab's
        operator.jar.set_cookie(cookie)
    fields = {"path": path, "contents": "my <careful> draft", "csrf": csrf}
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    page = operator.request("POST", "/edit", body=urlencode(fields).encode(), headers=headers)
    assert page.status == 401
    assert "LOGIN_ENDED" in page.text
    assert "my &lt;careful&gt; draft" in page.text
    assert cell.client().get_contents_and_stat(path).stat.content_generation == before


def test_pages_offer_what_the_visitor_may_do_and_say_what_happened(
    web: WebProcess, cell: LiveCell
) -> None:
    """Sessions are linked for operators only; an unknown page is a 404 in the layout and
    HEAD is a GET without a body; logging in goes back to the page it came from (never to
    another site); a lazily listed child carries its lock mode; a name search shows no
    'first page' link; an ACL change that takes the operator's own read access away says
    it was done, warns of the missing ACL file and shows the parent; deleting needs no read
    access."""
    anonymous, operator = web.client(), web.client()
    assert 'href="/sessions"' not in anonymous.get("/tree").text
    missing = anonymous.get("/no-such-page")
    assert missing.status == 404
    assert "NOT_FOUND" in missing.text
    assert "<header" in missing.text
    head = anonymous.request("HEAD", "/tree")
    assert (head.status, head.body) == (200, b"")
    doc = cell.path("public/doc")
    assert "/login?next=%2Fnode%3Fpath%3D" in anonymous.get("/node", path=doc).text
    fields = {"principal": "operator", "token": token_of(cell, "operator")}
    back = operator.form("/login", {**fields, "next": f"/node?path={doc}"})
    assert back.status == 200
    assert "Log out" in back.text
    assert "Contents" in back.text
    assert 'href="/sessions"' in operator.get("/tree").text
    elsewhere = web.client().form("/login", {**fields, "next": "//example.com/x"})
    assert elsewhere.status == 200
    assert 'data-page="tree"' in elsewhere.text
    locked = cell.path("public/locked-one")
    holder = cell.client(name="lazy-holder")
    holder.open(locked, mode=HandleMode.READ | HandleMode.WRITE, create=True).acquire()
    listing = anonymous.get("/api/dir", path=cell.path("public"), prefix="locked").json()
    assert [(e["name"], e["lock_mode"]) for e in listing["entries"]] == [
        ("locked-one", "exclusive")
    ]
    search = anonymous.get("/tree", path=cell.path("public/many"), prefix="n01").text
    assert "first page" not in search
    gone = cell.path("public/unreadable")
    cell.client().create(gone, b"x")
    generation = operator.get("/api/node", path=gone).json()["stat"]["acl_generation"]
    changed = operator.form(
        "/acl",
        {"path": gone, "read": "nosuchacl", "write": "all", "change": "all",
         "expected_generation": str(generation)},
    )  # fmt: skip
    assert changed.status == 200
    for said in ("ACL names set", "admits no one", "You may not read"):
        assert said in changed.text
    form = operator.get("/delete", path=gone)
    assert form.status == 200
    assert "Delete this node" in form.text
    assert "Deleted" in operator.form("/delete", {"path": gone}).text


# ----------------------------------------------------------------------------- lock-out


def login_from(port: int, source: str, principal: str, token: str) -> tuple[int, Any, str]:
    """A login from the loopback address `source`: status, JSON answer, Retry-After."""

    def request(method: str, path: str, body: bytes, headers: dict[str, str]) -> Any:
        connection = http.client.HTTPConnection(
            "127.0.0.1", port, timeout=15, source_address=(source, 0)
        )
        connection.request(method, path, body, {"Host": f"127.0.0.1:{port}", **headers})
        response = connection.getresponse()
        response.body = response.read()
        connection.close()
        return response

    first = request("GET", "/api/whoami", b"", {})
    cookie = "; ".join(c.split(";")[0] for c in first.headers.get_all("Set-Cookie"))
    csrf = json.loads(first.body)["csrf"]
    headers = {"Content-Type": "application/json", "X-CSRF-Token": csrf, "Cookie": cookie}
    body = json.dumps({"principal": principal, "token": token}).encode()
    answer = request("POST", "/api/login", body, headers)
    return answer.status, json.loads(answer.body), answer.headers.get("Retry-After", "")


def test_failed_web_logins_cannot_lock_a_principal_out_of_the_cell(
    web: WebProcess, cell: LiveCell
) -> None:
    """Wrong tokens as alice from three addresses (7 each: under the page's per-address
    limit, over the cell's 20 per host and principal together) are refused by the page
    after web.login_failures_per_principal_max (5), saying when to try again and that
    the CLI is unaffected; alice's own client of the cell, from this host, still
    authenticates and reads."""
    answers = [
        login_from(web.port, f"127.0.0.{source}", "alice", f"guess-{source}-{n}-xxxxxxxxxxxx")
        for source in (2, 3, 4)
        for n in range(7)
    ]
    codes = [answer["error"] for _, answer, _ in answers]
    assert codes[:5] == ["PERMISSION_DENIED"] * 5, codes
    assert set(codes[5:]) == {"TOO_MANY_REQUESTS"}, codes
    status, refusal, retry_after = answers[-1]
    assert status == 429
    assert "web.login_failures_per_principal_max" in refusal["message"]
    assert "the CLI, are unaffected" in refusal["message"]
    assert 1 <= int(retry_after) <= 60
    alice = cell.client(principal="alice", token=token_of(cell, "alice"))
    assert alice.get_contents_and_stat(cell.path("public/doc")).contents.startswith(b"first")
    assert "refused a login as 'alice' from 127.0.0.4" in web.log_path.read_text()
