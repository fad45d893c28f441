"""The admin namespace browser: a web page that shows and runs a cell, live (issue 14).

Shell (STYLE §1, §6), on twisted.web. ``chubbypy web`` serves it; ``chubbypy cell`` starts
it beside the replicas and prints its URL. The page is a *client* of the cell, with no
rights of its own: each request acts as anonymous or as the principal a person logged in
as, through a client of the cell of that login's own, so the cell's ACLs decide what each
person sees and may change. Server-rendered pages (`chubbypy.web._pages`), a JSON API
under ``/api/`` (`chubbypy.web._api`, documented in ``docs/web-api.md``), live updates as
server-sent events fed by the cell's handle events (`chubbypy.web._live`), and the cell
page's charts from the replicas' admin ports (`chubbypy.web._cellstatus`). What guards
each request, in order, is in `chubbypy.web._app`; the HTTP edge's bounds in
`chubbypy.web._http`.
"""

from chubbypy.web._api import API_ROUTES
from chubbypy.web._pages import PAGE_ROUTES
from chubbypy.web._server import WebServer, web_main, web_parser, web_url

__all__ = ["API_ROUTES", "PAGE_ROUTES", "WebServer", "web_main", "web_parser", "web_url"]
