"""The pages' HTML: a layout and the pieces every page shares, with twisted.web.template.

Shell (STYLE §1). Everything here is built as `twisted.web.template` tags, which escape
every text and attribute value when flattened: nothing from the cell (names, contents,
client names, principals, error messages) is ever written into HTML as markup. No inline
script or style either (the Content-Security-Policy forbids both): behaviour is in
``static/app.js`` and looks in ``static/style.css``; data the script needs travels in
``data-`` attributes and ``<meta>`` elements.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import urlencode

from twisted.web.template import Tag, flattenString, tags

from chubbypy.protocol.namespace import Stat

__all__ = [
    "Chrome",
    "badges",
    "breadcrumbs",
    "children_text",
    "csrf_field",
    "href",
    "kind_of",
    "notice",
    "render_page",
    "size_text",
]

DOCTYPE: Final = b"<!DOCTYPE html>\n"
NAV: Final = (
    ("tree", "/tree", "Tree"),
    ("sessions", "/sessions", "Sessions"),
    ("cell", "/cell", "Cell"),
)
"""The pages linked from every page's header; Sessions only for operators, who alone may
list them (ListSessions)."""


def href(page: str, **query: object) -> str:
    """A link to `page` with `query` (values None or "" left out)."""
    kept = {k: str(v) for k, v in query.items() if v is not None and v != ""}
    return f"{page}?{urlencode(kept)}" if kept else page


class Chrome:
    """What the layout needs of the request: who the visitor is, their CSRF token, the cell."""

    def __init__(
        self,
        *,
        cell: str,
        principal: str,
        logged_in: bool,
        csrf: str,
        watch_max: int = 64,
        operator: bool = False,
        here: str = "",
    ) -> None:
        self.cell = cell
        self.principal = principal
        self.logged_in = logged_in
        self.csrf = csrf
        self.watch_max = watch_max
        """web.watched_paths_per_stream_max: the script watches no more nodes than this."""
        self.here = here
        """The page's own path and query (where "Log in" comes back to)."""
        self.operator = operator
        """Whether the ACL ``admin`` admits the visitor, so the page offers what only
        operators may do (end a session); the cell decides each call all the same."""


def csrf_field(chrome: Chrome) -> Tag:
    return tags.input(type="hidden", name="csrf", value=chrome.csrf)


def _who(chrome: Chrome) -> Tag:
    if chrome.logged_in:
        logout = tags.form(method="post", action="/logout", class_="inline")(
            csrf_field(chrome), tags.button(type="submit", class_="link")("Log out")
        )
        return tags.div(class_="who")(
            "logged in as ", tags.b(id="principal")(chrome.principal), " ", logout
        )
    back = local_page(chrome.here)
    login = href("/login", next=back if back not in (None, "/login") else None)
    return tags.div(class_="who")(
        "browsing as ", tags.b(id="principal")("anonymous"), " · ", tags.a(href=login)("Log in")
    )


def local_page(target: str | None) -> str | None:
    """`target` if it is a page of this site to go back to (a path and query: no scheme,
    no host, no ``//`` or backslash a browser would read as another site), else None."""
    if not target or len(target) > 2000 or not target.isascii() or not target.startswith("/"):
        return None
    if target.startswith(("//", "/\\")) or "\\" in target or any(c < " " for c in target):
        return None
    return target


def render_page(
    chrome: Chrome,
    *,
    title: str,
    active: str,
    body: list[Any],
    watch: Sequence[str] = (),
    page: str = "",
    status: int = 200,
) -> Any:
    """The bytes (a Deferred) of a whole page: the layout around `body`. `watch` are the
    nodes whose changes the page wants to hear of live; `page` names it for the script."""
    nav = tags.nav(class_="main")(
        [
            tags.a(href=link, class_="active" if key == active else "")(label)
            for key, link, label in NAV
            if key != "sessions" or chrome.operator or active == "sessions"
        ]
    )
    header = tags.header(class_="top")(
        tags.a(href="/tree", class_="brand")("chubbypy"),
        tags.span(class_="cell")("cell ", tags.b(chrome.cell)),
        nav,
        _who(chrome),
    )
    document = tags.html(lang="en")(
        tags.head(
            tags.meta(charset="utf-8"),
            tags.meta(name="viewport", content="width=device-width, initial-scale=1"),
            tags.meta(name="csrf-token", content=chrome.csrf),
            tags.meta(name="watch-max", content=str(chrome.watch_max)),
            tags.title(f"{title} · chubbypy {chrome.cell}"),
            tags.link(rel="stylesheet", href="/static/style.css"),
            tags.link(rel="icon", href="/static/favicon.svg", type="image/svg+xml"),
            tags.script(src="/static/app.js", defer="defer"),
        ),
        tags.body(
            **{
                "data-page": page or active,
                "data-watch": json.dumps(list(watch)),
                "data-operator": "1" if chrome.operator else "",
            }
        )(
            header,
            tags.div(id="banner", class_="banner", hidden="hidden"),
            Tag("main")(list(body)),  # HTML5; twisted.web.template knows no <main>
            tags.footer(
                tags.span(id="live", class_="live off")("live updates need scripts"),
                " · a client of the cell: what you see and may change is what the cell's "
                "ACLs give ",
                chrome.principal,
            ),
        ),
    )
    flattened = flattenString(None, document)
    flattened.addCallback(lambda html: DOCTYPE + html)
    return flattened


def breadcrumbs(path: str, *, last_is_link: bool = False) -> Tag:
    """``/ls / cell / a / b``, each part a link to its tree page."""
    parts = path.strip("/").split("/")
    items: list[Any] = []
    for depth in range(1, len(parts) + 1):
        prefix = "/" + "/".join(parts[:depth])
        label = parts[depth - 1]
        if depth == 1:
            items.append(tags.span(class_="crumb")("/" + label))
            continue
        items.append(tags.span(class_="sep")(" / "))
        if depth == len(parts) and not last_is_link:
            items.append(tags.span(class_="crumb current")(label))
        else:
            items.append(tags.a(class_="crumb", href=href("/tree", path=prefix))(label))
    return tags.nav(class_="crumbs", **{"aria-label": "path"})(items)


def notice(kind: str, *parts: Any) -> Tag:
    """A message box: kind ``ok``, ``warn`` or ``error``."""
    return tags.div(class_=f"notice {kind}", role="alert" if kind == "error" else "status")(*parts)


def size_text(count: int, unit: str = "byte") -> str:
    return f"{count:,} {unit}{'' if count == 1 else 's'}"


def children_text(count: int) -> str:
    return f"{count:,} child{'' if count == 1 else 'ren'}"


def kind_of(stat: Stat | None) -> str:
    if stat is None:
        return "hidden"
    return "directory" if stat.is_directory else "file"


def badges(stat: Stat | None, *, lock_mode: str = "free") -> list[Tag]:
    """Small marks after a name: ephemeral, locked (and how), hidden metadata."""
    marks = []
    if stat is None:
        marks.append(
            tags.span(class_="badge muted", title="you may not read this node")("no read access")
        )
        return marks
    if stat.ephemeral:
        marks.append(
            tags.span(class_="badge eph", title="deleted when its session ends")("ephemeral")
        )
    if lock_mode != "free":
        title = f"its lock is held ({lock_mode})"
        marks.append(tags.span(class_="badge lock", title=title)(f"locked · {lock_mode}"))
    return marks


def grid(headings: Sequence[str], rows: list[Tag], *, classes: str = "", **attributes: str) -> Tag:
    """A table of the page's one kind: a header row of `headings`, then `rows`."""
    head = tags.thead(tags.tr([tags.th(heading) for heading in headings]))
    return tags.table(class_=f"grid {classes}".strip(), **attributes)(head, tags.tbody(rows))
