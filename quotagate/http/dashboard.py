"""The dashboard page at ``/dashboard``: static files shipped in the package (no CDN; it works offline).

The page itself needs no credential; it calls the API with the admin token or gateway key the user signs
in with, sent only in the ``Authorization`` header. The content security policy keeps every script, style
and request on this origin.
"""

from __future__ import annotations

import functools
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response

from quotagate.http.errors import ApiError
from quotagate.http.models import PathRef
from quotagate.http.routing import JsonBodyRoute

router = APIRouter(route_class=JsonBodyRoute, include_in_schema=False)

ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    "format.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    # The token may sit in the address bar's fragment for a moment; nothing of the URL leaves with a link.
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    # Revalidate so an upgraded gateway serves its new page at once.
    "Cache-Control": "no-cache",
}


@functools.cache
def _read(name: str) -> bytes:
    return (resources.files("quotagate.http") / "static" / "dashboard" / name).read_bytes()


def _asset(name: str) -> Response:
    return Response(_read(name), media_type=ASSETS[name], headers=HEADERS)


@router.get("/dashboard")
@router.get("/dashboard/")
async def page() -> Response:
    return _asset("index.html")


@router.get("/dashboard/assets/{name}")
async def asset(name: PathRef) -> Response:
    if name not in ASSETS or name == "index.html":
        raise ApiError(404, "not_found", "No such dashboard file.")
    return _asset(name)
