"""docs/web-api.md documents exactly the routes and error codes the web page has."""

from __future__ import annotations

import re
from pathlib import Path

from chubbypy.web import API_ROUTES, PAGE_ROUTES
from chubbypy.web._app import WEB_CODES

DOC = Path(__file__).resolve().parents[3] / "docs" / "web-api.md"


def test_every_api_route_is_documented_and_every_documented_one_exists() -> None:
    """The ``### METHOD /api/...`` headings are the API's routes, in the same order."""
    headings = re.findall(r"^### (GET|POST) (/api/\S+)$", DOC.read_text(), re.MULTILINE)
    assert headings == list(API_ROUTES)


def test_every_page_route_is_listed() -> None:
    """Each page route appears in the Pages section as ``METHOD /path``."""
    pages = DOC.read_text().split("## Pages", 1)[1]
    listed = set(re.findall(r"`(GET|POST) (/[a-z-]*)`", pages))
    assert listed >= set(PAGE_ROUTES)
    assert {path for _, path in listed} <= {path for _, path in PAGE_ROUTES} | {
        "/static/app.js",
        "/static/style.css",
    }


def test_every_error_code_of_the_page_is_explained() -> None:
    """The page's own error codes each have a row in the Errors table."""
    errors = DOC.read_text().split("## Errors", 1)[1].split("## Objects", 1)[0]
    for code in WEB_CODES:
        assert f"`{code}`" in errors, code
