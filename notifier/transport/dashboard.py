"""The dashboard page at `/` and the scripts it loads.

An installed wheel carries the scripts in the package (`static/vendor/`, copied there by
setup.py's build step). A checkout serves them from where they are maintained: the npm
package in `node_modules` (scripts/setup.sh runs `npm ci`) and `client_examples/`.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from aiohttp import web

from ..errors import ErrorCode, NotifierError

_PACKAGE_STATIC = Path(__file__).resolve().parents[1] / "static"
_VENDORED = _PACKAGE_STATIC / "vendor"
_CHECKOUT = Path(__file__).resolve().parents[2]

_ASSETS = {
    "dashboard.js": [_PACKAGE_STATIC / "dashboard.js"],
    "notifier-inbox.js": [_PACKAGE_STATIC / "notifier-inbox.js"],
    "notifier-client.mjs": [
        _VENDORED / "notifier-client.mjs",
        _CHECKOUT / "client_examples" / "notifier-client.mjs",
    ],
    "socket.io.esm.min.js": [
        _VENDORED / "socket.io.esm.min.js",
        _CHECKOUT / "node_modules" / "socket.io-client" / "dist" / "socket.io.esm.min.js",
    ],
}

routes = web.RouteTableDef()


def _page_policy() -> str:
    """The dashboard's Content-Security-Policy: its own scripts and its one inline import map
    (by hash), connections to its own origin, and no framing."""
    page = (_PACKAGE_STATIC / "index.html").read_text()
    start = page.index('<script type="importmap">') + len('<script type="importmap">')
    import_map = page[start : page.index("</script>", start)]
    digest = base64.b64encode(hashlib.sha256(import_map.encode()).digest()).decode()
    return (
        f"default-src 'none'; script-src 'self' 'sha256-{digest}'; style-src 'self' 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )


_PAGE_HEADERS = {
    "Content-Security-Policy": _page_policy(),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


@routes.get("/")
async def dashboard(request: web.Request) -> web.FileResponse:
    return web.FileResponse(_PACKAGE_STATIC / "index.html", headers=_PAGE_HEADERS)


# The client for pages without an import map (`<notifier-inbox>` on any site): the same
# module, importing the socket.io client served beside it.
_STANDALONE = "notifier-client.standalone.mjs"
# Public code any page may load as a module (no credentials, nothing private in it).
_ASSET_HEADERS = {"X-Content-Type-Options": "nosniff", "Access-Control-Allow-Origin": "*"}


@routes.get("/static/{name}")
async def asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name == _STANDALONE:
        source = _find(_ASSETS["notifier-client.mjs"]).read_text()
        body = source.replace('from "socket.io-client";', 'from "./socket.io.esm.min.js";', 1)
        return web.Response(text=body, content_type="text/javascript", headers=_ASSET_HEADERS)
    places = _ASSETS.get(name)
    if places is None:
        raise NotifierError(ErrorCode.NOT_FOUND, "no such asset")
    response = web.FileResponse(_find(places), headers=_ASSET_HEADERS)
    response.content_type = "text/javascript"
    return response


def _find(places: list[Path]) -> Path:
    path = next((place for place in places if place.exists()), None)
    if path is None:
        raise NotifierError(
            ErrorCode.NOT_FOUND,
            f"{places[0].name} is missing: install the wheel, or run scripts/setup.sh (npm ci) in a checkout",
        )
    return path
