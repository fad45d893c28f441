"""The pages: tree, node, sessions, cell, login, and the forms that change the namespace.

Shell (STYLE §1). Server-rendered with `twisted.web.template` (`chubbypy.web._html`), so
every page reads without scripts; ``static/app.js`` adds lazy expansion of the tree, live
updates and the live charts. Each page reads through `chubbypy.web._reads`, as the JSON
API does, with the visitor's own client of the cell. Forms POST (with the CSRF token) to
routes that make the same client calls as the API and answer with the page to show next:
an edit refused because the file changed meanwhile shows what changed (compare-and-swap
on the content generation), a delete asks first, an ACL name without a file is warned of.
"""

from __future__ import annotations

from typing import Any, Final

from twisted.web.template import Tag, tags

from chubbypy.namespace._names import parent_of
from chubbypy.protocol.errors import (
    ChubbyError,
    GenerationMismatch,
    NoSuchNode,
    PermissionDenied,
)
from chubbypy.protocol.namespace import AclNames, Stat
from chubbypy.protocol.session import LockInfo, SessionInfo
from chubbypy.web._api import cell_json, conflict_diff
from chubbypy.web._app import Answer, Context, Html, Redirect, Server, WebError
from chubbypy.web._html import (
    Chrome,
    badges,
    breadcrumbs,
    children_text,
    csrf_field,
    grid,
    href,
    kind_of,
    local_page,
    notice,
    render_page,
    size_text,
)
from chubbypy.web._reads import (
    DirectoryPage,
    NodeView,
    acl_view,
    contents_page,
    directory_page,
    hex_lines,
    is_operator,
    lock_modes,
    node_view,
    pretty_json,
    unknown_acl_names,
)

__all__ = ["PAGE_ROUTES", "Pages"]

PAGE_ROUTES: Final = (
    ("GET", "/"),
    ("GET", "/tree"),
    ("GET", "/node"),
    ("GET", "/sessions"),
    ("GET", "/cell"),
    ("GET", "/login"),
    ("POST", "/login"),
    ("POST", "/logout"),
    ("GET", "/delete"),
    ("POST", "/delete"),
    ("POST", "/create"),
    ("POST", "/edit"),
    ("POST", "/acl"),
    ("GET", "/lock"),
    ("GET", "/end-session"),
    ("POST", "/end-session"),
)
VIEWS: Final = ("text", "json", "hex")
CHARTS: Final = (
    ("writes_per_second", "Writes / s", ""),
    ("reads_per_second", "Reads / s", ""),
    ("write_p99_ms", "p99 write", " ms"),
    ("read_p99_ms", "p99 read", " ms"),
    ("fsync_p99_ms", "p99 fsync", " ms"),
    ("sessions", "Sessions", ""),
)
CHART_WIDTH: Final = 300
CHART_HEIGHT: Final = 70


class Pages:
    """The handlers of `PAGE_ROUTES`."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.web = server.config.web
        self.root = f"/ls/{server.config.cell}"

    def register(self) -> None:
        handlers = {
            ("GET", "/"): self.home,
            ("GET", "/tree"): self.tree,
            ("GET", "/node"): self.node,
            ("GET", "/sessions"): self.sessions,
            ("GET", "/cell"): self.cell,
            ("GET", "/login"): self.login_form,
            ("POST", "/login"): self.login,
            ("POST", "/logout"): self.logout,
            ("GET", "/delete"): self.delete_form,
            ("POST", "/delete"): self.delete,
            ("POST", "/create"): self.create,
            ("POST", "/edit"): self.edit,
            ("POST", "/acl"): self.set_acl,
            ("GET", "/lock"): self.lock,
            ("GET", "/end-session"): self.end_session_form,
            ("POST", "/end-session"): self.end_session,
        }
        for method, path in PAGE_ROUTES:
            self.server.app.add(method, path, handlers[(method, path)], api=False)
        self.server.app.error_page = self.error_page

    def chrome(self, context: Context) -> Chrome:
        visitor = context.visitor
        return Chrome(
            cell=self.server.config.cell,
            principal=visitor.principal,
            logged_in=visitor.logged_in,
            csrf=visitor.csrf,
            watch_max=self.web.watched_paths_per_stream_max,
            here=context.request.uri.decode("ascii", "replace"),
        )

    async def operator_chrome(self, context: Context) -> Chrome:
        """The layout's view of the visitor, knowing whether the ACL ``admin`` admits them
        (read from its file, through the visitor's cached client): for pages that offer
        an operator's action."""
        chrome = self.chrome(context)
        chrome.operator = await is_operator(context.visitor.cell, context.visitor.principal)
        return chrome

    async def page(
        self, context: Context, title: str, active: str, body: list[Any], **options: Any
    ) -> Html:
        status = options.pop("status", 200)
        chrome = options.pop("chrome", None) or await self.operator_chrome(context)
        html = await render_page(chrome, title=title, active=active, body=body, **options)
        return Html(html, status)

    async def error_page(
        self, context: Context | None, code: str, message: str, status: int, draft: str | None
    ) -> bytes:
        body = [
            tags.h1("Refused" if status < 500 else "Not available"),
            notice("error", tags.b(code), ": ", message),
        ]
        if code in ("LOGIN_REQUIRED", "PERMISSION_DENIED", "LOGIN_ENDED"):
            body.append(
                tags.p(tags.a(href="/login")("Log in"), " as a principal the cell's ACLs admit.")
            )
        if draft is not None:
            body.append(
                tags.section(class_="card")(
                    tags.h2("Your text, not saved"),
                    tags.p(class_="hint")("Copy it before you leave this page."),
                    tags.textarea(rows="10", readonly="readonly", id="draft")("\n" + draft),
                )
            )
        chrome = (
            self.chrome(context)
            if context is not None
            else Chrome(
                cell=self.server.config.cell, principal="anonymous", logged_in=False, csrf=""
            )
        )
        html: bytes = await render_page(chrome, title=code, active="", body=body, page="error")
        return html

    def _path(self, context: Context) -> str:
        return context.arg("path") or self.root

    # ------------------------------------------------------------------ tree

    async def home(self, context: Context) -> Answer:
        return Redirect("/tree")

    async def tree(self, context: Context, *, notes: list[Tag] | None = None) -> Answer:
        path = self._path(context)
        cell = context.visitor.client()
        stat = await cell.get_stat(path)
        if not stat.is_directory:
            return Redirect(href("/node", path=path))
        listing = await directory_page(
            cell, path, after=context.arg("after"), prefix=context.arg("prefix"),
            limit=self.web.children_per_page,
        )  # fmt: skip
        body = [breadcrumbs(path), self._toolbar(path, context.arg("prefix")), *(notes or [])]
        body += [
            tags.h1(class_="title")(
                path.rpartition("/")[2] or path,
                " ",
                tags.span(class_="meta")(f"directory · {children_text(listing.stat.size)}"),
            ),
            self._paging(listing),
            self._children(listing, await lock_modes(cell, listing)),
            self._paging(listing),
            self._create_form(context, path),
        ]
        children = [f"{path}/{entry.name}" for entry in listing.entries]
        watch = [path, *children[: self.web.watched_paths_per_stream_max - 1]]
        return await self.page(context, path, "tree", body, watch=watch)

    def _toolbar(self, path: str, prefix: str) -> Tag:
        jump = tags.form(method="get", action="/tree", class_="jump")(
            tags.label(for_="jump-path")("Go to"),
            tags.input(
                id="jump-path", name="path", value=path, spellcheck="false", autocomplete="off"
            ),
            tags.button(type="submit")("Go"),
        )
        search = tags.form(method="get", action="/tree", class_="search")(
            tags.input(type="hidden", name="path", value=path),
            tags.label(for_="search-prefix")("Names starting with"),
            tags.input(
                id="search-prefix",
                name="prefix",
                value=prefix,
                spellcheck="false",
                autocomplete="off",
            ),
            tags.button(type="submit")("Search"),
        )
        return tags.div(class_="toolbar")(jump, search)

    def _paging(self, listing: DirectoryPage) -> Tag:
        shown = len(listing.entries)
        parts: list[Any] = []
        if listing.prefix:
            parts.append(
                f"{shown} name{'s' if shown != 1 else ''} starting with “{listing.prefix}”"
            )
            parts += [" · ", tags.a(href=href("/tree", path=listing.path))("all children")]
        else:
            parts.append(f"{shown:,} shown of {listing.stat.size:,}")
            if shown and listing.after:
                first, last = listing.entries[0].name, listing.entries[-1].name
                parts += [": ", tags.code(first), " to ", tags.code(last)]
        if listing.after:
            parts += [
                " · ",
                tags.a(href=href("/tree", path=listing.path, prefix=listing.prefix))(
                    "⇤ first page"
                ),
            ]
        if listing.next_after is not None:
            parts += [
                " · ",
                tags.a(
                    class_="next",
                    href=href(
                        "/tree", path=listing.path, prefix=listing.prefix, after=listing.next_after
                    ),
                )(f"next {self.web.children_per_page} →"),
            ]
        return tags.p(class_="paging")(parts)

    def _children(self, listing: DirectoryPage, modes: dict[str, str]) -> Tag:
        if not listing.entries:
            return tags.p(class_="empty")(
                "No children here." if not listing.prefix else "No name starts with that."
            )
        rows = [
            tree_row(listing.path, entry.name, entry.stat, lock_mode=modes.get(entry.name, "free"))
            for entry in listing.entries
        ]
        return tags.ul(class_="tree", id="tree", **{"data-path": listing.path})(rows)

    def _create_form(self, context: Context, path: str) -> Tag:
        return tags.details(class_="card create")(
            tags.summary("New file or directory here"),
            tags.form(method="post", action="/create", class_="stack")(
                csrf_field(self.chrome(context)),
                tags.input(type="hidden", name="parent", value=path),
                tags.label(
                    "Name ",
                    tags.input(
                        name="name",
                        required="required",
                        spellcheck="false",
                        autocomplete="off",
                        pattern="[A-Za-z0-9._\\-]+",
                    ),
                ),
                tags.label(class_="check")(
                    tags.input(type="checkbox", name="directory", value="1"), " a directory"
                ),
                tags.label("Contents (files) ", tags.textarea(name="contents", rows="4")),
                tags.button(type="submit")("Create"),
            ),
        )

    # ------------------------------------------------------------------ node

    async def node(
        self,
        context: Context,
        *,
        notes: list[Tag] | None = None,
        draft: bytes | None = None,
        diff: str | None = None,
    ) -> Answer:
        path = self._path(context)
        cell = context.visitor.client()
        view = await node_view(cell, path)
        if view.contents is None:
            context.query["path"] = [path]
            return await self.tree(context, notes=notes)
        chrome = self.chrome(context)
        acls = await acl_view(cell, view.stat.acl)
        owner = await self._ephemeral_owner(context, view)
        body: list[Any] = [breadcrumbs(path), *(notes or [])]
        body.append(
            tags.h1(class_="title")(
                path.rpartition("/")[2],
                " ",
                tags.span(class_="meta")("file"),
                " ",
                badges(view.stat),
            )
        )
        body.append(
            tags.div(class_="columns")(
                self._metadata(view, owner),
                tags.section(class_="card")(
                    tags.h2("ACL names"),
                    grid(
                        ("Role", "Name", "Admits"),
                        [
                            tags.tr(
                                tags.td(v.role),
                                tags.td(
                                    tags.a(href=href("/node", path=v.path))(v.name)
                                    if v.exists
                                    else v.name
                                ),
                                tags.td(class_="wrap")(v.note),
                            )
                            for v in acls
                        ],
                    ),
                    self._acl_form(chrome, view),
                ),
            )
        )
        body.append(self._contents(context, view))
        if diff is not None:
            body.append(
                tags.section(class_="card conflict")(
                    tags.h2("What changed meanwhile"), diff_block(diff)
                )
            )
        body.append(self._edit_form(chrome, view, draft))
        body.append(
            tags.p(class_="actions")(
                tags.a(href=href("/delete", path=path), class_="danger")("Delete this file…"),
            )
        )
        return await self.page(context, path, "tree", body, watch=[path], page="node")

    async def _ephemeral_owner(self, context: Context, view: NodeView) -> str | None:
        """Whether the file is ephemeral and whose session owns it (from ListSessions: an
        operator's query), as the page says it; None if it is not ephemeral."""
        if not view.stat.ephemeral:
            return None
        try:
            sessions = await context.visitor.client().list_sessions()
        except PermissionDenied:
            return "yes (whose session, operators alone may see)"
        for info in sessions:
            if view.path in info.ephemeral:
                return f"yes, of session {info.session_id} ({info.name})"
        return "yes, of a session not listed"

    def _metadata(self, view: NodeView, owner: str | None) -> Tag:
        stat = view.stat
        rows = [
            ("Size", size_text(stat.size)),
            ("Instance", str(stat.instance)),
            ("Content generation", str(stat.content_generation)),
            ("Lock generation", str(stat.lock_generation)),
            ("ACL generation", str(stat.acl_generation)),
            ("Checksum", f"{stat.checksum:016x}"),
            ("Ephemeral", owner or "no"),
        ]
        facts = tags.dl(class_="facts", id="stat")(
            [
                [tags.dt(label), tags.dd(**{"data-field": label.lower().replace(" ", "_")})(value)]
                for label, value in rows
            ]
        )
        lock = tags.a(href=href("/lock", path=view.path))("Lock holders and waiters →")
        return tags.section(class_="card")(tags.h2("Metadata"), facts, tags.p(lock))

    def _contents(self, context: Context, view: NodeView) -> Tag:
        assert view.contents is not None
        wanted = context.arg("view")
        page = contents_page(
            view.contents, context.int_arg("offset", 0), self.web.contents_shown_bytes_max
        )
        shown = wanted if wanted in VIEWS else ("text" if page.is_text else "hex")
        tabs = tags.nav(class_="tabs")(
            [
                tags.a(
                    href=href("/node", path=view.path, view=name, offset=page.offset or None),
                    class_="active" if name == shown else "",
                )(name.upper() if name == "json" else name.title())
                for name in VIEWS
            ]
        )
        if page.size == 0:
            shown_block: Tag = tags.p(class_="empty")("The file is empty.")
        elif shown == "json":
            pretty = (
                pretty_json(view.contents)
                if page.size <= self.web.contents_shown_bytes_max
                else None
            )
            shown_block = (
                tags.pre(class_="contents json", id="contents")(pretty)
                if pretty is not None
                else notice(
                    "warn", "These contents are not JSON (or too large to show whole as JSON)."
                )
            )
        elif shown == "hex":
            shown_block = tags.pre(class_="contents hex", id="contents")(
                [
                    tags.span(class_="hexline")(
                        tags.span(class_="off")(o),
                        "  ",
                        h.ljust(47),
                        "  ",
                        tags.span(class_="ascii")(a),
                        "\n",
                    )
                    for o, h, a in hex_lines(page.data, page.offset)
                ]
            )
        elif not page.is_text:
            shown_block = notice("warn", "These bytes are not UTF-8 text: see them as hex.")
        else:
            shown_block = tags.pre(class_="contents text", id="contents")(page.data.decode("utf-8"))
        extent = f"{size_text(page.size)}" + (
            f"; bytes {page.offset:,} to {page.end:,} shown" if page.size > len(page.data) else ""
        )
        paging: list[Any] = []
        if page.offset > 0:
            previous = max(0, page.offset - self.web.contents_shown_bytes_max)
            paging.append(
                tags.a(href=href("/node", path=view.path, view=shown, offset=previous or None))(
                    "← previous"
                )
            )
        if page.more:
            paging += [
                " ",
                tags.a(href=href("/node", path=view.path, view=shown, offset=page.end))("next →"),
            ]
        return tags.section(class_="card contents-card")(
            tags.h2("Contents ", tags.span(class_="meta", id="contents-size")(extent)),
            tabs,
            shown_block,
            tags.p(class_="paging")(paging),
        )

    def _edit_form(self, chrome: Chrome, view: NodeView, draft: bytes | None) -> Tag:
        assert view.contents is not None
        text = draft if draft is not None else view.contents
        why = (
            "Binary or larger than this page shows"
            if len(text) > self.web.contents_shown_bytes_max or not _is_text(text)
            else "It holds carriage returns, which a browser's editor does not keep"
            if b"\r" in text
            else None
        )
        if why is not None:
            return tags.section(class_="card")(
                tags.h2("Edit"),
                tags.p(class_="empty")(
                    f"{why}: write it with the API (POST /api/set-contents, base64) or the "
                    "CLI (chubbypy put)."
                ),
            )
        return tags.section(class_="card")(
            tags.h2("Edit"),
            tags.form(method="post", action="/edit", class_="stack", id="edit")(
                csrf_field(chrome),
                tags.input(type="hidden", name="path", value=view.path),
                tags.input(
                    type="hidden",
                    name="expected_generation",
                    value=str(view.stat.content_generation),
                ),
                # HTML drops a newline right after <textarea>: one is written so that a file
                # that begins with one keeps it.
                tags.textarea(name="contents", rows="10", spellcheck="false", id="edit-contents")(
                    "\n" + text.decode("utf-8")
                ),
                tags.div(class_="row")(
                    tags.button(type="submit")("Save"),
                    tags.span(class_="hint")(
                        "only if nobody changed it since content generation "
                        f"{view.stat.content_generation}"
                    ),
                ),
            ),
        )

    def _acl_form(self, chrome: Chrome, view: NodeView) -> Tag:
        acl = view.stat.acl
        return tags.details(class_="acl-edit")(
            tags.summary("Change ACL names"),
            tags.form(method="post", action="/acl", class_="stack")(
                csrf_field(chrome),
                tags.input(type="hidden", name="path", value=view.path),
                tags.input(
                    type="hidden", name="expected_generation", value=str(view.stat.acl_generation)
                ),
                [
                    tags.label(
                        f"{role} ",
                        tags.input(
                            name=role,
                            value=getattr(acl, role),
                            required="required",
                            spellcheck="false",
                        ),
                    )
                    for role in ("read", "write", "change")
                ],
                tags.button(type="submit")("Set ACL names"),
            ),
        )

    # ------------------------------------------------------------------ changes

    async def create(self, context: Context) -> Answer:
        parent = context.arg("parent") or self.root
        name = context.arg("name").strip()
        path = f"{parent}/{name}"
        directory = context.arg("directory") == "1"
        contents = b"" if directory else _typed(context.arg("contents"))
        try:
            await context.visitor.client().create(path, contents, directory=directory)
        except ChubbyError as error:
            context.query = {"path": [parent]}
            return await self.tree(context, notes=[refusal("Not created", error)])
        context.query["path"] = [path]
        done = notice(
            "ok", f"Created {'directory' if directory else 'file'} ", tags.code(path), "."
        )
        if directory:
            return await self.tree(context, notes=[done])
        return await self.node(context, notes=[done])

    async def edit(self, context: Context) -> Answer:
        path = context.arg("path")
        contents = _typed(context.arg("contents"))
        expected = context.int_arg("expected_generation", 0)
        cell = context.visitor.client()
        context.query["path"] = [path]
        try:
            stat = await cell.set_contents(path, contents, expected)
        except GenerationMismatch:
            now = await cell.get_contents_and_stat(path)
            diff = conflict_diff(now.contents, contents, now.stat.content_generation)
            refused = notice(
                "error",
                tags.b("Not saved: "),
                "the file changed since you opened it (you edited content generation "
                f"{expected}; it is at {now.stat.content_generation} now). Your text is kept "
                "in the editor below; save again to replace what is there now.",
            )
            return await self.node(context, notes=[refused], draft=contents, diff=diff or "")
        except ChubbyError as error:
            return await self.node(context, notes=[refusal("Not saved", error)], draft=contents)
        done = notice("ok", f"Saved: content generation {stat.content_generation}.")
        return await self.node(context, notes=[done])

    async def set_acl(self, context: Context) -> Answer:
        path = context.arg("path")
        names = AclNames(context.arg("read"), context.arg("write"), context.arg("change"))
        cell = context.visitor.client()
        expected = context.int_arg("expected_generation", 0)
        context.query["path"] = [path]
        try:
            await cell.set_acl(path, names, expected)
        except ChubbyError as error:
            return await self._node_or_parent(context, path, [refusal("ACL names not set", error)])
        warnings = await unknown_acl_names(cell, names)
        notes = [notice("ok", "ACL names set."), *(notice("warn", w) for w in warnings)]
        return await self._node_or_parent(context, path, notes)

    async def _node_or_parent(self, context: Context, path: str, notes: list[Tag]) -> Answer:
        """The node's page with `notes`; its parent's, saying why, if the visitor may not
        read the node (a change may have just taken their read access away) or it is gone."""
        context.query = {"path": [path]}
        try:
            return await self.node(context, notes=notes)
        except PermissionDenied:
            why = notice(
                "warn",
                "You may not read ",
                tags.code(path),
                f" (any more): its read ACL does not admit {context.visitor.principal}.",
            )
        except NoSuchNode:
            why = notice("warn", tags.code(path), " is not there (any more).")
        context.query = {"path": [parent_of(path)]}
        return await self.tree(context, notes=[*notes, why])

    async def delete_form(self, context: Context) -> Answer:
        path = self._path(context)
        try:
            stat: Stat | None = await context.visitor.client().get_stat(path)
        except PermissionDenied:
            stat = None  # deleting needs write permission on the parent, not read on the node
        if stat is None:
            what, instance, back = "node", "", href("/tree", path=parent_of(path))
            warning = (
                "This deletes the node for every client of the cell (a directory must be "
                "empty); you may not read it, so what it holds is not shown."
            )
        else:
            what, instance = kind_of(stat), str(stat.instance)
            back = href("/node" if not stat.is_directory else "/tree", path=path)
            warning = f"This deletes the {what} for every client of the cell" + (
                " (a directory must be empty)."
                if stat.is_directory
                else f" ({size_text(stat.size)})."
            )
        form = tags.form(method="post", action="/delete", class_="stack")(
            csrf_field(self.chrome(context)),
            tags.input(type="hidden", name="path", value=path),
            tags.input(type="hidden", name="expected_instance", value=instance),
            tags.div(class_="row")(
                tags.button(type="submit", class_="danger")(f"Delete this {what}"),
                tags.a(href=back)("Cancel"),
            ),
        )
        body = [
            breadcrumbs(path),
            tags.h1(class_="title")("Delete ", tags.code(path), "?"),
            notice("warn", warning),
            form,
        ]
        return await self.page(context, f"Delete {path}", "tree", body)

    async def delete(self, context: Context) -> Answer:
        path = context.arg("path")
        expected = context.int_arg("expected_instance", 0)
        try:
            await context.visitor.client().delete(path, expected or None)
        except ChubbyError as error:
            return await self._node_or_parent(context, path, [refusal("Not deleted", error)])
        context.query = {"path": [parent_of(path)]}
        return await self.tree(context, notes=[notice("ok", "Deleted ", tags.code(path), ".")])

    # ------------------------------------------------------------------ locks

    async def lock(self, context: Context) -> Answer:
        path = self._path(context)
        info = await context.visitor.client().lock_info(path)
        chrome = await self.operator_chrome(context)
        body = [
            breadcrumbs(path),
            tags.h1(class_="title")(
                "Lock of ",
                tags.a(href=href("/node", path=path))(path.rpartition("/")[2]),
                " ",
                tags.span(class_=f"mode {info.mode}", id="lock-mode")(info.mode),
            ),
            lock_summary(info),
            tags.section(class_="card")(
                tags.h2(
                    "Holders ",
                    tags.span(class_="meta", id="holder-count")(f"{info.holder_count} in all"),
                ),
                holders_table(info, chrome),
            ),
            tags.section(class_="card")(
                tags.h2(
                    "Waiters, in queue order ",
                    tags.span(class_="meta", id="waiter-count")(
                        f"{info.waiter_count} in all; the first is next"
                    ),
                ),
                waiters_table(info),
            ),
        ]
        title = f"Lock of {path}"
        return await self.page(
            context, title, "tree", body, watch=[path], page="lock", chrome=chrome
        )

    async def end_session_form(self, context: Context) -> Answer:
        session_id = context.int_arg("id", 0, low=1)
        every = await context.visitor.client().list_sessions()
        found = [info for info in every if info.session_id == session_id]
        if not found:
            raise WebError("NOT_FOUND", f"no session {session_id} (it may have ended)")
        info = found[0]
        form = tags.form(method="post", action="/end-session", class_="stack")(
            csrf_field(self.chrome(context)),
            tags.input(type="hidden", name="session_id", value=str(session_id)),
            tags.div(class_="row")(
                tags.button(type="submit", class_="danger")(f"End session {session_id}"),
                tags.a(href=href("/sessions", id=session_id))("Cancel"),
            ),
        )
        body = [
            tags.h1(class_="title")(f"End session {session_id}?"),
            notice(
                "warn",
                f"Session {session_id} of ",
                tags.b(info.name),
                f" (principal {info.principal or 'unknown'}) is ended: its client is told at "
                "once and refused from then on; when the lease it has runs out "
                f"({info.lease_remaining_ms / 1000:.1f} s), its {info.ephemeral_count} "
                f"ephemeral files are deleted and its {info.lock_count} locks freed after "
                "their lock-delay. (A fail-over before then forgets the end: end it again.)",
            ),
            form,
        ]
        return await self.page(context, f"End session {session_id}", "sessions", body)

    async def end_session(self, context: Context) -> Answer:
        session_id = context.int_arg("session_id", 0, low=1)
        try:
            ending = await context.visitor.client().end_session(session_id)
        except ChubbyError as error:
            context.query = {"id": [str(session_id)]}
            return await self.sessions(context, notes=[refusal("Not ended", error)])
        ends = f"it ends when its lease runs out, in {ending.ends_in_ms / 1000:.1f} s"
        if not ending.found:
            done = notice("warn", f"Session {session_id} was not in the cell: it had ended.")
        elif ending.already:
            done = notice("warn", f"Session {session_id} was ending already: {ends}.")
        else:
            done = notice(
                "ok",
                f"Session {session_id} is ending: its client is refused from now on, and {ends} "
                "(its ephemeral files are deleted then, and its locks freed after their "
                "lock-delay).",
            )
        context.query = {}
        return await self.sessions(context, notes=[done])

    # ------------------------------------------------------------------ sessions

    async def sessions(self, context: Context, *, notes: list[Tag] | None = None) -> Answer:
        after = context.int_arg("after", 0)
        chosen = context.int_arg("id", 0)
        cell = context.visitor.client()
        if chosen:
            every = await cell.list_sessions()
            listed = tuple(info for info in every if info.session_id == chosen)
            more = False
        else:
            listed, more = await self.server.sessions_page(cell, after, self.web.sessions_per_page)
        chrome = await self.operator_chrome(context)
        rows = [session_row(info, chrome, highlight=info.session_id == chosen) for info in listed]
        headings = ("Session", "Client", "Principal", "State", "Lease left", "Handles",
                    "Locks held", "Ephemeral files", "Cached names", "")  # fmt: skip
        table = grid(headings, rows, classes="sessions", id="sessions")
        paging: list[Any] = []
        if after or chosen:
            paging.append(tags.a(href="/sessions")("⇤ all sessions"))
        if more and listed:
            paging += [
                " ",
                tags.a(href=href("/sessions", after=listed[-1].session_id))(
                    f"next {self.web.sessions_per_page} →"
                ),
            ]
        body = [
            tags.h1(class_="title")(
                "Sessions ",
                tags.span(class_="meta")(f"{len(listed)} shown, as the master sees them"),
            ),
            *(notes or []),
            table if rows else tags.p(class_="empty")("No session."),
            tags.p(class_="paging")(paging),
        ]
        return await self.page(context, "Sessions", "sessions", body, chrome=chrome)

    # ------------------------------------------------------------------ cell

    async def cell(self, context: Context) -> Answer:
        figures = cell_json(self.server.history, self.server.config.cell, self.server.clock_now())
        master = figures["master"]
        who = f"master {master}, epoch {figures['epoch']}" if master else "no master known"
        heading = tags.h1(class_="title")(
            "Cell ", self.server.config.cell, " ", tags.span(class_="meta", id="master")(who)
        )
        charts = tags.div(class_="charts", id="charts")(
            [chart(figures["charts"], key, label, unit) for key, label, unit in CHARTS]
        )
        rows = [replica_row(replica, master) for replica in figures["replicas"]]
        headings = ("Replica", "Role", "Epoch", "Lease left", "Chosen", "Applied", "Lag",
                    "Log kept from", "Checksums", "Up for")  # fmt: skip
        table = grid(headings, rows, classes="replicas", id="replicas")
        note = tags.p(class_="hint")(
            f"Read from each replica's admin port every {self.web.status_poll_seconds:g} s; "
            "each p99 is the bound under which 99% fell in each interval: of the writes and "
            "reads the replicas answered (from taking a request off its connection to its "
            "reply), and of their log writes to disk (fsync)."
        )
        return await self.page(context, "Cell", "cell", [heading, charts, table, note])

    # ------------------------------------------------------------------ logins

    async def login_form(self, context: Context, *, notes: list[Tag] | None = None) -> Answer:
        chrome = self.chrome(context)
        form = tags.form(method="post", action="/login", class_="stack narrow", id="login")(
            csrf_field(chrome),
            tags.input(type="hidden", name="next", value=local_page(context.arg("next")) or ""),
            tags.label(
                "Principal ",
                tags.input(
                    name="principal",
                    required="required",
                    autocomplete="username",
                    spellcheck="false",
                ),
            ),
            tags.label(
                "Token ",
                tags.input(
                    name="token",
                    type="password",
                    required="required",
                    autocomplete="current-password",
                ),
            ),
            tags.button(type="submit")("Log in"),
        )
        body = [
            tags.h1(class_="title")("Log in"),
            *(notes or []),
            tags.p(class_="hint")(
                "As one of the cell's principals (auth.principals), with its token: the page "
                "then acts as that principal, and the cell's ACLs decide what you see and may "
                "change."
            ),
            form,
        ]
        return await self.page(context, "Log in", "login", body)

    async def login(self, context: Context) -> Answer:
        try:
            await self.server.log_in(context, context.arg("principal"), context.arg("token"))
        except WebError as refused:
            return await self.login_form(
                context, notes=[notice("error", tags.b(refused.code), ": ", refused.message)]
            )
        return Redirect(local_page(context.arg("next")) or "/tree")

    async def logout(self, context: Context) -> Answer:
        await self.server.log_out(context)
        return Redirect("/tree")


# ----------------------------------------------------------------------------- pieces


def refusal(what: str, error: ChubbyError) -> Tag:
    """The cell refused a change: say what was not done, and the cell's code and reason."""
    return notice("error", tags.b(f"{what}: "), tags.b(error.code.name), ": ", error.message)


def tree_row(directory: str, name: str, stat: Stat | None, *, lock_mode: str = "free") -> Tag:
    """One child in the tree: a toggle for directories, its name, marks and facts."""
    path = f"{directory}/{name}"
    kind = kind_of(stat)
    is_directory = stat is not None and stat.is_directory
    link = href("/tree" if is_directory else "/node", path=path)
    toggle = (
        tags.a(
            class_="toggle",
            href=link,
            title="expand",
            **{"data-path": path, "aria-expanded": "false"},
        )("▸")
        if is_directory
        else tags.span(class_="toggle leaf")("·")
    )
    facts = ""
    if stat is not None:
        facts = children_text(stat.size) if is_directory else size_text(stat.size)
    row = tags.div(class_="row")(
        toggle,
        tags.a(class_="name", href=link)(name + ("/" if is_directory else "")),
        " ",
        badges(stat, lock_mode=lock_mode),
        tags.span(class_="facts")(facts),
    )
    return tags.li(class_=f"node {kind}", **{"data-path": path})(row)


def diff_block(diff: str) -> Tag:
    lines = []
    for line in diff.splitlines(keepends=True):
        kind = (
            "add"
            if line.startswith("+") and not line.startswith("+++")
            else "del"
            if line.startswith("-") and not line.startswith("---")
            else "ctx"
        )
        lines.append(tags.span(class_=f"diff-{kind}")(line))
    return tags.pre(class_="diff", id="diff")(lines or "(no difference in the text)")


def session_row(info: SessionInfo, chrome: Chrome, *, highlight: bool = False) -> Tag:
    locks: list[Any] = [
        [tags.a(href=href("/lock", path=path))(path), f" ({mode})", tags.br()]
        for path, mode in info.locks
    ]
    if info.lock_count > len(info.locks):
        locks.append(f"… {info.lock_count} in all")
    ephemeral: list[Any] = [
        [tags.a(href=href("/node", path=path))(path), tags.br()] for path in info.ephemeral
    ]
    if info.ephemeral_count > len(info.ephemeral):
        ephemeral.append(f"… {info.ephemeral_count} in all")
    return tags.tr(id=f"session-{info.session_id}", class_="highlight" if highlight else "")(
        tags.td(tags.a(href=href("/sessions", id=info.session_id))(str(info.session_id))),
        tags.td(class_="wrap")(info.name),
        tags.td(class_="nowrap")(info.principal or "—"),
        tags.td(tags.span(class_=f"state {info.state}")(info.state)),
        tags.td(f"{info.lease_remaining_ms / 1000:.1f} s"),
        tags.td(str(info.handles)),
        tags.td(class_="wrap")(locks or "—"),
        tags.td(class_="wrap")(ephemeral or "—"),
        tags.td(str(info.cached_names)),
        tags.td(
            tags.a(href=href("/end-session", id=info.session_id), class_="danger")("End…")
            if chrome.operator
            else ""
        ),
    )


def replica_row(replica: dict[str, Any], master: str | None) -> Tag:
    status = replica["status"]
    rid = replica["replica_id"]
    if status is None:
        return tags.tr(class_="down", **{"data-replica": rid})(
            tags.td(tags.b(rid)),
            tags.td(class_="wrap", colspan="9")(f"unreachable: {replica['problem']}"),
        )
    role = str(status.get("role", "?"))
    lease = (
        f"{status.get('lease_remaining_ms', 0) / 1000:.2f} s" if status.get("lease_valid") else "—"
    )
    return tags.tr(class_="master" if rid == master else "", **{"data-replica": rid})(
        tags.td(tags.b(rid)),
        tags.td(tags.span(class_=f"role {role}")(role)),
        tags.td(str(status.get("epoch", ""))),
        tags.td(lease),
        tags.td(str(status.get("chosen_index", ""))),
        tags.td(str(status.get("applied_index", ""))),
        tags.td(class_="lag" if replica["lag"] else "")(str(replica["lag"])),
        tags.td(str(status.get("first_index", ""))),
        tags.td(class_="bad" if replica["checksum_bad"] else "")(replica["checksum_summary"]),
        tags.td(f"{int(status.get('uptime_ms', 0)) // 1000} s"),
    )


def chart(charts: dict[str, list[Any]], key: str, label: str, unit: str) -> Tag:
    """A small line chart of one series, drawn as SVG on the server (the script redraws it
    as new figures arrive)."""
    values = charts[key]
    known = [v for v in values if v is not None]
    top = max(known, default=0.0) or 1.0
    step = CHART_WIDTH / max(len(values) - 1, 1)
    points = " ".join(
        f"{i * step:.1f},{CHART_HEIGHT - (v / top) * (CHART_HEIGHT - 4) - 2:.1f}"
        for i, v in enumerate(values)
        if v is not None
    )
    latest = f"{known[-1]:.3g}{unit}" if known else "—"
    oldest = charts["seconds_ago"][0] if charts["seconds_ago"] else 0
    return tags.figure(class_="chart", **{"data-series": key, "data-unit": unit})(
        tags.figcaption(
            label,
            " ",
            tags.b(class_="value")(latest),
            tags.span(class_="top")(f"max {top:.3g}{unit}"),
        ),
        Tag("svg")(
            Tag("polyline")(points=points, class_="line"),
            xmlns="http://www.w3.org/2000/svg",
            viewBox=f"0 0 {CHART_WIDTH} {CHART_HEIGHT}",
            preserveAspectRatio="none",
            class_="spark",
            role="img",
            **{"aria-label": label},
        ),
        tags.div(class_="axis")(
            tags.span(class_="oldest")(f"{oldest:.0f} s ago"), tags.span("now")
        ),
    )


def _typed(text: str) -> bytes:
    """The bytes of text typed in a form: a browser sends every line break of a textarea
    as CR LF, so those are LF again (a file holding CRs is not offered for editing)."""
    return text.replace("\r\n", "\n").encode()


def _is_text(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def lock_summary(info: LockInfo) -> Tag:
    delay = info.lock_delay_remaining_ms
    rows = [
        ("Mode", info.mode),
        ("Lock generation", f"{info.lock_generation} (the sequencer a holder has names it)"),
        (
            "Lock-delay left",
            f"{delay / 1000:.1f} s: no one may take it until then" if delay else "none",
        ),
        ("Holders", str(info.holder_count)),
        ("Waiters", str(info.waiter_count)),
    ]
    facts = tags.dl(class_="facts", id="lock")(
        [
            [tags.dt(label), tags.dd(**{"data-field": label.lower().replace(" ", "_")})(value)]
            for label, value in rows
        ]
    )
    return tags.section(class_="card")(tags.h2("The lock"), facts)


def holders_table(info: LockInfo, chrome: Chrome) -> Tag:
    if not info.holders:
        return tags.p(class_="empty", id="holders")("No one holds it.")
    rows = [
        tags.tr(**{"data-session": str(holder.session_id)})(
            tags.td(tags.a(href=href("/sessions", id=holder.session_id))(str(holder.session_id))),
            tags.td(class_="wrap")(holder.client),
            tags.td(class_="wrap")(holder.principal),
            tags.td(tags.span(class_=f"mode {holder.mode}")(holder.mode)),
            tags.td(f"{holder.lock_delay_ms / 1000:g} s" if holder.lock_delay_ms else "none"),
            tags.td(
                tags.a(href=href("/end-session", id=holder.session_id), class_="danger")(
                    "End session…"
                )
                if chrome.operator
                else ""
            ),
        )
        for holder in info.holders
    ]
    headings = ("Session", "Client", "Principal", "Mode", "Lock-delay if lost", "")
    return grid(headings, rows, id="holders")


def waiters_table(info: LockInfo) -> Tag:
    if not info.waiters:
        return tags.p(class_="empty", id="waiters")("No one waits.")
    rows = [
        tags.tr(**{"data-session": str(waiter.session_id)})(
            tags.td(str(place)),
            tags.td(tags.a(href=href("/sessions", id=waiter.session_id))(str(waiter.session_id))),
            tags.td(class_="wrap")(waiter.client),
            tags.td(class_="wrap")(waiter.principal),
            tags.td(tags.span(class_=f"mode {waiter.mode}")(waiter.mode)),
            tags.td(f"{waiter.waited_ms / 1000:.1f} s"),
        )
        for place, waiter in enumerate(info.waiters, start=1)
    ]
    headings = ("#", "Session", "Client", "Principal", "Mode", "Waiting for")
    return grid(headings, rows, id="waiters")
