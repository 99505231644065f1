"""The dashboard page at `/` and the scripts it loads.

The socket.io client comes from the npm package in `node_modules` (installed by
scripts/setup.sh), and the client module from `client_examples/`: neither is copied into
the Python package, so each stays the one maintained copy.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from ..errors import ErrorCode, NotifierError

_PACKAGE_STATIC = Path(__file__).resolve().parents[1] / "static"
_CHECKOUT = Path(__file__).resolve().parents[2]

_ASSETS = {
    "dashboard.js": _PACKAGE_STATIC / "dashboard.js",
    "notifier-client.mjs": _CHECKOUT / "client_examples" / "notifier-client.mjs",
    "socket.io.esm.min.js":
        _CHECKOUT / "node_modules" / "socket.io-client" / "dist" / "socket.io.esm.min.js",
}

routes = web.RouteTableDef()


@routes.get("/")
async def dashboard(request: web.Request) -> web.FileResponse:
    return web.FileResponse(_PACKAGE_STATIC / "index.html")


@routes.get("/static/{name}")
async def asset(request: web.Request) -> web.StreamResponse:
    path = _ASSETS.get(request.match_info["name"])
    if path is None:
        raise NotifierError(ErrorCode.NOT_FOUND, "no such asset")
    if not path.exists():
        raise NotifierError(
            ErrorCode.NOT_FOUND, f"{path.name} is missing: run scripts/setup.sh (npm ci)"
        )
    response = web.FileResponse(path)
    response.content_type = "text/javascript"
    return response
